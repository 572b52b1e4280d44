"""Learning and speed checks of the agents (helper "agents"); results in benchmarks/results/.

    python -m benchmarks.agent_checks [--only CHECK ...]

- sac_pendulum: online SAC on Pendulum-v1, 20k steps; target: eval return >= -200.
- sac_hopper: online SAC on Hopper-v5, 100k steps (stops at --hopper-stop); target: >= 1000.
- iql_pendulum, calql_pendulum: a medium Pendulum dataset from our own SAC (stopped at about
  half the expert's normalised return, rolled out stochastically), then IQL (30k updates) or
  Cal-QL (5k updates: its 3n extra critic evaluations make an update ~30x SAC's on CPU)
  offline on it; target: the final evaluation beats the dataset's average return.
- throughput: updates/s for 1 and 8 vmapped seeds, batch 256, 256x2 networks.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

RESULTS = Path(__file__).parent / "results"
CHECKS = ("sac_pendulum", "sac_hopper", "iql_pendulum", "calql_pendulum", "throughput")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=CHECKS, default=list(CHECKS))
    parser.add_argument("--hopper-steps", type=int, default=100_000)
    parser.add_argument("--hopper-stop", type=float, default=1000.0)
    parser.add_argument(
        "--hopper-critic-lr", type=float, default=None, help="SAC critic lr (default: SACConfig's)"
    )
    parser.add_argument("--offline-updates", type=int, default=30_000)
    parser.add_argument("--calql-updates", type=int, default=5_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    for name in args.only:
        start, load_before = time.time(), os.getloadavg()[0]
        result = CHECK_FNS[name](args)
        result.update(check=name, wall_s=round(time.time() - start, 1), device=_device())
        # The CPU may be shared: the load average says how busy it was (2 cores here).
        result.update(load_avg_1m=[load_before, os.getloadavg()[0]], cpu_count=os.cpu_count())
        path = RESULTS / f"agents_{name}_seed{args.seed}.json"
        path.write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(result, indent=2))
        print(f"-> {path}")


# ---------------------------------------------------------------------------- online SAC


def sac_pendulum(args) -> dict:
    from edis_jax.config.agent_configs import SACConfig
    from edis_jax.datagen.behaviour import train_sac_online

    # 1000 random steps (5 episodes) instead of 5000: the 20k-step budget is short.
    run = train_sac_online(
        "Pendulum-v1",
        20_000,
        seed=args.seed,
        config=SACConfig(start_steps=1000),
        eval_every=2000,
        eval_episodes=10,
    )
    best = max(r for _, r in run.evals)
    return {
        "target": ">= -200 within 20k steps",
        "evals": run.evals,
        "best_eval": best,
        "passed": best >= -200,
    }


def sac_hopper(args) -> dict:
    from edis_jax.config.agent_configs import SACConfig
    from edis_jax.datagen.behaviour import train_sac_online
    from edis_jax.datagen.selection import reaches

    config = SACConfig()
    if args.hopper_critic_lr is not None:
        config = dataclasses.replace(config, critic_lr=args.hopper_critic_lr)
    start = time.time()
    run = train_sac_online(
        "Hopper-v5",
        args.hopper_steps,
        seed=args.seed,
        config=config,
        eval_every=5000,
        eval_episodes=5,
        stop_when=reaches(args.hopper_stop),
    )
    best = max(r for _, r in run.evals)
    return {
        "target": f">= 1000 within {args.hopper_steps} steps",
        "critic_lr": config.critic_lr,
        "evals": run.evals,
        "steps": run.steps,
        "best_eval": best,
        "env_steps_per_s": round(run.steps / (time.time() - start), 1),
        "passed": best >= 1000,
    }


# ------------------------------------------------------------------------ offline agents


def iql_pendulum(args) -> dict:
    from edis_jax.config.agent_configs import IQLConfig

    data, returns, out = _medium_pendulum(args)
    # CORL rescales MuJoCo rewards by 1000 / (max return - min return), 1000 being the episode
    # length: returns then span one unit per step. Pendulum's episodes are 200 steps, hence 200.
    # (With 1000 the advantages are 5x larger, an effective beta of 15: measured -860 at 30k.)
    scale = 200.0 / float(np.max(returns) - np.min(returns))
    out["reward_scale"] = scale
    out["iql"] = _train_offline("iql", IQLConfig(), args.offline_updates, data, args, scale)
    out["passed"] = out["iql"]["final_eval"] > out["dataset_mean_return"]
    return out


def calql_pendulum(args) -> dict:
    from edis_jax.config.agent_configs import CalQLConfig

    data, _, out = _medium_pendulum(args)
    out["calql"] = _train_offline("calql", CalQLConfig(), args.calql_updates, data, args, 1.0)
    out["passed"] = out["calql"]["final_eval"] > out["dataset_mean_return"]
    return out


def _medium_pendulum(args):
    """A medium Pendulum dataset: (Transition, episode returns, description)."""
    from edis_jax.config.agent_configs import SACConfig
    from edis_jax.datagen.behaviour import train_sac_online
    from edis_jax.datagen.selection import reaches

    # Pendulum-v1 reference returns: random policy about -1250, expert SAC about -130. SAC learns
    # Pendulum abruptly (-900 to -130 within 1000 steps), so evaluate every 250 steps and stop at
    # the first policy above -800; its stochastic rollouts average about -760, i.e. roughly 45%
    # of the way from random to expert: a "medium" dataset. Deterministic given the seed.
    behaviour = train_sac_online(
        "Pendulum-v1",
        20_000,
        seed=args.seed,
        config=SACConfig(start_steps=1000),
        eval_every=250,
        eval_episodes=5,
        stop_when=reaches(-800.0),
        progress=False,
    )
    data, returns = _rollout_dataset(behaviour.agent, "Pendulum-v1", 50, args.seed)
    out = {
        "behaviour_evals": behaviour.evals,
        "dataset_transitions": len(data),
        "dataset_mean_return": float(np.mean(returns)),
        "dataset_std_return": float(np.std(returns)),
        "dataset_best_return": float(np.max(returns)),
    }
    return data, returns, out


def _train_offline(algo: str, config, updates: int, data, args, reward_scale: float) -> dict:
    """Offline training on `data` in chunks of 1000 updates, 5 evaluations along the way."""
    from edis_jax import agents
    from edis_jax.data import buffer
    from edis_jax.data.normalizer import Normalizer

    key = jax.random.PRNGKey(args.seed + 1)
    agent = agents.create(
        algo,
        key,
        data.obs_dim,
        data.act_dim,
        config,
        obs_norm=Normalizer.fit(data.obs),  # CORL normalises states with the dataset's stats
        reward_scale=reward_scale,
        offline_steps=updates,
    )
    mixture = buffer.Mixture.of(buffer.from_transitions(data))
    chunk = jax.jit(agents.update_chunk, static_argnums=(3, 4))
    start, curve = time.time(), []
    chunks = updates // 1000
    for i in range(chunks):
        agent, metrics = chunk(agent, mixture, jax.random.fold_in(key, i), 1000, 256)
        if (i + 1) % max(1, chunks // 5) == 0 or i + 1 == chunks:
            curve.append(((i + 1) * 1000, _eval(agent, "Pendulum-v1", args.seed)))
            print(curve[-1], {k: round(float(v), 3) for k, v in metrics.items()})
    return {
        "updates": updates,
        "curve": curve,
        "final_eval": curve[-1][1],
        "update_s": round(time.time() - start, 1),
        "final_metrics": {k: float(v) for k, v in metrics.items()},
    }


def _rollout_dataset(agent, env_id: str, episodes: int, seed: int):
    """Stochastic rollouts of a SAC agent as a Transition with MC returns-to-go (gamma 0.99)."""
    from edis_jax.data.returns import returns_to_go
    from edis_jax.data.transition import Transition
    from edis_jax.envs import make_env
    from edis_jax.train.env_step import act

    env = make_env(env_id, seed + 20_000, unit_actions=True)
    key = jax.random.PRNGKey(seed + 20_000)
    rows, returns = {k: [] for k in ("obs", "act", "rew", "next", "term", "trunc")}, []
    for _ in range(episodes):
        obs, _ = env.reset()
        done, total = False, 0.0
        while not done:
            key, k = jax.random.split(key)
            action = np.asarray(act(agent, k, jnp.asarray(obs, jnp.float32)))
            next_obs, reward, term, trunc, _ = env.step(action)
            for name, value in zip(rows, (obs, action, reward, next_obs, term, trunc), strict=True):
                rows[name].append(value)
            total += float(reward)
            obs, done = next_obs, term or trunc
        returns.append(total)
    env.close()
    mc = returns_to_go(rows["rew"], rows["term"], rows["trunc"], 0.99)
    data = Transition.from_arrays(
        np.stack(rows["obs"]),
        np.stack(rows["act"]),
        np.asarray(rows["rew"]),
        np.stack(rows["next"]),
        np.asarray(rows["term"]),
        mc,
    )
    return data, np.asarray(returns)


def _eval(agent, env_id: str, seed: int, episodes: int = 10) -> float:
    """Mean return of the deterministic policy over `episodes` parallel episodes."""
    from edis_jax.envs import ActionScale, evaluate
    from edis_jax.train.env_step import act

    to_env = ActionScale(env_id).to_env_float64

    def policy(obs):
        unit = act(agent, None, jnp.asarray(obs, jnp.float32), deterministic=True)
        return to_env(np.asarray(unit))

    return float(np.mean(evaluate(policy, env_id, episodes, 1, seed + 30_000)))


# ---------------------------------------------------------------------------- throughput


def throughput(args) -> dict:
    """Updates per second of update_chunk (100 updates per call), Hopper-sized data."""
    from edis_jax import agents
    from edis_jax.config.agent_configs import CalQLConfig, IQLConfig, SACConfig
    from edis_jax.data import buffer
    from edis_jax.data.transition import Transition

    obs_dim, act_dim, n, chunk_len = 11, 3, 10_000, 100
    keys = jax.random.split(jax.random.PRNGKey(0), 4)
    data = Transition.from_arrays(
        jax.random.normal(keys[0], (n, obs_dim)),
        jax.random.uniform(keys[1], (n, act_dim), minval=-1, maxval=1),
        jax.random.normal(keys[2], (n,)),
        jax.random.normal(keys[3], (n, obs_dim)),
        jnp.zeros(n),
    )
    mixture = buffer.Mixture.of(buffer.from_transitions(data))
    rows = {}
    for algo, config in (("iql", IQLConfig()), ("sac", SACConfig()), ("calql", CalQLConfig())):
        for seeds in (1, 8):
            seed_keys = jax.random.split(jax.random.PRNGKey(1), seeds)
            agent = jax.vmap(lambda k, a=algo, c=config: agents.create(a, k, obs_dim, act_dim, c))(
                seed_keys
            )
            mixtures = jax.tree.map(lambda x, s=seeds: jnp.broadcast_to(x, (s, *x.shape)), mixture)
            step = jax.jit(jax.vmap(lambda a, m, k: agents.update_chunk(a, m, k, chunk_len, 256)))
            agent, _ = jax.block_until_ready(step(agent, mixtures, seed_keys))  # compile
            repeats = 3 if algo != "calql" else 1
            start = time.perf_counter()
            for _ in range(repeats):
                agent, _ = step(agent, mixtures, seed_keys)
            jax.block_until_ready(agent)
            seconds = (time.perf_counter() - start) / repeats
            rows[f"{algo}/{seeds}_seeds"] = {
                "updates_per_s": round(chunk_len / seconds, 1),  # vmapped steps per second
                "seed_updates_per_s": round(seeds * chunk_len / seconds, 1),
                "ms_per_update": round(1000 * seconds / chunk_len, 2),
            }
            print(algo, seeds, rows[f"{algo}/{seeds}_seeds"])
    return {"batch_size": 256, "hidden": [256, 256], "obs_dim": obs_dim, "rows": rows}


def _device() -> str:
    dev = jax.devices()[0]
    return f"{dev.platform}:{dev.device_kind} ({platform.processor() or platform.machine()})"


CHECK_FNS = {
    "sac_pendulum": sac_pendulum,
    "sac_hopper": sac_hopper,
    "iql_pendulum": iql_pendulum,
    "calql_pendulum": calql_pendulum,
    "throughput": throughput,
}

if __name__ == "__main__":
    main()

"""The JAX-native envs against gymnasium's: fidelity step by step, in the precision this process
runs (64-bit under JAX_ENABLE_X64=1), and speed.

    python -m benchmarks.jax_envs [--envs Hopper-v5 ...] [--transitions 1000] [--counts 1 8 32]

writes benchmarks/results/jax_envs_<device>.json and .md:
- fidelity, per env and precision (64-bit rows from a child process with JAX_ENABLE_X64=1):
  each transition starts from gymnasium's own state (`JaxEnv.state_from`) and takes gymnasium's
  action; the next observation's error relative to max(1, |value|) (max over its dims), the
  reward's, and how often terminated / truncated differ. Half the actions are uniform over 1.2x
  the action box (MuJoCo clamps the excess; the control cost does not), half come from a fixed
  linear policy (`fixed_policy`);
- a fixed policy's mean return over 20 episodes, gymnasium against the JAX env;
- env steps per second for 1 / 8 / 32 envs: the JAX env's vmapped step with autoreset inside one
  compiled scan against gymnasium's vector env with the same count (random actions on both);
- the simulator relabelling of 20k rows (the oracle arm's work): the JAX env vmapped over rows
  against the MuJoCo loop (envs.simulators.mujoco_step).
The tests (tests/test_jax_envs.py) check the fidelity targets with these same functions.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import harness
from edis_jax.envs import make_env, make_vector_env, simulators
from edis_jax.envs.jax_env import (
    JAX_ENV_IDS,
    MJX_ENV_IDS,
    PLAIN_JAX_ENV_IDS,
    JaxEnv,
    batched_step,
    has_jax_env,
    make_jax_env,
    step_autoreset,
)

PARTS = ("fidelity", "speed", "relabel")
# The compiled vmapped step takes this many rows at a time, so the fidelity check and the
# 20-episode returns share one compile.
BATCH = 20


def fixed_policy(obs_dim: int, high: np.ndarray, seed: int = 1):
    """A deterministic policy, the same for both envs: tanh of a fixed random linear map of the
    observation, scaled to the action box."""
    rng = np.random.default_rng(seed)
    weights = rng.normal(0.0, 1.0 / np.sqrt(obs_dim), (obs_dim, len(high)))
    bias = rng.normal(0.0, 0.3, len(high))
    return lambda obs: (np.tanh(np.asarray(obs) @ weights + bias) * high).astype(np.float32)


@dataclasses.dataclass
class Fidelity:
    """Per transition: next-observation error (relative to max(1, |gym|), max over dims), reward
    error (same), and whether terminated / truncated differ; with gymnasium's own flags."""

    obs_error: np.ndarray
    reward_error: np.ndarray
    terminated_differs: np.ndarray
    truncated_differs: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray

    def summary(self) -> dict:
        def stats(x):
            return {
                "max": float(x.max()),
                "p99": float(np.percentile(x, 99)),
                "median": float(np.median(x)),
            }

        return {
            "transitions": len(self.obs_error),
            "obs_error": stats(self.obs_error),
            "reward_error": stats(self.reward_error),
            "terminated_differs": int(self.terminated_differs.sum()),
            "truncated_differs": int(self.truncated_differs.sum()),
            "terminated": int(self.terminated.sum()),
            "truncated": int(self.truncated.sum()),
        }


def step_fidelity(env: JaxEnv, step, transitions: int = 1000, seed: int = 0) -> Fidelity:
    """`transitions` gymnasium steps (episode ends included, the env reset after each), each
    replayed by the JAX env from gymnasium's state before it (module docstring)."""
    gym_env = make_env(env.env_id)
    high = gym_env.action_space.high.astype(np.float32)
    policy = fixed_policy(env.obs_dim, high, seed + 1)
    rng = np.random.default_rng(seed)
    obs, _ = gym_env.reset(seed=seed)
    states, actions, outcomes = [], [], []
    for t in range(transitions):
        if t < transitions // 2:
            action = (rng.uniform(-1.2, 1.2, high.shape) * high).astype(np.float32)
        else:
            action = policy(obs)
        states.append(env.state_from(gym_env))
        actions.append(action)
        obs, reward, terminated, truncated, _ = gym_env.step(action)
        outcomes.append((obs, reward, terminated, truncated))
        if terminated or truncated:
            obs, _ = gym_env.reset()
    gym_env.close()
    results = []
    for start in range(0, transitions, BATCH):
        rows = _padded(range(start, min(start + BATCH, transitions)))
        batch = jax.tree.map(lambda *leaves: np.stack(leaves), *(states[i] for i in rows))
        _, *out = step(batch, np.stack([actions[i] for i in rows]))
        results.append([np.asarray(x)[: min(BATCH, transitions - start)] for x in out])
    j_obs, j_reward, j_term, j_trunc = (
        np.concatenate(parts) for parts in zip(*results, strict=True)
    )
    g_obs = np.stack([o[0] for o in outcomes])
    g_reward, g_term, g_trunc = (np.array([o[k] for o in outcomes]) for k in (1, 2, 3))
    return Fidelity(
        obs_error=(np.abs(j_obs - g_obs) / np.maximum(1.0, np.abs(g_obs))).max(-1),
        reward_error=np.abs(j_reward - g_reward) / np.maximum(1.0, np.abs(g_reward)),
        terminated_differs=j_term != g_term,
        truncated_differs=j_trunc != g_trunc,
        terminated=g_term,
        truncated=g_trunc,
    )


def task_code_errors(env_id: str, transitions: int = 1000, seed: int = 0) -> dict:
    """The MJX envs' task code (observation, reward terms, health) applied to MuJoCo C's own
    state after each gymnasium step (mjx_locomotion.outcome), against what gymnasium returned:
    max errors relative to max(1, |value|) and how often terminated differs. This checks every
    constant of the task without MJX's physics, so it holds even where the physics does not
    match (Ant-v5)."""
    from edis_jax.envs import mjx_locomotion

    env = make_jax_env(env_id)
    task = mjx_locomotion.TASKS[env_id]
    gym_env = make_env(env_id)
    dt = gym_env.unwrapped.dt
    outcome = jax.jit(
        lambda data, before, action: mjx_locomotion.outcome(task, data, before, action, dt)
    )
    rng = np.random.default_rng(seed)
    high = gym_env.action_space.high.astype(np.float32)
    gym_env.reset(seed=seed)
    obs_error, reward_error, term_differs = [], [], 0
    for _ in range(transitions):
        action = (rng.uniform(-1.2, 1.2, high.shape) * high).astype(np.float32)
        before = mjx_locomotion.forward_position(task, env.state_from(gym_env).physics)
        obs, reward, terminated, truncated, _ = gym_env.step(action)
        j_obs, j_reward, j_term = outcome(env.state_from(gym_env).physics, before, action)
        obs_error.append((np.abs(np.asarray(j_obs) - obs) / np.maximum(1.0, np.abs(obs))).max())
        reward_error.append(abs(float(j_reward) - reward) / max(1.0, abs(reward)))
        term_differs += bool(j_term) != terminated
        if terminated or truncated:
            gym_env.reset()
    gym_env.close()
    return {
        "obs_error_max": float(max(obs_error)),
        "reward_error_max": float(max(reward_error)),
        "terminated_differs": term_differs,
    }


def mean_returns(env: JaxEnv, step, episodes: int = BATCH, seed: int = 0):
    """A fixed policy's returns over `episodes` episodes: (gymnasium's, the JAX env's)."""
    gym_env = make_env(env.env_id)
    high = gym_env.action_space.high.astype(np.float32)
    policy = fixed_policy(env.obs_dim, high)
    gym_returns = []
    for episode in range(episodes):
        obs, _ = gym_env.reset(seed=seed + episode)
        total, ended = 0.0, False
        while not ended:
            obs, reward, terminated, truncated, _ = gym_env.step(policy(obs))
            total, ended = total + reward, terminated or truncated
        gym_returns.append(total)
    gym_env.close()
    keys = jax.random.split(jax.random.PRNGKey(seed), episodes)
    state, obs = jax.jit(jax.vmap(env.reset))(keys)
    jax_returns = np.zeros(episodes)
    running = np.ones(episodes, bool)
    while running.any():
        state, obs, reward, terminated, truncated = step(state, policy(obs))
        jax_returns += np.where(running, np.asarray(reward), 0.0)
        running &= ~(np.asarray(terminated) | np.asarray(truncated))
    return np.array(gym_returns), jax_returns


def reset_observations(env: JaxEnv, count: int = 200, seed: int = 0):
    """`count` first observations of each: (gymnasium's, the JAX env's)."""
    gym_env = make_env(env.env_id)
    gym_obs = np.stack([gym_env.reset(seed=seed + i)[0] for i in range(count)])
    gym_env.close()
    keys = jax.random.split(jax.random.PRNGKey(seed), count)
    _, jax_obs = jax.jit(jax.vmap(env.reset))(keys)
    return gym_obs, np.asarray(jax_obs)


# ------------------------------------------------------------------------------------- speed


def jax_steps_per_s(env: JaxEnv, num_envs: int, steps: int = 200, seed: int = 0) -> dict:
    """Env steps per second (all envs counted) of `steps` vmapped steps with autoreset and
    random actions in one compiled scan, and its first compile in seconds."""
    high = jnp.asarray(make_env(env.env_id).action_space.high)

    @jax.jit
    def rollout(state, key):
        def body(state, key):
            action = jax.random.uniform(key, (num_envs, env.action_dim), minval=-1.0) * high
            state, *_ = jax.vmap(lambda s, a: step_autoreset(env, s, a))(state, action)
            return state, None

        return jax.lax.scan(body, state, jax.random.split(key, steps))[0]

    state, _ = jax.vmap(env.reset)(jax.random.split(jax.random.PRNGKey(seed), num_envs))
    key = jax.random.PRNGKey(seed + 1)
    start = time.perf_counter()
    jax.block_until_ready(rollout(state, key))
    compile_s = time.perf_counter() - start
    ms = harness.time_ms(lambda: jax.block_until_ready(rollout(state, key)), warmup=0)
    return {"steps_per_s": num_envs * steps / (ms / 1e3), "first_call_s": compile_s}


def speed_row(env: JaxEnv, count: int) -> dict:
    found = jax_steps_per_s(env, count)
    return {
        "jax_steps_per_s": found["steps_per_s"],
        "gym_steps_per_s": gym_steps_per_s(env.env_id, count),
        "jax_first_call_s": found["first_call_s"],
    }


def gym_steps_per_s(env_id: str, num_envs: int, steps: int = 200, seed: int = 0) -> float:
    vector_env = make_vector_env(env_id, num_envs)
    vector_env.reset(seed=seed)
    vector_env.action_space.seed(seed)
    actions = [vector_env.action_space.sample() for _ in range(steps)]

    def run():
        for action in actions:
            vector_env.step(action)

    ms = harness.time_ms(run)
    vector_env.close()
    return num_envs * steps / (ms / 1e3)


def relabel_ms(env: JaxEnv, rows: int = 20_000, seed: int = 0) -> dict:
    """The simulator set to `rows` observations and stepped once, as the oracle arm relabels a
    synthetic buffer: envs.simulators.jax_env_step (the JAX env vmapped over rows) against
    mujoco_step (the MuJoCo loop), in ms; with the JAX path's first call (its compile)."""
    gym_env = make_env(env.env_id)
    obs0, _ = gym_env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    obs = obs0 + rng.normal(0.0, 0.1, (rows, len(obs0)))
    action = rng.uniform(-1.0, 1.0, (rows, env.action_dim)).astype(np.float32)
    gym_env.close()
    start = time.perf_counter()
    simulators.jax_env_step(env.env_id, obs[:1], action[:1])
    compile_s = time.perf_counter() - start
    jax_ms = harness.time_ms(lambda: simulators.jax_env_step(env.env_id, obs, action), warmup=0)
    mujoco = harness.time_ms(
        lambda: simulators.mujoco_step(env.env_id, obs, action), warmup=0, repeats=1
    )
    return {"rows": rows, "jax_ms": jax_ms, "mujoco_loop_ms": mujoco, "first_call_s": compile_s}


# -------------------------------------------------------------------------------------- main


def fidelity_rows(env_ids, transitions: int, *, returns: bool = True, physics: bool = True):
    """Per env, in this process's precision: the task code on MuJoCo C's states (MJX envs), and
    with `physics` the whole step (`step_fidelity`) and with `returns` the 20-episode returns."""
    rows = []
    for env_id in env_ids:
        row = {"env": env_id, "precision": str(jnp.zeros(()).dtype)}
        if env_id in MJX_ENV_IDS:
            row["task_code"] = task_code_errors(env_id, transitions)
        if physics or returns:
            env, step = batched_step(env_id)
        if physics:
            row.update(step_fidelity(env, step, transitions).summary())
        if returns:
            gym_returns, jax_returns = mean_returns(env, step)
            row.update(gym_return=_mean_ci(gym_returns), jax_return=_mean_ci(jax_returns))
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", nargs="+", default=list(JAX_ENV_IDS))
    parser.add_argument("--transitions", type=int, default=1000)
    parser.add_argument("--counts", type=int, nargs="+", default=[1, 8, 32])
    # 20k rows (the oracle arm's buffer) in 1024-row calls did not return on this CPU (threads idle
    # in XLA); 4000 rows did.
    parser.add_argument("--relabel-rows", type=int, default=4000)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument(
        "--parts",
        nargs="+",
        choices=PARTS,
        default=list(PARTS),
        help="run only these parts; the others are kept from the existing results file",
    )
    # The child that runs in 64-bit (and the tests' 64-bit check) prints the fidelity rows only.
    parser.add_argument("--fidelity-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--no-returns", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--task-code-only", nargs="*", default=[], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.fidelity_only:
        rows = fidelity_rows(args.envs, args.transitions, returns=not args.no_returns)
        rows += fidelity_rows(args.task_code_only, args.transitions, returns=False, physics=False)
        print(json.dumps(rows))
        return
    stem = args.out / f"jax_envs_{harness.device_name()}"
    json_path = Path(f"{stem}.json")
    record = json.loads(json_path.read_text()) if json_path.exists() else {}
    loads = record.get("load_average")
    loads = loads if isinstance(loads, dict) else {"all parts": loads[0]} if loads else {}

    def save(part: str) -> None:
        # After each part, so that a later part that fails or hangs keeps the earlier ones.
        loads[part] = os.getloadavg()[0]
        record.update(
            device=harness.device_description(), jax_version=jax.__version__, load_average=loads
        )
        args.out.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(record, indent=2) + "\n")
        Path(f"{stem}.md").write_text(markdown(record))

    if "fidelity" in args.parts:
        child = subprocess.run(
            [sys.executable, "-m", "benchmarks.jax_envs", "--fidelity-only", "--envs", *args.envs,
             "--transitions", str(args.transitions)],
            env={**os.environ, "JAX_ENABLE_X64": "1"}, capture_output=True, text=True, check=True,
        )  # fmt: skip
        fidelity = json.loads(child.stdout.strip().splitlines()[-1])
        record["fidelity"] = fidelity + fidelity_rows(args.envs, args.transitions)
        save("fidelity")
    if "speed" in args.parts:
        record["speed"] = [
            {"env": env_id, "envs": count, **speed_row(make_jax_env(env_id), count)}
            for env_id in args.envs
            for count in args.counts
        ]
        save("speed")
    if "relabel" in args.parts:
        record["relabel"] = [
            {"env": env_id, **relabel_ms(make_jax_env(env_id), args.relabel_rows)}
            for env_id in args.envs
            if has_jax_env(env_id) and env_id not in PLAIN_JAX_ENV_IDS
        ]
        save("relabel")
    print(markdown(record))


def markdown(record: dict) -> str:
    lines = [
        f"## JAX-native envs against gymnasium on {record['device']}",
        "",
        f"JAX {record['jax_version']}; 1-minute load average after each part: "
        + ", ".join(f"{k} {v:.1f}" for k, v in record["load_average"].items())
        + " (2 cores).",
        "",
        "### Fidelity: one step from gymnasium's state (errors relative to max(1, |value|))",
        "",
        "1000 transitions per env and precision; 'task code alone' applies the observation, reward "
        "and termination code to MuJoCo C's own state after each step, without MJX's physics.",
        "",
        "| env | precision | obs max | obs p99 | obs median | reward max | reward p99 | flags "
        "differ (term / trunc) | gym term / trunc | return gym | return JAX | task code alone: "
        "obs / reward max |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in record.get("fidelity", []):
        o, w = r["obs_error"], r["reward_error"]
        cells = [
            r["env"], r["precision"], f"{o['max']:.1e}", f"{o['p99']:.1e}", f"{o['median']:.1e}",
            f"{w['max']:.1e}", f"{w['p99']:.1e}",
            f"{r['terminated_differs']} / {r['truncated_differs']}",
            f"{r['terminated']} / {r['truncated']}", _fmt_ci(r["gym_return"]),
            _fmt_ci(r["jax_return"]), _fmt_task_code(r.get("task_code")),
        ]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "### Env steps per second (all envs counted; random actions, autoreset)",
        "",
        "| env | envs | JAX env (one compiled scan) | gymnasium vector env | JAX / gym | "
        "JAX first call (s) |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in record.get("speed", []):
        ratio = r["jax_steps_per_s"] / r["gym_steps_per_s"]
        lines.append(
            f"| {r['env']} | {r['envs']} | {r['jax_steps_per_s']:,.0f} | "
            f"{r['gym_steps_per_s']:,.0f} | {ratio:.2f} | {r['jax_first_call_s']:.1f} |"
        )
    if record.get("relabel"):
        lines += [
            "",
            "### Simulator relabelling (set to an observation, one step)",
            "",
            "| env | rows | JAX env vmapped (ms) | MuJoCo loop (ms) | first JAX call (s) |",
            "| --- | ---: | ---: | ---: | ---: |",
        ]
        for r in record["relabel"]:
            lines.append(
                f"| {r['env']} | {r['rows']} | {r['jax_ms']:,.0f} | {r['mujoco_loop_ms']:,.0f} | "
                f"{r['first_call_s']:.1f} |"
            )
    return "\n".join(lines) + "\n"


def _mean_ci(x: np.ndarray) -> dict:
    # Normal 95% interval of the mean.
    half = 1.96 * x.std(ddof=1) / np.sqrt(len(x)) if len(x) > 1 else float("nan")
    return {"mean": float(x.mean()), "ci95": [float(x.mean() - half), float(x.mean() + half)]}


def _fmt_task_code(found: dict | None) -> str:
    if found is None:
        return "-"
    return f"{found['obs_error_max']:.1e} / {found['reward_error_max']:.1e}"


def _fmt_ci(r: dict) -> str:
    return f"{r['mean']:.1f} [{r['ci95'][0]:.1f}, {r['ci95'][1]:.1f}]"


def _padded(rows: range) -> list[int]:
    """Row indices filled up to BATCH with the last one, so every call has one shape."""
    rows = list(rows)
    return rows + [rows[-1]] * (BATCH - len(rows))


if __name__ == "__main__":
    main()

"""Online SAC from scratch on one gymnasium env: the dataset builder's behaviour learner, and the
check that SAC learns.

The host loop only steps the env; each env step is one device call (train/env_step.py's
`one_env_step`, the run driver's step body for one agent) that stores the transition in the
device buffer, runs `utd` SAC updates (one lax.scan) and picks the next action. Actions are in
[-1, 1]^act_dim, the agents' space: the env takes them so (envs.make_env's unit_actions), and
the recorded episodes hold the actions the agent took.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from edis_jax import envs
from edis_jax.agents import SAC
from edis_jax.config.agent_configs import SACConfig
from edis_jax.data import buffer
from edis_jax.data.transition import Transition
from edis_jax.datagen.rollout import EpisodeRecorder
from edis_jax.datagen.selection import StopRule
from edis_jax.train import env_step

MAX_CAPACITY = 1_000_000


@dataclass
class SACRun:
    agent: SAC
    steps: int  # env steps done
    evals: list[tuple[int, float]] = field(default_factory=list)  # (step, mean eval return)
    # With record_episodes: every finished episode as numpy arrays (observations (T+1, ds),
    # actions (T, da) in [-1, 1], rewards, terminations, truncations (T,)).
    episodes: list[dict] = field(default_factory=list)
    train_returns: list[tuple[int, float]] = field(default_factory=list)  # (step, return)
    # With snapshot_every: copies of the agent taken every snapshot_every steps since the
    # evaluation before the last one (that evaluation's agent first), as (step, agent); the last
    # evaluation's agent is `agent`. The builder searches them for the policy closest to a target.
    snapshots: list[tuple[int, SAC]] = field(default_factory=list)


def train_sac_online(
    env_id: str,
    steps: int,
    *,
    seed: int = 0,
    config: SACConfig = SACConfig(),  # noqa: B008 (frozen dataclass)
    utd: int = 1,
    batch_size: int = 256,
    eval_every: int = 5000,
    eval_episodes: int = 10,
    eval_stochastic: bool = False,
    stop_when: StopRule | None = None,
    snapshot_every: int | None = None,
    record_episodes: bool = False,
    agent: SAC | None = None,
    progress: bool = True,
) -> SACRun:
    """Train SAC online for `steps` env steps (fewer once `stop_when(run.evals)` is true after
    an evaluation).

    Uniform random actions for config.start_steps steps (none when continuing `agent`), updates
    from then on (once the buffer holds a batch), evaluations every `eval_every` steps:
    deterministic (the mean action), or with eval_stochastic sampled as a dataset's rollout
    samples them. Terminal = termination only; a truncated episode still bootstraps.
    """
    _check_args(
        steps=steps,
        utd=utd,
        batch_size=batch_size,
        eval_every=eval_every,
        eval_episodes=eval_episodes,
    )
    if snapshot_every is not None:
        _check_args(snapshot_every=snapshot_every)
    env = envs.make_env(env_id, seed, unit_actions=True)
    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    key = jax.random.PRNGKey(seed)
    key, init_key = jax.random.split(key)
    if agent is None:
        agent = SAC.create(init_key, obs_dim, act_dim, config)
        random_steps = config.start_steps
    else:
        _check_agent(agent, obs_dim, act_dim, env_id)
        agent = _copy(agent)  # the caller's agent survives the donation below
        random_steps = 0
    update_after = max(random_steps, batch_size)
    replay = buffer.create(Transition.zeros(obs_dim, act_dim), max(1, min(steps, MAX_CAPACITY)))
    run = SACRun(agent=agent, steps=0)

    obs, _ = env.reset(seed=seed)
    recorder = EpisodeRecorder(_host_f32(obs)) if record_episodes else None
    key, act_key = jax.random.split(key)
    # The observation acted on and its action live on the device; one call per env step.
    obs_acted = _f32(obs)
    action = env_step.first_action(agent, act_key, obs_acted, random_steps > 0)
    episode_return = 0.0
    # With stop_when, `steps` is a budget that training usually stops well short of: no
    # remaining-time estimate from it (it promised 1-2 h for 5-12 min builds).
    budget = "{desc}: {n_fmt} of at most {total_fmt} steps [{elapsed}, {rate_fmt}{postfix}]"
    bar = tqdm(
        total=steps,
        desc=f"SAC {env_id}",
        disable=not progress,
        mininterval=1.0,
        bar_format=budget if stop_when is not None else None,
    )
    if snapshot_every is not None:
        run.snapshots.append((0, _copy(agent)))
    try:
        for t in range(steps):
            action_np = np.asarray(action)
            next_obs, reward, terminated, truncated, _ = env.step(action_np)
            episode_return += float(reward)
            if recorder is not None:
                episode = recorder.step(
                    _host_f32(action_np), np.float32(reward), terminated, truncated,
                    _host_f32(next_obs),
                )  # fmt: skip
            if terminated or truncated:
                run.train_returns.append((t + 1, episode_return))
                bar.set_postfix(episode_return=f"{episode_return:.1f}", refresh=False)
                episode_return = 0.0
                obs, _ = env.reset()
                if recorder is not None:
                    run.episodes.append(episode)
                    recorder.reset(_host_f32(obs))
            else:
                obs = next_obs
            agent, replay, obs_acted, action, key = env_step.one_env_step(
                agent,
                replay,
                obs_acted,
                action,
                env_step.env_row(obs, next_obs, reward, terminated),
                key,
                t + 1 < random_steps,
                num_updates=utd if t + 1 >= update_after else 0,
                batch_size=batch_size,
            )
            run.steps = t + 1
            bar.update(1)
            evaluating = (t + 1) % eval_every == 0 or t + 1 == steps
            if evaluating:
                mean_return = evaluate_agent(agent, env_id, eval_episodes, seed, eval_stochastic)
                run.evals.append((t + 1, mean_return))
                bar.set_postfix(eval_return=f"{mean_return:.1f}", refresh=False)
                if stop_when is not None and stop_when(run.evals):
                    break
            if snapshot_every is not None and (evaluating or (t + 1) % snapshot_every == 0):
                if evaluating:  # a new interval starts with the agent just evaluated
                    run.snapshots.clear()
                run.snapshots.append((t + 1, _copy(agent)))
    finally:
        bar.close()
        env.close()
    run.agent = agent
    return run


def evaluate_agent(agent, env_id: str, episodes: int, seed: int, stochastic: bool = False):
    """Mean return of `episodes` episodes, run side by side in a vector env: deterministic (the
    mean action) or stochastic (sampled actions; the same keys at every call, so evaluations of
    different agents share their noise as they share their initial states)."""
    to_env = envs.ActionScale(env_id).to_env_float64
    key = jax.random.PRNGKey(seed + 20_000)

    def policy(obs):
        nonlocal key
        if stochastic:
            key, sub = jax.random.split(key)
            unit = env_step.act(agent, sub, _f32(obs))
        else:
            unit = env_step.act(agent, None, _f32(obs), deterministic=True)
        return to_env(np.asarray(unit))

    # Evaluation episodes use seeds disjoint from training's (seed) reset.
    returns = envs.evaluate(policy, env_id, num_envs=episodes, episodes=1, seed=seed + 10_000)
    return float(np.mean(returns))


# ---------------------------------------------------------------------------------- helpers


def _copy(agent: SAC) -> SAC:
    """A copy that survives the donation of `agent` to the next step."""
    return jax.tree.map(jnp.copy, agent)


def _f32(x) -> jnp.ndarray:
    return jnp.asarray(x, jnp.float32)


def _host_f32(x) -> np.ndarray:
    return np.asarray(x, np.float32)


def _check_args(**values) -> None:
    for name, value in values.items():
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"train_sac_online: {name} must be a positive int, got {value!r}")


def _check_agent(agent, obs_dim: int, act_dim: int, env_id: str) -> None:
    got_obs = agent.obs_norm.mean.shape[-1]
    got_act = agent.actor_net.act_dim
    if (got_obs, got_act) != (obs_dim, act_dim):
        raise ValueError(
            f"the agent passed has obs/action dims ({got_obs}, {got_act}) but {env_id} has "
            f"({obs_dim}, {act_dim}): continue training only on the env it was trained on"
        )

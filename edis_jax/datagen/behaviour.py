"""Online SAC from scratch on one env: the dataset builder's behaviour learner, and the check
that SAC learns.

With gymnasium's env the host loop only steps the env; each env step is one device call
(train/env_step.py's `one_env_step`, the run driver's step body for one agent) that stores the
transition in the device buffer, runs `utd` SAC updates (one lax.scan) and picks the next
action. With the JAX-native env (`env_backend="jax"`) every step up to the next evaluation or
snapshot is one device call: the run loop's online chunk (train/jax_online.py). Actions are in
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
from edis_jax.train import env_step, jax_online
from edis_jax.train import state as S

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
    env_backend: str = "gymnasium",
) -> SACRun:
    """Train SAC online for `steps` env steps (fewer once `stop_when(run.evals)` is true after
    an evaluation).

    Uniform random actions for config.start_steps steps (none when continuing `agent`), updates
    from then on (once the buffer holds a batch), evaluations every `eval_every` steps:
    deterministic (the mean action), or with eval_stochastic sampled as a dataset's rollout
    samples them. Terminal = termination only; a truncated episode still bootstraps.

    `env_backend` "gymnasium" steps the env on the host, one device call per step; "jax" (or
    "auto" on an accelerator) trains on the JAX-native env in compiled chunks up to the next
    evaluation or snapshot: the run loop's own chunk (train/jax_online.online_chunk). The
    evaluations, which define the builder's targets and references, step gymnasium's env on
    both backends.
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
    backend = jax_online.resolve_backend(env_backend, env_id, None)
    key = jax.random.PRNGKey(seed)
    key, init_key = jax.random.split(key)
    if backend == "jax":
        env = jax_online.training_env(env_id)
        dims = (env.obs_dim, env.action_dim)
    else:
        env = envs.make_env(env_id, seed, unit_actions=True)
        dims = (env.observation_space.shape[0], env.action_space.shape[0])
    if agent is None:
        agent = SAC.create(init_key, *dims, config)
        random_steps = config.start_steps
    else:
        try:
            _check_agent(agent, *dims, env_id)
        except ValueError:
            if backend != "jax":
                env.close()
            raise
        agent = _copy(agent)  # the caller's agent survives the donation below
        random_steps = 0
    sizes = dict(
        random_steps=random_steps,
        update_after=max(random_steps, batch_size),
        utd=utd,
        batch_size=batch_size,
        capacity=max(1, min(steps, MAX_CAPACITY)),
    )
    if backend == "jax":
        driver = _JaxEnvSteps(env, env_id, agent, seed, record_episodes, **sizes)
    else:
        driver = _HostEnvSteps(env, agent, seed, key, record_episodes, **sizes)
    run = SACRun(agent=agent, steps=0)
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
    everies = [eval_every] + ([snapshot_every] if snapshot_every is not None else [])
    try:
        t = 0
        while t < steps:
            boundary = min(steps, *((t // every + 1) * every for every in everies))
            n = driver.chunk(t, boundary)
            for end_step, episode_return, episode in driver.advance(t, n):
                run.train_returns.append((end_step, episode_return))
                bar.set_postfix(episode_return=f"{episode_return:.1f}", refresh=False)
                if episode is not None:
                    run.episodes.append(episode)
            t += n
            run.steps = t
            bar.update(n)
            if t < boundary:
                continue  # the jax chunk's switch to updating (update_after), not a boundary
            agent = driver.agent()
            evaluating = t % eval_every == 0 or t == steps
            if evaluating:
                mean_return = evaluate_agent(agent, env_id, eval_episodes, seed, eval_stochastic)
                run.evals.append((t, mean_return))
                bar.set_postfix(eval_return=f"{mean_return:.1f}", refresh=False)
                if stop_when is not None and stop_when(run.evals):
                    break
            if snapshot_every is not None and (evaluating or t % snapshot_every == 0):
                if evaluating:  # a new interval starts with the agent just evaluated
                    run.snapshots.clear()
                run.snapshots.append((t, _copy(agent)))
    finally:
        bar.close()
        driver.close()
    run.agent = driver.agent()
    return run


class _HostEnvSteps:
    """gymnasium's env on the host: each env step is one device call (train/env_step.py's
    `one_env_step`) that stores the transition, runs the updates and picks the next action."""

    def __init__(self, env, agent, seed, key, record_episodes, *, random_steps, update_after,
                 utd, batch_size, capacity):  # fmt: skip
        self.env = env
        obs_dim, act_dim = self.env.observation_space.shape[0], self.env.action_space.shape[0]
        self.replay = buffer.create(Transition.zeros(obs_dim, act_dim), capacity)
        self.sizes = (random_steps, update_after, utd, batch_size)
        self._agent = agent
        self.obs, _ = self.env.reset(seed=seed)
        self.recorder = EpisodeRecorder(_host_f32(self.obs)) if record_episodes else None
        self.key, act_key = jax.random.split(key)
        # The observation acted on and its action live on the device; one call per env step.
        self.obs_acted = _f32(self.obs)
        self.action = env_step.first_action(agent, act_key, self.obs_acted, random_steps > 0)
        self.episode_return = 0.0

    def chunk(self, t: int, boundary: int) -> int:
        return 1

    def advance(self, t: int, n: int) -> list[tuple[int, float, dict | None]]:
        """Env step t: (end step, return, recorded episode or None) of the episode it ended."""
        random_steps, update_after, utd, batch_size = self.sizes
        action_np = np.asarray(self.action)
        next_obs, reward, terminated, truncated, _ = self.env.step(action_np)
        self.episode_return += float(reward)
        episode = None
        if self.recorder is not None:
            episode = self.recorder.step(
                _host_f32(action_np), np.float32(reward), terminated, truncated,
                _host_f32(next_obs),
            )  # fmt: skip
        finished = []
        if terminated or truncated:
            finished.append((t + 1, self.episode_return, episode))
            self.episode_return = 0.0
            self.obs, _ = self.env.reset()
            if self.recorder is not None:
                self.recorder.reset(_host_f32(self.obs))
        else:
            self.obs = next_obs
        self._agent, self.replay, self.obs_acted, self.action, self.key = env_step.one_env_step(
            self._agent,
            self.replay,
            self.obs_acted,
            self.action,
            env_step.env_row(self.obs, next_obs, reward, terminated),
            self.key,
            t + 1 < random_steps,
            num_updates=utd if t + 1 >= update_after else 0,
            batch_size=batch_size,
        )
        return finished

    def agent(self) -> SAC:
        return self._agent

    def close(self) -> None:
        self.env.close()


class _JaxEnvSteps:
    """The JAX-native env inside the compiled program: the run loop's online chunk
    (jax_online.online_chunk) on a one-seed run state with no offline data. Its online buffer is
    the replay; the real buffer is a one-row stand-in the mixture gives no weight. Episodes are
    read back from the replay's rows after each chunk."""

    def __init__(self, env, env_id, agent, seed, record_episodes, *, random_steps,
                 update_after, utd, batch_size, capacity):  # fmt: skip
        self.env, self.bounds = env, jax_online.ActionBounds.of(env_id)
        self.sizes = (random_steps, update_after, utd, batch_size)
        self.capacity = capacity
        row = Transition.zeros(env.obs_dim, env.action_dim)
        state = S.RunState(
            agent=agent,
            generator=None,
            real=buffer.create(row, 1),
            online=buffer.create(row, capacity),
            synthetic=buffer.create(row, 1),
            weights=jnp.asarray((0.0, 1.0, 0.0), jnp.float32),
        )
        self.keys = jax.random.PRNGKey(seed)[None]
        self.state = jax_online.with_env(jax.tree.map(lambda x: x[None], state), env, self.keys)
        self.returns = jax_online.ReturnRule(float(agent.discount))  # (SAC reads no mc_return)
        self.record = record_episodes
        self.recorder = None
        self.length, self.episode_return = 0, 0.0

    def chunk(self, t: int, boundary: int) -> int:
        update_from = self.sizes[1] - 1  # the first step with updates (as _HostEnvSteps)
        end = update_from if t < update_from < boundary else boundary
        # A chunk's rows are read back after it: no more than the replay holds.
        return min(end - t, self.capacity)

    def advance(self, t: int, n: int) -> list[tuple[int, float, dict | None]]:
        """Env steps t .. t + n - 1 in one call; the episodes they ended, as _HostEnvSteps."""
        random_steps, update_after, utd, batch_size = self.sizes
        self.state, _ = jax_online.online_chunk(
            self.state, self.keys, np.int32(t), np.int32(n), np.int32(random_steps),
            env=self.env, bounds=self.bounds, returns=self.returns,
            utd=utd if t + 1 >= update_after else 0, batch_size=batch_size,
        )  # fmt: skip
        return self._episodes(t, n)

    def _episodes(self, t: int, n: int) -> list[tuple[int, float, dict | None]]:
        """The replay's rows of steps t .. t + n - 1 (step t is row t mod capacity: the replay
        wraps once full), walked as the host walks its env: an episode ends at a termination or
        at the time limit (the JAX env truncates exactly there)."""
        rows_of_steps = np.arange(t, t + n) % self.capacity
        rows = jax.device_get(jax.tree.map(lambda x: x[0, rows_of_steps], self.state.online.data))
        next_first = np.asarray(jax.device_get(self.state.env.obs[0]), np.float32)
        finished = []
        for i in range(n):
            if self.record and self.recorder is None:
                self.recorder = EpisodeRecorder(rows.obs[i])
            self.length += 1
            self.episode_return += float(rows.reward[i])
            terminated = bool(rows.terminal[i] > 0.5)
            truncated = self.length >= self.env.max_episode_steps
            episode = None
            if self.recorder is not None:
                episode = self.recorder.step(
                    rows.action[i], rows.reward[i], terminated, truncated, rows.next_obs[i]
                )
            if terminated or truncated:
                finished.append((t + i + 1, self.episode_return, episode))
                self.length, self.episode_return = 0, 0.0
                if self.recorder is not None:
                    self.recorder.reset(rows.obs[i + 1] if i + 1 < n else next_first)
        return finished

    def agent(self) -> SAC:
        return jax.tree.map(lambda x: x[0], self.state.agent)

    def close(self) -> None:
        pass


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

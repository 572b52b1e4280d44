"""The online phase with `--env-backend jax`: the env inside the compiled program.

With the gymnasium backend the host steps MuJoCo and makes one device call per env step
(train/state.online_step). Here the env is a JAX-native one (envs.make_jax_env) and its state
is part of the run's state (`RunState.env`, an `EnvCarry` per seed), so the host makes one
device call per chunk: `online_chunk` runs every env step up to the next log, evaluation,
retrain or checkpoint boundary as one loop, vmapped over seeds. Each step is the gymnasium
backend's, in the same order: act (the same keys), step the env (SAME_STEP autoreset), then
state.learn_step (store the transition, U updates). The episode bookkeeping the host keeps for
the gymnasium backend (train/episodes.py) is on the device here: the training return, and the
returns-to-go written into the online rows when an episode ends (Cal-QL's bound).

A checkpoint holds the env like any other leaf, so a resumed run continues exactly, with no
replay. Evaluation (`evaluate`) runs every episode of every seed as one vmapped loop.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from flax import struct

from edis_jax.data import buffer
from edis_jax.envs import ActionScale
from edis_jax.envs.jax_env import EnvState, JaxEnv, has_jax_env, make_jax_env, step_autoreset
from edis_jax.train import state as S

ENV_STREAM = 7 << 28  # the key stream of the training envs' first reset (state.py's streams)


class EnvCarry(struct.PyTreeNode):
    """One seed's env in a jax-backend run: the env's state, the observation the next action is
    drawn for, and the running episode (its first online step and its return so far), with the
    return of the latest finished episode (NaN before the first; the logs' train_return)."""

    state: EnvState
    obs: jax.Array
    episode_start: jax.Array
    episode_return: jax.Array
    last_return: jax.Array


@dataclasses.dataclass(frozen=True)
class ReturnRule:
    """How an ended episode's rows get their mc_return: data/returns.returns_to_go's rule
    (discount, reward shift, fail_reward), here as compile-time constants."""

    discount: float
    shift: float = 0.0
    fail_reward: float | None = None


@dataclasses.dataclass(frozen=True)
class ActionBounds:
    """envs.ActionScale's map from the agents' [-1, 1] to the env's units, as compile-time
    constants (None: the bounds are [-1, 1] and the map is the identity)."""

    low: tuple[float, ...]
    high: tuple[float, ...]

    @classmethod
    def of(cls, env_id: str) -> ActionBounds | None:
        scale = ActionScale(env_id)
        return None if scale.identity else cls(tuple(scale.low), tuple(scale.high))


def to_env_units(action: jax.Array, bounds: ActionBounds | None) -> jax.Array:
    """ActionScale.to_env in jnp: the same float32 operations."""
    if bounds is None:
        return action
    low = jnp.asarray(bounds.low, jnp.float32)
    high = jnp.asarray(bounds.high, jnp.float32)
    return low + (action + 1.0) * 0.5 * (high - low)


# --------------------------------------------------------------------------- the backend


def resolve_backend(choice: str, env_id: str, env_kwargs: dict | None) -> str:
    """The backend a run uses: `choice`, with auto resolved. auto is jax on an accelerator for
    an env with an exact JAX version and default arguments, gymnasium otherwise (on this kind
    of CPU the gymnasium vector env steps faster: benchmarks/results/jax_envs_*.md). Raises
    ValueError with one line for jax where it cannot run."""
    usable = has_jax_env(env_id) and not env_kwargs
    if choice == "jax" and not usable:
        why = (
            f"non-default env arguments {env_kwargs}"
            if env_kwargs and has_jax_env(env_id)
            else "no exact JAX-native version here (`mjx` extra for the MuJoCo locomotion "
            "tasks: pip install 'edis-jax[mjx]')"
        )
        raise ValueError(
            f"--env-backend jax: {env_id} has {why}; use --env-backend gymnasium (or auto)"
        )
    if choice == "auto":
        return "jax" if usable and jax.default_backend() != "cpu" else "gymnasium"
    return choice


@functools.cache
def training_env(env_id: str) -> JaxEnv:
    """The JAX env of `env_id`, one per process: it is a compile-time constant of the programs
    below, so the same object keeps them compiled once."""
    return make_jax_env(env_id)


def with_env(state: S.RunState, env: JaxEnv, keys: jax.Array) -> S.RunState:
    """`state` with every seed's env reset (key fold_in(seed key, ENV_STREAM)): the env of
    online step 0."""
    return state.replace(env=_reset_envs(keys, env=env))


@functools.partial(jax.jit, static_argnames=("env",))
def _reset_envs(keys, *, env: JaxEnv):
    def one_seed(key):
        env_state, obs = env.reset(jax.random.fold_in(key, ENV_STREAM))
        zero = jnp.zeros((), jnp.float32)
        return EnvCarry(env_state, obs, jnp.zeros((), jnp.int32), zero, zero + jnp.nan)

    return jax.vmap(one_seed)(keys)


@functools.partial(
    jax.jit,
    static_argnames=("env", "bounds", "returns", "utd", "batch_size"),
    donate_argnames=("state",),
)
def online_chunk(
    state: S.RunState, keys, t0, n, random_steps, *, env: JaxEnv, bounds: ActionBounds | None,
    returns: ReturnRule, utd: int, batch_size: int,
):  # fmt: skip
    """Online steps t0 .. t0 + n - 1 of every seed in one device call (n, t0 traced: one
    compile serves every chunk). Actions are uniform while t < random_steps. Returns (state,
    the last step's metrics)."""

    def one_seed(s: S.RunState, key):
        def step(carry, t):
            s, action, _ = carry
            e = s.env
            env_state, obs, reward, terminated, truncated, final_obs = step_autoreset(
                env, e.state, to_env_units(action, bounds)
            )
            row = jnp.concatenate(
                [obs, final_obs, reward[None], terminated[None]], dtype=jnp.float32
            )
            s, obs, next_action, metrics = S.learn_step(
                s, e.obs, action, row, key, t, t + 1 < random_steps,
                utd=utd, batch_size=batch_size,
            )  # fmt: skip
            reward = reward.astype(jnp.float32)
            ended = terminated | truncated
            s = _finish_episode(s, e.episode_start, t, ended, returns, env.max_episode_steps)
            episode_return = e.episode_return + reward
            s = s.replace(
                env=EnvCarry(
                    state=env_state,
                    obs=obs,
                    episode_start=jnp.where(ended, t + 1, e.episode_start),
                    episode_return=jnp.where(ended, 0.0, episode_return),
                    last_return=jnp.where(ended, episode_return, e.last_return),
                )
            )
            return s, next_action, metrics

        action = S.exploration_action(s.agent, s.env.obs, key, t0, t0 < random_steps)
        shapes = jax.eval_shape(step, (s, action, None), t0)[2]
        metrics = jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), shapes)
        s, _, metrics = jax.lax.fori_loop(
            0, n, lambda i, carry: step(carry, t0 + i), (s, action, metrics)
        )
        return s, metrics

    return jax.vmap(one_seed)(state, keys)


def _finish_episode(s: S.RunState, start, t, ended, rule: ReturnRule, longest: int):
    """Where the episode that began at online step `start` ended at step t: its rows' mc_return
    (returns_to_go's rule) in the online buffer (row t) and the real buffer (offline size + t).
    Every step computes it over the window of the last `longest` rows (the time limit) and
    writes only where `ended` (no branch: under vmap a branch would run both sides anyway).
    Row t is step t: a run's online buffer holds all its online steps. The behaviour SAC's
    replay, which may wrap, reads no mc_return."""
    capacity = s.online.capacity
    width = min(longest, capacity)
    first = jnp.clip(t - width + 1, 0, capacity - width)
    rows = first + jnp.arange(width)
    raw = jax.lax.dynamic_slice(s.online.data.reward, (first,), (width,))
    in_episode = (rows >= start) & (rows <= t)
    rewards = jnp.where(in_episode, raw + rule.shift, 0.0)
    values = discounted_suffix_sums(rewards, rule.discount)
    if rule.fail_reward is not None:
        last = s.online.data.reward[t]
        failed = last == rule.fail_reward
        values = jnp.where(failed, (last + rule.shift) / (1.0 - rule.discount), values)
    pad = jnp.int32(1 << 30)  # a row past any buffer's end: set_mc_return drops it
    written = jnp.where(in_episode & ended, rows, pad)
    offline_size = s.real.size - s.online.size
    return s.replace(
        online=buffer.set_mc_return(s.online, written, values),
        real=buffer.set_mc_return(
            s.real, jnp.where(written == pad, pad, written + offline_size), values
        ),
    )


def discounted_suffix_sums(rewards: jax.Array, discount: float) -> jax.Array:
    """G_i = r_i + discount G_{i+1} (G past the end 0), as a parallel scan: each step is the
    affine map x -> r + discount x, composed from the end."""

    def compose(later, earlier):
        # `later` maps the value after the earlier segment's end; apply `earlier` on top.
        scale_l, shift_l = later
        scale_e, shift_e = earlier
        return scale_e * scale_l, shift_e + scale_e * shift_l

    scales = jnp.full_like(rewards, discount)
    return jax.lax.associative_scan(compose, (scales, rewards), reverse=True)[1]


# ---------------------------------------------------------------------------- evaluation


@functools.partial(jax.jit, static_argnames=("env", "bounds", "episodes"))
def evaluate(agent, key, *, env: JaxEnv, bounds: ActionBounds | None, episodes: int):
    """Returns (seeds, episodes) of the deterministic policy of each seed's agent (leading seed
    axis), every episode of every seed in one loop that runs until the last episode ends. Seed
    i's episode j starts from env.reset(fold_in(fold_in(key, i), j))."""

    def one_episode(agent, episode_key):
        env_state, obs = env.reset(episode_key)

        def running(carry):
            return ~carry[3]

        def step(carry):
            env_state, obs, total, done = carry
            action = to_env_units(agent.act(None, obs, deterministic=True), bounds)
            env_state, obs, reward, terminated, truncated = env.step(env_state, action)
            return env_state, obs, total + reward.astype(jnp.float32), terminated | truncated

        zero = jnp.zeros((), jnp.float32)
        return jax.lax.while_loop(running, step, (env_state, obs, zero, jnp.bool_(False)))[2]

    def one_seed(agent, seed_key):
        episode_keys = jax.vmap(lambda j: jax.random.fold_in(seed_key, j))(jnp.arange(episodes))
        return jax.vmap(one_episode, in_axes=(None, 0))(agent, episode_keys)

    seeds = jax.tree.leaves(agent)[0].shape[0]
    seed_keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(seeds))
    return jax.vmap(one_seed)(agent, seed_keys)

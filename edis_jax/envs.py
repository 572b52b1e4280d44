"""Gymnasium environments: creation, vector envs (one sub-env per seed), evaluation, and the
known termination rules in jnp (to label synthetic transitions)."""

from __future__ import annotations

from collections.abc import Callable

import gymnasium as gym
import jax.numpy as jnp
import numpy as np

TerminationFn = Callable[[jnp.ndarray, jnp.ndarray, jnp.ndarray], jnp.ndarray]


def make_env(env_id: str, seed: int | None = None) -> gym.Env:
    """A gymnasium env with its default time limit; `seed` seeds its reset and action space."""
    env = _make(lambda: gym.make(env_id), env_id)
    if seed is not None:
        env.reset(seed=seed)
        env.action_space.seed(seed)
    return env


def make_vector_env(env_id: str, num_envs: int) -> gym.vector.SyncVectorEnv:
    """`num_envs` copies of the env stepped together (one per seed of a run).

    Autoreset is SAME_STEP: the step that ends an episode returns the first observation of the
    next one, with the true final observation in `info["final_obs"]`, and `terminated` and
    `truncated` stay distinct.
    """
    if num_envs < 1:
        raise ValueError(f"num_envs must be >= 1, got {num_envs}")
    return _make(
        lambda: gym.make_vec(
            env_id,
            num_envs=num_envs,
            vectorization_mode="sync",
            vector_kwargs={"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP},
        ),
        env_id,
    )


def evaluate(
    policy_fn: Callable[[np.ndarray], np.ndarray],
    env_id: str,
    num_envs: int,
    episodes: int,
    seed: int,
) -> np.ndarray:
    """Returns (num_envs, episodes): every sub-env runs `episodes` full episodes.

    policy_fn maps an observation batch (num_envs, obs_dim) to actions (num_envs, act_dim); with
    several seeds, row i of the batch belongs to seed i. Sub-env i is seeded with seed + i.
    A sub-env that has finished its episodes keeps stepping (the batch shape stays fixed) but its
    further returns are ignored.
    """
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    env = make_vector_env(env_id, num_envs)
    try:
        obs, _ = env.reset(seed=seed)
        returns = np.zeros((num_envs, episodes))
        running = np.zeros(num_envs)
        done = np.zeros(num_envs, dtype=int)
        while (done < episodes).any():
            action = np.asarray(policy_fn(obs), dtype=env.action_space.dtype)
            obs, reward, terminated, truncated, _ = env.step(action)
            running += reward
            for i in np.flatnonzero(terminated | truncated):
                if done[i] < episodes:
                    returns[i, done[i]] = running[i]
                    done[i] += 1
                running[i] = 0.0
        return returns
    finally:
        env.close()


def termination_fn(env_id: str) -> TerminationFn | None:
    """The env's termination rule as terminal(obs, action, next_obs) -> float (1.0 = ended),
    computed from next_obs in jnp (any leading batch shape); None if the rule is not known.

    The rules are gymnasium's v4/v5 `is_healthy` with default arguments; they need the env's
    default observation (positions x, y excluded). Hopper also bounds |velocity| < 100, which
    the observation (velocities clipped to 10) can never violate.
    """
    name, _, version = env_id.rpartition("-v")
    if name in _NEVER_TERMINATE:
        return _never
    if version in ("4", "5") and name in _HEALTHY_RULES:
        return _HEALTHY_RULES[name]
    return None


# ---------------------------------------------------------------------------------- helpers


def _make(factory, env_id: str):
    try:
        return factory()
    except gym.error.Error as e:
        raise ValueError(
            f"cannot make gymnasium env {env_id!r} ({e}); give a registered id such as Hopper-v5"
        ) from None


def _never(obs, action, next_obs):
    return jnp.zeros(jnp.shape(next_obs)[:-1], jnp.float32)


def _hopper(obs, action, next_obs):
    # Hopper-v5 defaults: z in (0.7, inf), angle in (-0.2, 0.2), obs[1:] in (-100, 100).
    z, angle = next_obs[..., 0], next_obs[..., 1]
    state_ok = jnp.all(jnp.abs(next_obs[..., 1:]) < 100.0, axis=-1)
    healthy = (z > 0.7) & (jnp.abs(angle) < 0.2) & state_ok
    return (~healthy).astype(jnp.float32)


def _walker2d(obs, action, next_obs):
    # Walker2d-v5 defaults: z in (0.8, 2.0), angle in (-1, 1).
    z, angle = next_obs[..., 0], next_obs[..., 1]
    healthy = (z > 0.8) & (z < 2.0) & (jnp.abs(angle) < 1.0)
    return (~healthy).astype(jnp.float32)


def _ant(obs, action, next_obs):
    # Ant-v5 defaults: finite state and z in [0.2, 1.0] (closed interval, unlike the others).
    z = next_obs[..., 0]
    healthy = jnp.all(jnp.isfinite(next_obs), axis=-1) & (z >= 0.2) & (z <= 1.0)
    return (~healthy).astype(jnp.float32)


def _humanoid(obs, action, next_obs):
    # Humanoid-v5 defaults: z in (1.0, 2.0).
    z = next_obs[..., 0]
    return (~((z > 1.0) & (z < 2.0))).astype(jnp.float32)


def _inverted_pendulum(obs, action, next_obs):
    # InvertedPendulum-v5: ends when the pole angle leaves [-0.2, 0.2] or the state is not finite.
    ok = jnp.all(jnp.isfinite(next_obs), axis=-1) & (jnp.abs(next_obs[..., 1]) <= 0.2)
    return (~ok).astype(jnp.float32)


_HEALTHY_RULES: dict[str, TerminationFn] = {
    "Hopper": _hopper,
    "Walker2d": _walker2d,
    "Ant": _ant,
    "Humanoid": _humanoid,
    "InvertedPendulum": _inverted_pendulum,
}
# Time-limit-only tasks: every episode is truncated, none terminates.
_NEVER_TERMINATE = ("HalfCheetah", "Swimmer", "Reacher", "Pusher", "Pendulum")


# --------------------------------------------------------------------------- action units


class ActionScale:
    """Maps between the agents' action box [-1, 1] (tanh policies) and the env's Box bounds.

    Agents, buffers and the generator work in [-1, 1]; datasets and envs keep the env's units.
    For the MuJoCo locomotion tasks the bounds are already [-1, 1] and both maps are identity.
    """

    def __init__(self, env_id: str):
        env = _make(lambda: gym.make(env_id), env_id)
        space = env.action_space
        env.close()
        if not isinstance(space, gym.spaces.Box) or not np.all(np.isfinite(space.low)):
            raise ValueError(
                f"{env_id} has action space {space}: edis-jax needs a bounded continuous Box"
            )
        self.low = space.low.astype(np.float32)
        self.high = space.high.astype(np.float32)
        self.identity = bool(np.all(self.low == -1.0) and np.all(self.high == 1.0))

    def to_unit(self, action: np.ndarray) -> np.ndarray:
        if self.identity:
            return np.asarray(action, np.float32)
        return (2.0 * (action - self.low) / (self.high - self.low) - 1.0).astype(np.float32)

    def to_env(self, action: np.ndarray) -> np.ndarray:
        if self.identity:
            return np.asarray(action, np.float32)
        return (self.low + (np.asarray(action) + 1.0) * 0.5 * (self.high - self.low)).astype(
            np.float32
        )


def episode_length(env_id: str, default: int = 1000) -> int:
    """The env's time limit (max_episode_steps), or `default` (MuJoCo's 1000) when unset."""
    try:
        steps = gym.spec(env_id).max_episode_steps
    except gym.error.Error:
        return default
    return int(steps) if steps else default

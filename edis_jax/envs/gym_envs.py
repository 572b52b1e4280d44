"""Gymnasium environments: creation, vector envs (one sub-env per seed), evaluation and action
units (`ActionScale`). The termination rules are in termination.py, simulators set to an
observation in simulators.py, the JAX-native envs in jax_env.py.

Observation layout: agents see flat vectors. Envs with Dict observations (gymnasium-robotics'
AntMaze) are flattened by data/observations.py's `flatten_observations`, the one function both
the dataset loader (Minari stores the dict) and the env wrapper use.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import gymnasium as gym
import numpy as np

from edis_jax.data.env_packages import register_env_package, scratch_tempdir
from edis_jax.data.observations import as_batch, flatten_observations


def make_env(
    env_id: str, seed: int | None = None, *, flat_observations: bool = True,
    unit_actions: bool = False,
) -> gym.Env:  # fmt: skip
    """A gymnasium env with its default time limit; `seed` seeds its reset and action space.
    Dict observations are flattened (`flatten_observations`) unless flat_observations is False
    (the env's own spaces, as a dataset stores them). With unit_actions the env takes actions
    in the agents' box [-1, 1]: gymnasium's RescaleAction, unless the bounds are [-1, 1]."""
    wrap = _flat_observation_env if flat_observations else (lambda env: env)
    env = _make(lambda: wrap(gym.make(env_id)), env_id)
    if unit_actions and not ActionScale(env_id, space=env.action_space).identity:
        env = gym.wrappers.RescaleAction(env, np.float32(-1.0), np.float32(1.0))
    if seed is not None:
        env.reset(seed=seed)
        env.action_space.seed(seed)
    return env


def make_vector_env(
    env_id: str, num_envs: int, env_kwargs: dict | None = None
) -> gym.vector.SyncVectorEnv:
    """`num_envs` copies of the env stepped together (one per seed of a run); `env_kwargs`
    (a dataset's env spec, minari_store.env_kwargs) go to the env's constructor.

    Autoreset is SAME_STEP: the step that ends an episode returns the first observation of the
    next one, with the true final observation in `info["final_obs"]`, and `terminated` and
    `truncated` stay distinct. Dict observations are flattened (`flatten_observations`).
    """
    if num_envs < 1:
        raise ValueError(f"num_envs must be >= 1, got {num_envs}")
    return _make(
        lambda: gym.make_vec(
            env_id,
            num_envs=num_envs,
            vectorization_mode="sync",
            vector_kwargs={"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP},
            wrappers=[_flat_observation_env],
            **(env_kwargs or {}),
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
    """Returns (num_envs, episodes): every sub-env runs `episodes` full episodes (the returns
    of `episode_outcomes`)."""
    return episode_outcomes(policy_fn, env_id, num_envs, episodes, seed)[0]


def episode_outcomes(
    policy_fn: Callable[[np.ndarray], np.ndarray],
    env_id: str,
    num_envs: int,
    episodes: int,
    seed: int,
    env_kwargs: dict | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(returns, successes), each (num_envs, episodes): every sub-env runs `episodes` full
    episodes. An episode succeeds when the env's `info["success"]` is true at any of its steps
    (gymnasium-robotics' AntMaze sets it at every step: the ant within 0.45 of the goal); for
    envs that never report it, every success is False.

    policy_fn maps an observation batch (num_envs, obs_dim) to actions (num_envs, act_dim); with
    several seeds, row i of the batch belongs to seed i. Sub-env i is seeded with seed + i.
    A sub-env that has finished its episodes keeps stepping (the batch shape stays fixed) but its
    further returns are ignored. `env_kwargs`: as for make_vector_env.
    """
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    env = make_vector_env(env_id, num_envs, env_kwargs)
    try:
        obs, _ = env.reset(seed=seed)
        returns = np.zeros((num_envs, episodes))
        successes = np.zeros((num_envs, episodes), bool)
        running = np.zeros(num_envs)
        succeeded = np.zeros(num_envs, bool)
        done = np.zeros(num_envs, dtype=int)
        while (done < episodes).any():
            action = np.asarray(policy_fn(obs), dtype=env.action_space.dtype)
            obs, reward, terminated, truncated, info = env.step(action)
            ended = terminated | truncated
            running += reward
            succeeded |= step_successes(info, ended)
            for i in np.flatnonzero(ended):
                if done[i] < episodes:
                    returns[i, done[i]] = running[i]
                    successes[i, done[i]] = succeeded[i]
                    done[i] += 1
                running[i], succeeded[i] = 0.0, False
        return returns, successes
    finally:
        env.close()


def step_successes(info: dict, ended: np.ndarray) -> np.ndarray:
    """Per sub-env, whether this vector step reported `info["success"]` true. With SAME_STEP
    autoreset the step that ends an episode reports its info in `info["final_info"]` (the
    top-level info is then the next episode's reset info)."""
    ended = np.asarray(ended, bool)
    success = _reported_success(info, len(ended)) & ~ended
    final_info = info.get("final_info")
    if final_info is not None and ended.any():
        success |= _reported_success(final_info, len(ended)) & ended
    return success


def _reported_success(info: dict, n: int) -> np.ndarray:
    if "success" not in info:
        return np.zeros(n, bool)
    reported = np.asarray(info.get("_success", np.ones(n, bool)), bool)
    return np.asarray(info["success"], bool) & reported


# ------------------------------------------------------------------------ observations


class FlatObservation(gym.ObservationWrapper):
    """An env whose Dict observations come out as `flatten_observations` rows."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        # gymnasium's flat Box of the Dict: its bounds in the same (sorted) key order.
        self.observation_space = gym.spaces.flatten_space(env.observation_space)

    def observation(self, observation):
        return flatten_observations(as_batch(observation))[0]


def _flat_observation_env(env: gym.Env) -> gym.Env:
    return FlatObservation(env) if isinstance(env.observation_space, gym.spaces.Dict) else env


# ---------------------------------------------------------------------------------- helpers


def _make(factory, env_id: str):
    register_env_package(env_id)  # a missing package fails here, with its name
    try:
        with scratch_tempdir():
            return factory()
    except gym.error.Error as e:
        raise ValueError(
            f"cannot make gymnasium env {env_id!r} ({e}); give a registered id such as Hopper-v5"
        ) from None
    except (AttributeError, ImportError, OSError) as e:
        # MuJoCo loads the renderer MUJOCO_GL names at import; without its libraries (EGL on a
        # GPU machine without them, say) the import fails deep inside PyOpenGL.
        backend = os.environ.get("MUJOCO_GL")
        message = str(e).lower()
        if not backend or not (backend.lower() in message or "opengl" in message):
            raise  # not the renderer: the error as it came
        raise ValueError(
            f"cannot make {env_id!r}: MuJoCo could not load the renderer MUJOCO_GL={backend} "
            f"({type(e).__name__}: {e}); unset MUJOCO_GL (nothing here renders) or install "
            "that renderer's libraries"
        ) from None


# --------------------------------------------------------------------------- action units


class ActionScale:
    """Maps arrays of actions between the agents' box [-1, 1] (tanh policies) and the env's Box
    bounds. With make_env's unit_actions (gymnasium's RescaleAction) this module is the one
    place actions change units.

    Agents, buffers and the generator work in [-1, 1]; datasets and envs keep the env's units.
    For the MuJoCo locomotion tasks the bounds are already [-1, 1] and both maps are identity.
    The float32 affine maps here are not RescaleAction's (a - intercept) / gradient: the two
    round differently where the bounds are not [-1, 1], and runs and datasets have always used
    these.
    """

    def __init__(self, env_id: str | None = None, *, space: gym.Space | None = None):
        if space is None:
            env = _make(lambda: gym.make(env_id), env_id)
            space = env.action_space
            env.close()
        if not isinstance(space, gym.spaces.Box) or not np.all(np.isfinite(space.low)):
            raise ValueError(
                f"{env_id or 'the env'} has action space {space}: edis-jax needs a bounded "
                "continuous Box"
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

    def to_env_float64(self, action: np.ndarray) -> np.ndarray:
        """to_env as the behaviour SAC's evaluations compute it: u + 1 rounded to float32, the
        rest in float64, never an identity. It differs from to_env by about one float32 ulp of
        u + 1; kept so that those evaluations, and the policy a dataset keeps, stay bitwise
        the same."""
        low, high = self.low.astype(np.float64), self.high.astype(np.float64)
        return low + (np.asarray(action, np.float32) + 1.0) * (high - low) / 2.0


def episode_length(env_id: str, default: int = 1000) -> int:
    """The env's time limit (max_episode_steps), or `default` (MuJoCo's 1000) when unset."""
    try:
        register_env_package(env_id)
        steps = gym.spec(env_id).max_episode_steps
    except (gym.error.Error, ValueError):
        return default
    return int(steps) if steps else default

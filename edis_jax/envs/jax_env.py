"""JAX-native environments: an env is a value (`JaxEnv`) holding two pure, vmappable functions,

    reset(key) -> (state, obs)
    step(state, action) -> (state, obs, reward, terminated, truncated)

on an `EnvState` pytree, so `vmap` over seeds and `lax.scan` over steps just work and a checkpoint
holds the env like any other leaf. Actions are in the env's own units (as gymnasium's `step`
takes them); `step_autoreset` gives the loop gymnasium's SAME_STEP autoreset.

Each env reproduces a gymnasium env's definition (tested step by step from gymnasium's own states
through `state_from`) and computes in JAX's default float dtype: float32 for training, 64-bit
under `jax_enable_x64` to check the definition. Pendulum-v1 is plain jnp (pendulum.py); the
MuJoCo locomotion tasks run on MJX (mjx_locomotion.py, the `mjx` extra).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import io
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import jax
import jax.numpy as jnp
from flax import struct

from edis_jax.envs.gym_envs import episode_length

# The MJX tasks (mjx_locomotion.TASKS), named here so that asking does not import MJX.
MJX_ENV_IDS = ("Hopper-v5", "Walker2d-v5", "HalfCheetah-v5", "Ant-v5")
PLAIN_JAX_ENV_IDS = ("Pendulum-v1",)
JAX_ENV_IDS = PLAIN_JAX_ENV_IDS + MJX_ENV_IDS
# Envs whose JAX version does not step like gymnasium's in 64-bit: Ant-v5's task code is exact,
# but MJX's physics is not MuJoCo C's for it (RK4 with a free joint, contacts with a geom
# margin; mjx_locomotion's docstring has the measurements). `auto` and the simulator never
# choose them; make_jax_env still makes them, for those who accept the difference.
INEXACT_ENV_IDS = ("Ant-v5",)


class EnvState(struct.PyTreeNode):
    """One env's state: the simulator's (an `mjx.Data`, or Pendulum's (theta, theta_dot)), the
    steps taken in this episode (for the time limit) and the key of the next reset."""

    physics: Any
    steps: jax.Array
    key: jax.Array


@dataclasses.dataclass(frozen=True)
class JaxEnv:
    """A JAX-native env: pure `reset` / `step` (module docstring), plus
    - `state_from(env)`: the state equal to a gymnasium env's current one (its simulator state
      and the steps its TimeLimit has counted) in host arrays, for the fidelity tests;
    - `state_from_obs(obs)`: the state an observation shows, where the observation holds the whole
      simulator state (None otherwise): the simulator set to an observation, as
      `envs.simulators.simulate` does on the host."""

    env_id: str
    obs_dim: int
    action_dim: int
    max_episode_steps: int
    reset: Callable[[jax.Array], tuple[EnvState, jax.Array]]
    step: Callable[[EnvState, jax.Array], tuple]
    state_from: Callable[[gym.Env], EnvState]
    state_from_obs: Callable[[jax.Array], EnvState] | None


def has_jax_env(env_id: str) -> bool:
    """Whether `make_jax_env` has a JAX-native version of this env that steps like gymnasium's
    (not `INEXACT_ENV_IDS`) and can run here (the MJX ones need the `mjx` extra)."""
    if env_id in PLAIN_JAX_ENV_IDS:
        return True
    return env_id in MJX_ENV_IDS and env_id not in INEXACT_ENV_IDS and _mjx_installed()


def make_jax_env(env_id: str, env_kwargs: dict | None = None) -> JaxEnv:
    """The JAX-native version of a gymnasium env (`JAX_ENV_IDS`), with gymnasium's constructor
    defaults and time limit. `env_kwargs` (what a dataset's env spec changes,
    minari_store.env_kwargs) must be empty: the JAX env reproduces the default task only."""
    if env_id not in JAX_ENV_IDS:
        raise ValueError(
            f"{env_id!r} has no JAX-native version; those with one: {', '.join(JAX_ENV_IDS)} "
            "(use --env-backend gymnasium for any other env)"
        )
    _check_default_kwargs(env_id, env_kwargs)
    steps = episode_length(env_id)
    if env_id in PLAIN_JAX_ENV_IDS:
        from edis_jax.envs import pendulum

        return pendulum.make(steps)
    if not _mjx_installed():
        raise ValueError(
            f"{env_id!r} runs on MJX, which is not installed: pip install 'edis-jax[mjx]'"
        )
    from edis_jax.envs import mjx_locomotion

    return mjx_locomotion.make(env_id, steps)


@functools.cache
def batched_step(env_id: str, compiler_options: tuple[tuple[str, object], ...] = ()):
    """(env, step): `make_jax_env(env_id)` and its `step` vmapped over a leading batch axis and
    jitted, for host callers that step many states at once (the simulator set to observations,
    the fidelity checks); one per env, process and `compiler_options` (jax.jit's, as (name,
    value) pairs), so they share one compile. Inputs are first committed to the default device:
    numpy arrays or eager results among them would make jit compile the same program again. The
    training loop compiles its own scans (train/)."""
    env = make_jax_env(env_id)
    jitted = jax.jit(jax.vmap(env.step), compiler_options=dict(compiler_options) or None)
    device = jax.devices()[0]

    def step(state, action):
        return jitted(*jax.device_put((state, action), device))

    step.jitted = jitted
    return env, step


def step_autoreset(env: JaxEnv, state: EnvState, action: jax.Array):
    """`env.step`, then a fresh episode where this one ended (terminated or truncated), as
    gymnasium's vector envs do with SAME_STEP autoreset: (state, obs, reward, terminated,
    truncated, final_obs). `obs` is the next episode's first observation where the episode
    ended, `final_obs` the true observation after `action` (what a replay buffer stores).
    The reset draws from the state's own key, so a run stays a pure function of its seeds."""
    next_state, final_obs, reward, terminated, truncated = env.step(state, action)
    reset_state, reset_obs = env.reset(next_state.key)
    ended = terminated | truncated
    state = jax.tree.map(lambda r, n: jnp.where(ended, r, n), reset_state, next_state)
    obs = jnp.where(ended, reset_obs, final_obs)
    return state, obs, reward, terminated, truncated, final_obs


def float_dtype():
    """JAX's default float dtype: float32, or float64 under `jax_enable_x64`."""
    return jnp.zeros(()).dtype


def elapsed_steps(env: gym.Env) -> int:
    """The steps gymnasium's TimeLimit wrapper has counted in the current episode (0 without
    one)."""
    while isinstance(env, gym.Wrapper):
        if isinstance(env, gym.wrappers.TimeLimit):
            return int(env._elapsed_steps or 0)
        env = env.env
    return 0


def _check_default_kwargs(env_id: str, env_kwargs: dict | None) -> None:
    # env_kwargs holds only what differs from the registered spec (minari_store.env_kwargs).
    if env_kwargs:
        raise ValueError(
            f"{env_id} with non-default arguments {env_kwargs}: the JAX-native env reproduces "
            "the default task only; use --env-backend gymnasium"
        )


def _mjx_installed() -> bool:
    # mujoco-mjx prints "Failed to import warp" to stdout when the optional Warp backend is
    # absent (we use its JAX backend): keep that out of the command's output.
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            import mujoco.mjx  # noqa: F401
    except ImportError:
        return False
    return True

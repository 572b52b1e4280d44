"""Simulators set to an observation: the true next state, reward and termination of any (s, a).

Pendulum in closed form (jnp), MuJoCo locomotion by setting qpos / qvel from the observation,
AntMaze by setting the ant's body and keeping the goal. Used by the generator-health metrics,
`edis-jax diagnose` and the simulator-relabelled (oracle) arm.

MuJoCo locomotion has two paths that give the same rows: MuJoCo C in a Python loop over rows
(`mujoco_step`) and the JAX-native env vmapped over rows in one compiled call (`jax_env_step`).
`simulator_path` picks the one benchmarks/jax_envs.py measured faster on the device. The
compiled call (jax_env.batched_step) is compiled outside train/: the simulator is a host utility
that takes and returns numpy arrays, and each env's step is compiled once per process.
"""

from __future__ import annotations

import gymnasium as gym
import jax
import numpy as np

from edis_jax.data.env_packages import make_gym_env, register_env_package
from edis_jax.data.observations import as_batch, flatten_observations
from edis_jax.envs.gym_envs import make_env
from edis_jax.envs.jax_env import batched_step, has_jax_env
from edis_jax.envs.pendulum import pendulum_step

# Rows per compiled call of `jax_env_step`: one shape, so one compile per env, and bounded memory.
# On this CPU a 4096-row call of the MJX step did not return within minutes (all threads idle
# in XLA), while 1024 rows take 2.7 s.
JAX_ROWS_PER_CALL = 1024


def mujoco_supported(env_id: str) -> bool:
    """Whether `mujoco_step` can rebuild the simulator state from this env's observation."""
    try:
        env = make_gym_env(env_id)
    except Exception:  # unknown id, missing extra: not a MuJoCo env we can set
        return False
    try:
        return _qpos_qvel_layout(env.unwrapped) is not None
    finally:
        env.close()


def mujoco_step(env_id: str, obs: np.ndarray, action: np.ndarray):
    """Set the MuJoCo simulator to each row's state and step it with that row's action:
    (next_obs, reward, terminated) as the env returns them.

    qpos = [0 for the skipped root coordinates, obs[:nq - k]], qvel = obs[nq - k:]; then the env's
    own `step` applies the action for `frame_skip` physics steps (MuJoCo clamps it to ctrlrange)
    and builds the observation. The solver's warm start is zeroed per row so a result does not
    depend on the previous row. Real transitions are reproduced to ~1e-7 (float32 storage);
    Hopper and Walker2d clip observed velocities to +-10, so states at that clip are ambiguous.
    """
    env = make_gym_env(env_id).unwrapped
    layout = _qpos_qvel_layout(env)
    if layout is None:
        env.close()
        raise ValueError(
            f"{env_id}: its observation is not [qpos, qvel], so the simulator cannot be set to "
            "an observation; dynamics_error is unavailable for it"
        )
    skipped, nq, nv = layout
    obs, action = np.asarray(obs, np.float64), np.asarray(action, np.float64)
    if obs.shape[-1] != nq - skipped + nv:
        raise ValueError(
            f"{env_id}: observations have {obs.shape[-1]} dims, the env has {nq - skipped + nv}"
        )
    env.reset(seed=0)
    # Rows with non-finite inputs (a diverged sampler) stay NaN.
    out = np.full_like(obs, np.nan)
    reward = np.full(obs.shape[:-1], np.nan)
    terminated = np.zeros(obs.shape[:-1], bool)
    for i in np.flatnonzero(np.isfinite(obs).all(-1) & np.isfinite(action).all(-1)):
        qpos = np.concatenate([np.zeros(skipped), obs[i, : nq - skipped]])
        env.set_state(qpos, obs[i, nq - skipped :])
        env.data.qacc_warmstart[:] = 0.0
        out[i], reward[i], terminated[i], _, _ = env.step(action[i])
    env.close()
    return out, reward, terminated


def jax_env_step(env_id: str, obs: np.ndarray, action: np.ndarray):
    """`mujoco_step` on the JAX-native env (`make_jax_env`, `JaxEnv.state_from_obs`), vmapped
    over rows: the same (next_obs, reward, terminated), in JAX's default float precision."""
    obs, action = np.asarray(obs, np.float64), np.asarray(action, np.float64)
    env, step = batched_step(env_id)
    if env.state_from_obs is None:
        raise ValueError(f"{env_id}: its observation does not hold the simulator state")
    if obs.shape[-1] != env.obs_dim:
        raise ValueError(
            f"{env_id}: observations have {obs.shape[-1]} dims, the env has {env.obs_dim}"
        )
    out = np.full_like(obs, np.nan)
    reward = np.full(obs.shape[:-1], np.nan)
    terminated = np.zeros(obs.shape[:-1], bool)
    rows = np.flatnonzero(np.isfinite(obs).all(-1) & np.isfinite(action).all(-1))
    for start in range(0, len(rows), JAX_ROWS_PER_CALL):
        chunk = rows[start : start + JAX_ROWS_PER_CALL]
        padded = np.resize(chunk, JAX_ROWS_PER_CALL)  # repeats rows to fill the one shape
        _, *found, _ = step(jax.vmap(env.state_from_obs)(obs[padded]), action[padded])
        out[chunk], reward[chunk], terminated[chunk] = (np.asarray(x)[: len(chunk)] for x in found)
    return out, reward, terminated


def simulator_path(env_id: str) -> str:
    """ "jax" (`jax_env_step`) or "mujoco" (`mujoco_step`) for a MuJoCo env: the JAX env on an
    accelerator where one steps like gymnasium's (jax_env.has_jax_env), MuJoCo C on the CPU,
    where it measured faster (docs/jax_envs.md)."""
    if jax.default_backend() != "cpu" and has_jax_env(env_id):
        return "jax"
    return "mujoco"


def antmaze_step(env_id: str, obs: np.ndarray, action: np.ndarray):
    """gymnasium-robotics' AntMaze set to each row's state and stepped with that row's action:
    (next_obs, reward, terminated), next_obs in the flat layout (`flatten_observations`).

    The flat observation [achieved_goal (x, y), desired_goal, observation] holds the whole
    state: the ant's qpos = [x, y, observation[:13]], its qvel = observation[13:] (the layout
    Farama's D4RL/antmaze generation script stores as qpos/qvel), and the goal. The env's own
    `step` then moves the ant, pays the sparse reward and decides termination (continuing task:
    never). next_obs carries the goal of the row: a continuing task with reset_target would draw
    a new one at random after reaching it, which no simulator can reproduce.
    """
    env = make_env(env_id, flat_observations=False)
    maze = env.unwrapped
    obs, action = np.asarray(obs, np.float64), np.asarray(action, np.float64)
    if obs.shape[-1] != gym.spaces.flatdim(env.observation_space):
        env.close()
        raise ValueError(
            f"{env_id}: observations have {obs.shape[-1]} dims, the env has "
            f"{gym.spaces.flatdim(env.observation_space)}"
        )
    env.reset(seed=0)
    ant = maze.ant_env
    out = np.full_like(obs, np.nan)
    reward = np.full(obs.shape[:-1], np.nan)
    terminated = np.zeros(obs.shape[:-1], bool)
    for i in np.flatnonzero(np.isfinite(obs).all(-1) & np.isfinite(action).all(-1)):
        xy, goal, rest = obs[i, :2], obs[i, 2:4], obs[i, 4:]
        ant.set_state(np.concatenate([xy, rest[: ant.model.nq - 2]]), rest[ant.model.nq - 2 :])
        ant.data.qacc_warmstart[:] = 0.0
        maze.goal = goal.copy()
        next_obs, reward[i], terminated[i], _, _ = maze.step(action[i])
        out[i] = flatten_observations(as_batch({**next_obs, "desired_goal": goal}))[0]
    env.close()
    return out, reward, terminated


def _qpos_qvel_layout(env) -> tuple[int, int, int] | None:
    """(skipped qpos entries, nq, nv) if the observation is exactly [qpos[k:], qvel], else None."""
    structure = getattr(env, "observation_structure", None)
    if not structure:
        return None
    nq, nv = env.model.nq, env.model.nv
    skipped = structure.get("skipped_qpos", 0)
    extra = {k: v for k, v in structure.items() if k not in ("skipped_qpos", "qpos", "qvel") and v}
    if extra or structure.get("qpos") != nq - skipped or structure.get("qvel") != nv:
        return None
    return skipped, nq, nv


def simulate(env_id: str, obs: np.ndarray, action: np.ndarray):
    """What the environment returns after `action` (env units) from a state showing `obs`:
    (next_obs, reward, terminated) as float64 / bool arrays, or None where the state cannot be set.

    - Pendulum-v1: gymnasium's closed-form update (`pendulum_step`); it never terminates.
    - MuJoCo envs whose observation is [qpos without its first k entries, qvel] (gymnasium's
      `observation_structure`: Hopper, Walker2d, HalfCheetah, Swimmer, InvertedPendulum, ...):
      the skipped entries are the root's x (and y) position, on which the dynamics do not depend,
      so setting them to 0 recovers the full state (`mujoco_step`, or `jax_env_step` where
      `simulator_path` says).
    - gymnasium-robotics' AntMaze: the flat observation holds qpos, qvel and the goal
      (`antmaze_step`).
    - Any other env: None, so the dynamics error is null in the generator's health and in
      diagnose, and `--online.relabel simulator` is refused. That includes gymnasium-robotics'
      Adroit, whose observation is not the simulator state (hand joints without the object's
      full pose and velocities).
    """
    obs, action = np.asarray(obs, np.float64), np.asarray(action, np.float64)
    if env_id.startswith("Pendulum-"):
        next_obs, reward = pendulum_step(obs, action)
        return (
            np.asarray(next_obs, np.float64),
            np.asarray(reward, np.float64),
            np.zeros(obs.shape[:-1], bool),
        )
    if _is_antmaze(env_id):
        return antmaze_step(env_id, obs, action)
    if mujoco_supported(env_id):
        step = jax_env_step if simulator_path(env_id) == "jax" else mujoco_step
        return step(env_id, obs, action)
    return None


def can_simulate(env_id: str) -> bool:
    """Whether `simulate` can set this env's state from an observation."""
    return env_id.startswith("Pendulum-") or _is_antmaze(env_id) or mujoco_supported(env_id)


def _is_antmaze(env_id: str) -> bool:
    """A gymnasium-robotics AntMaze id that can be made here (the package is installed)."""
    if not env_id.startswith("AntMaze_"):
        return False
    try:
        register_env_package(env_id)
        gym.spec(env_id)
    except (ValueError, gym.error.Error):
        return False
    return True


def true_next_obs(env_id: str, obs: np.ndarray, action: np.ndarray) -> np.ndarray | None:
    """The next observation `simulate` gives, or None where the state cannot be set."""
    result = simulate(env_id, obs, action)
    return None if result is None else result[0]


def dynamics_error(
    env_id: str, obs: np.ndarray, action: np.ndarray, next_obs: np.ndarray
) -> float | None:
    """Mean |next_obs - s'_true| (Euclidean, raw units, `action` in env units); None where
    `true_next_obs` is. NaN for no rows or a diverged (non-finite) row."""
    true_next = true_next_obs(env_id, obs, action)
    if true_next is None:
        return None
    gap = np.linalg.norm(np.asarray(next_obs, np.float64) - true_next, axis=-1)
    return float(gap.mean()) if len(gap) else float("nan")

"""Gymnasium environments: creation, vector envs (one sub-env per seed), evaluation, action
units (`ActionScale`), the known termination rules in jnp (to label synthetic transitions), and
simulators set to an observation.

Observation layout: agents see flat vectors. Envs with Dict observations (gymnasium-robotics'
AntMaze) are flattened by data/observations.py's `flatten_observations`, the one function both
the dataset loader (Minari stores the dict) and the env wrapper use.
"""

from __future__ import annotations

from collections.abc import Callable

import gymnasium as gym
import jax.numpy as jnp
import numpy as np

from edis_jax.data.env_packages import register_env_package
from edis_jax.data.observations import as_batch, flatten_observations

TerminationFn = Callable[[jnp.ndarray, jnp.ndarray, jnp.ndarray], jnp.ndarray]


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


# ------------------------------------------------------------------ simulators set to an obs


# gymnasium's Pendulum-v1 constants (classic_control/pendulum.py).
PENDULUM = {"g": 10.0, "m": 1.0, "l": 1.0, "dt": 0.05, "max_speed": 8.0, "max_torque": 2.0}


def pendulum_step(obs: jnp.ndarray, action: jnp.ndarray):
    """Pendulum-v1's step from obs = (cos th, sin th, thdot) under torque `action` (clipped to
    +-max_torque like the env): (next_obs, reward). Vectorised over leading axes."""
    p = PENDULUM
    th = jnp.arctan2(obs[..., 1], obs[..., 0])
    thdot = obs[..., 2]
    u = jnp.clip(action[..., 0], -p["max_torque"], p["max_torque"])
    # th is already in [-pi, pi] (arctan2): gymnasium's angle_normalize leaves it unchanged.
    reward = -(th**2 + 0.1 * thdot**2 + 0.001 * u**2)
    accel = 3 * p["g"] / (2 * p["l"]) * jnp.sin(th) + 3.0 / (p["m"] * p["l"] ** 2) * u
    new_thdot = jnp.clip(thdot + accel * p["dt"], -p["max_speed"], p["max_speed"])
    new_th = th + new_thdot * p["dt"]
    return jnp.stack([jnp.cos(new_th), jnp.sin(new_th), new_thdot], axis=-1), reward


def mujoco_supported(env_id: str) -> bool:
    """Whether `mujoco_step` can rebuild the simulator state from this env's observation."""
    try:
        env = gym.make(env_id)
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
    env = gym.make(env_id).unwrapped
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
      so setting them to 0 recovers the full state (`mujoco_step`).
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
        return mujoco_step(env_id, obs, action)
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

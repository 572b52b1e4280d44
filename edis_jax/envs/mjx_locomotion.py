"""gymnasium's v5 MuJoCo locomotion tasks on MJX (MuJoCo's JAX port): Hopper, Walker2d,
HalfCheetah and Ant as JAX-native envs (jax_env.JaxEnv).

The physics is gymnasium's own: the model is the one `gym.make` loads (its XML file and what the
constructor sets), put on the device with `mjx.put_model`; the frame skip is the env's. What the
task code adds (observation layout, reward terms, health, reset noise) is written out in `TASKS`
from gymnasium's constructor defaults, each cited; a test checks them against gymnasium's
attributes. Every model's `<option>` is within what MJX supports: Newton solver, pyramidal
cones, RK4 integrator (Hopper, Walker2d, Ant) or Euler (HalfCheetah).

Hopper, Walker2d and HalfCheetah step like gymnasium's to 1e-12 in 64-bit. Ant-v5 does not
(jax_env.INEXACT_ENV_IDS): its task code is exact on MuJoCo C's own states, but MJX 3.17's RK4
with a free joint differs from MuJoCo 4.0's by about 1e-6 per substep without contact, and its
contacts (Ant's geoms have a margin) by up to 1e-2 per step (docs/jax_envs.md).

MJX computes in JAX's default float dtype. The contact fields of `mjx.put_data` become int64
under `mjx.step` in 64-bit, which breaks a scan carry, so states are `make_data` with qpos, qvel
and the rest replaced.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np
from mujoco import mjx

from edis_jax.envs.gym_envs import make_env
from edis_jax.envs.jax_env import EnvState, JaxEnv, elapsed_steps, float_dtype

HealthFn = Callable[[jax.Array, jax.Array], jax.Array]


def _hopper_healthy(qpos, qvel):
    # hopper_v5.py is_healthy: qpos[1:3] = (z, angle), state_vector()[2:] = (qpos[2:], qvel);
    # defaults healthy_state_range (-100, 100), healthy_z_range (0.7, inf), healthy_angle_range
    # (-0.2, 0.2), all open intervals.
    state = jnp.concatenate([qpos[2:], qvel])
    z, angle = qpos[1], qpos[2]
    return jnp.all((state > -100.0) & (state < 100.0)) & (z > 0.7) & (angle > -0.2) & (angle < 0.2)


def _walker2d_healthy(qpos, qvel):
    # walker2d_v5.py is_healthy: healthy_z_range (0.8, 2.0), healthy_angle_range (-1, 1), open.
    z, angle = qpos[1], qpos[2]
    return (z > 0.8) & (z < 2.0) & (angle > -1.0) & (angle < 1.0)


def _ant_healthy(qpos, qvel):
    # ant_v5.py is_healthy: a finite state_vector() and healthy_z_range (0.2, 1.0), closed.
    finite = jnp.all(jnp.isfinite(qpos)) & jnp.all(jnp.isfinite(qvel))
    return finite & (qpos[2] >= 0.2) & (qpos[2] <= 1.0)


@dataclasses.dataclass(frozen=True)
class Task:
    """What a gymnasium v5 locomotion env's task code adds to its model (constructor defaults).

    reward = forward_reward_weight * forward velocity + healthy_reward * healthy
             - ctrl_cost_weight * |action|^2 - contact_cost_weight * |clipped cfrc_ext|^2
    The forward velocity is (x after - x before) / dt, x being qpos[0], or for Ant the main body's
    xpos (ant_v5.py's main_body = 1, the torso)."""

    frame_skip: int
    forward_reward_weight: float
    ctrl_cost_weight: float
    reset_noise_scale: float
    # Reset: qpos += U(-scale, scale); qvel += U(-scale, scale), or scale * N(0, 1) if normal.
    normal_qvel_noise: bool
    # Observation: qpos without its first `skipped_qpos` entries (exclude_current_positions_
    # from_observation), qvel clipped to +-velocity_clip (None: not clipped), then for Ant the
    # contact forces cfrc_ext[1:] clipped to contact_force_range (include_cfrc_ext_in_observation).
    skipped_qpos: int
    velocity_clip: float | None
    healthy: HealthFn | None = None  # None: always healthy, no healthy reward (HalfCheetah)
    healthy_reward: float = 0.0
    terminate_when_unhealthy: bool = False
    contact_cost_weight: float = 0.0
    contact_force_range: tuple[float, float] | None = None
    forward_from_body: int | None = None  # Ant: the main body's xpos, not qpos[0]


TASKS: dict[str, Task] = {
    # hopper_v5.py HopperEnv.__init__ defaults.
    "Hopper-v5": Task(
        frame_skip=4,
        forward_reward_weight=1.0,
        ctrl_cost_weight=1e-3,
        reset_noise_scale=5e-3,
        normal_qvel_noise=False,
        skipped_qpos=1,
        velocity_clip=10.0,
        healthy=_hopper_healthy,
        healthy_reward=1.0,
        terminate_when_unhealthy=True,
    ),
    # walker2d_v5.py Walker2dEnv.__init__ defaults (its model walker2d_v5.xml gives both feet
    # friction 1.9).
    "Walker2d-v5": Task(
        frame_skip=4,
        forward_reward_weight=1.0,
        ctrl_cost_weight=1e-3,
        reset_noise_scale=5e-3,
        normal_qvel_noise=False,
        skipped_qpos=1,
        velocity_clip=10.0,
        healthy=_walker2d_healthy,
        healthy_reward=1.0,
        terminate_when_unhealthy=True,
    ),
    # half_cheetah_v5.py HalfCheetahEnv.__init__ defaults: no health, never terminates.
    "HalfCheetah-v5": Task(
        frame_skip=5,
        forward_reward_weight=1.0,
        ctrl_cost_weight=0.1,
        reset_noise_scale=0.1,
        normal_qvel_noise=True,
        skipped_qpos=1,
        velocity_clip=None,
    ),
    # ant_v5.py AntEnv.__init__ defaults.
    "Ant-v5": Task(
        frame_skip=5,
        forward_reward_weight=1.0,
        ctrl_cost_weight=0.5,
        reset_noise_scale=0.1,
        normal_qvel_noise=True,
        skipped_qpos=2,
        velocity_clip=None,
        healthy=_ant_healthy,
        healthy_reward=1.0,
        terminate_when_unhealthy=True,
        contact_cost_weight=5e-4,
        contact_force_range=(-1.0, 1.0),
        forward_from_body=1,
    ),
}


def make(env_id: str, max_episode_steps: int) -> JaxEnv:
    """The MJX version of a `TASKS` env, with gymnasium's model and time limit."""
    task = TASKS[env_id]
    gym_env = make_env(env_id)
    source = gym_env.unwrapped
    if source.frame_skip != task.frame_skip:
        raise ValueError(
            f"{env_id}: gymnasium's frame skip is {source.frame_skip}, not {task.frame_skip}"
        )
    mj_model = source.model
    model = mjx.put_model(mj_model)
    dtype = float_dtype()
    init_qpos = jnp.asarray(source.init_qpos, dtype)
    init_qvel = jnp.asarray(source.init_qvel, dtype)
    obs_dim = int(source.observation_space.shape[0])
    action_dim = int(source.action_space.shape[0])
    nq, nv = mj_model.nq, mj_model.nv
    dt = mj_model.opt.timestep * task.frame_skip
    gym_env.close()

    # make_data, not put_data (module docstring); time strongly typed, or a scan carrying it
    # would compile twice. Every state is this one with its own qpos, qvel, ...
    blank = mjx.make_data(model)
    blank = blank.replace(time=jnp.zeros((), dtype))

    def with_state(qpos, qvel):
        data = blank.replace(qpos=qpos, qvel=qvel)
        if task.forward_from_body is not None:
            # gymnasium's set_state ends with mj_forward; the body positions it computes are
            # what the first step's reward reads as "before". MJX's kinematics also normalises
            # the quaternions in qpos, MuJoCo C's does not: qpos stays as set (reset noise
            # leaves the free joint's quaternion off unit length, and the observation shows it).
            data = mjx.kinematics(model, data).replace(qpos=qpos)
        return data

    def reset(key):
        key, k_qpos, k_qvel = jax.random.split(key, 3)
        scale = task.reset_noise_scale
        qpos = init_qpos + jax.random.uniform(k_qpos, (nq,), dtype, -scale, scale)
        if task.normal_qvel_noise:
            qvel = init_qvel + scale * jax.random.normal(k_qvel, (nv,), dtype)
        else:
            qvel = init_qvel + jax.random.uniform(k_qvel, (nv,), dtype, -scale, scale)
        data = with_state(qpos, qvel)
        return EnvState(data, jnp.int32(0), key), _observation(task, data)

    def step(state, action):
        action = jnp.asarray(action, dtype)
        data = state.physics.replace(ctrl=action)  # MuJoCo clamps ctrl to the ctrlrange
        before = forward_position(task, data)
        data = jax.lax.fori_loop(0, task.frame_skip, lambda _, d: mjx.step(model, d), data)
        if task.contact_force_range is not None:
            # gymnasium's MujocoEnv calls mj_rnePostConstraint after stepping, to fill cfrc_ext.
            data = mjx.rne_postconstraint(model, data)
        obs, reward, terminated = outcome(task, data, before, action, dt)
        steps = state.steps + 1
        truncated = steps >= max_episode_steps
        return state.replace(physics=data, steps=steps), obs, reward, terminated, truncated

    no_key = jax.random.PRNGKey(0)

    def state_from(env: gym.Env):
        # Host (numpy) copies of MuJoCo's live buffers, which its next step overwrites: the
        # fidelity checks take thousands of these, and a device array per field cost 2 ms each.
        mj_data = env.unwrapped.data

        def field(name):
            return np.array(getattr(mj_data, name), dtype)

        data = blank.replace(
            **{name: field(name) for name in ("qpos", "qvel", "act", "ctrl", "qacc_warmstart")},
            time=field("time"),
            # Ant's reward reads the body positions the last step left (forward_from_body).
            xpos=field("xpos"),
        )
        # Ant's observation holds the contact forces the last step left.
        data = data.replace(_impl=data._impl.replace(cfrc_ext=field("cfrc_ext")))
        return EnvState(data, np.int32(elapsed_steps(env)), no_key)

    def state_from_obs(obs):
        # The observation is [qpos without its root x, qvel] (no contact forces, no clipped
        # velocities in view): the root x does not change the dynamics, so 0 stands in for it.
        obs = jnp.asarray(obs, dtype)
        shown = nq - task.skipped_qpos
        qpos = jnp.concatenate([jnp.zeros(task.skipped_qpos, dtype), obs[:shown]])
        data = with_state(qpos, obs[shown : shown + nv])
        return EnvState(data, jnp.int32(0), jax.random.PRNGKey(0))

    return JaxEnv(
        env_id=env_id,
        obs_dim=obs_dim,
        action_dim=action_dim,
        max_episode_steps=max_episode_steps,
        reset=reset,
        step=step,
        state_from=state_from,
        # Ant's observation holds contact forces, not the whole state's layout check of
        # simulators.mujoco_step: the simulator is set from observations where that check passes.
        state_from_obs=None if task.contact_force_range is not None else state_from_obs,
    )


def outcome(task: Task, data, before, action, dt: float):
    """What the task code makes of the simulator state after a step: (obs, reward, terminated).
    `before` is `forward_position` before the step. Split from the physics so that a test can
    check it on MuJoCo C's own states."""
    velocity = (forward_position(task, data) - before) / dt
    healthy = jnp.bool_(True) if task.healthy is None else task.healthy(data.qpos, data.qvel)
    reward = (
        task.forward_reward_weight * velocity
        + task.healthy_reward * healthy
        - task.ctrl_cost_weight * jnp.sum(jnp.square(action))
    )
    if task.contact_force_range is not None:
        reward = reward - task.contact_cost_weight * jnp.sum(
            jnp.square(_contact_forces(task, data))
        )
    terminated = jnp.bool_(task.terminate_when_unhealthy) & ~healthy
    return _observation(task, data), reward, terminated


def forward_position(task: Task, data):
    """x: qpos[0], or the main body's xpos (Ant)."""
    if task.forward_from_body is None:
        return data.qpos[0]
    return data.xpos[task.forward_from_body, 0]


def _contact_forces(task: Task, data):
    low, high = task.contact_force_range
    return jnp.clip(data._impl.cfrc_ext[1:], low, high).ravel()


def _observation(task: Task, data):
    velocity = data.qvel
    if task.velocity_clip is not None:
        velocity = jnp.clip(velocity, -task.velocity_clip, task.velocity_clip)
    parts = [data.qpos[task.skipped_qpos :], velocity]
    if task.contact_force_range is not None:
        parts.append(_contact_forces(task, data))
    return jnp.concatenate(parts)

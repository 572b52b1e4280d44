"""Pendulum-v1 in plain jnp: gymnasium's closed-form update (classic_control/pendulum.py) as a
function of an observation (`pendulum_step`, the simulator) and as a JAX-native env (`make`)."""

from __future__ import annotations

import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np

from edis_jax.envs.jax_env import EnvState, JaxEnv, elapsed_steps, float_dtype

# gymnasium's Pendulum-v1 constants (classic_control/pendulum.py: PendulumEnv.__init__ defaults,
# g = 10.0; reset draws theta in [-DEFAULT_X, DEFAULT_X] = [-pi, pi] and theta_dot in
# [-DEFAULT_Y, DEFAULT_Y] = [-1, 1]).
PENDULUM = {"g": 10.0, "m": 1.0, "l": 1.0, "dt": 0.05, "max_speed": 8.0, "max_torque": 2.0}
RESET_HIGH = (np.pi, 1.0)


def pendulum_step(obs: jnp.ndarray, action: jnp.ndarray):
    """Pendulum-v1's step from obs = (cos th, sin th, thdot) under torque `action` (clipped to
    +-max_torque like the env): (next_obs, reward). Vectorised over leading axes."""
    th = jnp.arctan2(obs[..., 1], obs[..., 0])
    # th is already in [-pi, pi] (arctan2): gymnasium's angle_normalize leaves it unchanged.
    (new_th, new_thdot), reward = _dynamics(th, obs[..., 2], action[..., 0], th)
    return jnp.stack([jnp.cos(new_th), jnp.sin(new_th), new_thdot], axis=-1), reward


def make(max_episode_steps: int) -> JaxEnv:
    """Pendulum-v1 as a JAX-native env. The state is gymnasium's (theta, theta_dot), theta not
    wrapped, as `PendulumEnv.state` keeps it; it never terminates."""
    no_key = jax.random.PRNGKey(0)  # a state set from outside draws nothing: reset draws anew

    def reset(key):
        key, draw = jax.random.split(key)
        high = jnp.asarray(RESET_HIGH, float_dtype())
        physics = jax.random.uniform(draw, (2,), float_dtype(), -high, high)
        return EnvState(physics, jnp.int32(0), key), _observation(physics)

    def step(state, action):
        th, thdot = state.physics[0], state.physics[1]
        u = jnp.asarray(action, float_dtype())[0]
        (new_th, new_thdot), reward = _dynamics(th, thdot, u, _angle_normalize(th))
        physics = jnp.stack([new_th, new_thdot])
        steps = state.steps + 1
        truncated = steps >= max_episode_steps
        state = state.replace(physics=physics, steps=steps)
        return state, _observation(physics), reward, jnp.bool_(False), truncated

    def state_from(env: gym.Env):
        physics = np.array(env.unwrapped.state, float_dtype())
        return EnvState(physics, np.int32(elapsed_steps(env)), no_key)

    def state_from_obs(obs):
        obs = jnp.asarray(obs, float_dtype())
        physics = jnp.stack([jnp.arctan2(obs[1], obs[0]), obs[2]])
        return EnvState(physics, jnp.int32(0), no_key)

    return JaxEnv(
        env_id="Pendulum-v1",
        obs_dim=3,
        action_dim=1,
        max_episode_steps=max_episode_steps,
        reset=reset,
        step=step,
        state_from=state_from,
        state_from_obs=state_from_obs,
    )


def _dynamics(th, thdot, u, th_for_cost):
    """gymnasium's PendulumEnv.step: ((new_th, new_thdot), reward)."""
    p = PENDULUM
    u = jnp.clip(u, -p["max_torque"], p["max_torque"])
    reward = -(th_for_cost**2 + 0.1 * thdot**2 + 0.001 * u**2)
    accel = 3 * p["g"] / (2 * p["l"]) * jnp.sin(th) + 3.0 / (p["m"] * p["l"] ** 2) * u
    new_thdot = jnp.clip(thdot + accel * p["dt"], -p["max_speed"], p["max_speed"])
    return (th + new_thdot * p["dt"], new_thdot), reward


def _angle_normalize(x):
    # gymnasium's angle_normalize: ((x + pi) % (2 pi)) - pi.
    return ((x + jnp.pi) % (2 * jnp.pi)) - jnp.pi


def _observation(physics):
    return jnp.stack([jnp.cos(physics[0]), jnp.sin(physics[0]), physics[1]])

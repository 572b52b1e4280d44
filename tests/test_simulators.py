"""Simulators set to an observation: real transitions are reproduced, Pendulum's closed form
matches gymnasium, and envs without a settable state give None."""

import gymnasium as gym
import numpy as np
import pytest

from edis_jax.envs import simulators


def _rollout(env_id: str, steps: int, seed: int = 0):
    """Real transitions under random actions (episodes reset on termination or truncation)."""
    env = gym.make(env_id)
    env.action_space.seed(seed)
    obs, _ = env.reset(seed=seed)
    rows = []
    for _ in range(steps):
        action = env.action_space.sample()
        next_obs, _, terminated, truncated, _ = env.step(action)
        rows.append((obs, action, next_obs))
        obs = env.reset()[0] if terminated or truncated else next_obs
    env.close()
    return tuple(np.asarray(x, np.float32) for x in zip(*rows, strict=True))


@pytest.mark.parametrize("env_id", ["Hopper-v5", "Walker2d-v5", "HalfCheetah-v5"])
def test_mujoco_real_transitions_are_reproduced(env_id, tmp_path, monkeypatch):
    monkeypatch.chdir(
        tmp_path
    )  # MuJoCo writes a deprecation warning on HalfCheetah to ./MUJOCO_LOG.TXT
    obs, action, next_obs = _rollout(env_id, 200)
    # Hopper and Walker2d observe velocities clipped to +-10: such states cannot be rebuilt
    # (random actions make Walker2d hit the clip often), so those rows are left out here.
    nq = gym.make(env_id).unwrapped.model.nq
    exact = (np.abs(obs[:, nq - 1 :]) < 10).all(1)
    assert exact.sum() >= 30
    # Only float32 storage separates the rebuilt state from the real one: measured <5e-6.
    assert simulators.dynamics_error(env_id, obs[exact], action[exact], next_obs[exact]) < 1e-4


def test_dynamics_error_measures_the_next_state_gap():
    obs, action, next_obs = _rollout("Hopper-v5", 100, seed=3)
    offset = np.zeros(obs.shape[1], np.float32)
    offset[[0, 7]] = (0.3, 0.4)  # a gap of Euclidean length 0.5 in every row
    assert simulators.dynamics_error("Hopper-v5", obs, action, next_obs + offset) == pytest.approx(
        0.5, abs=1e-4
    )


def test_pendulum_closed_form_matches_gymnasium():
    rng = np.random.default_rng(2)
    env = gym.make("Pendulum-v1").unwrapped
    env.reset(seed=0)
    obs, action, next_obs, reward = [], [], [], []
    for _ in range(300):
        # Wide ranges on purpose: torques beyond +-2 and speeds near +-8 exercise both clips.
        env.state = np.array([rng.uniform(-4, 4), rng.uniform(-8, 8)])
        obs.append(env._get_obs())
        action.append(rng.uniform(-3, 3, size=1))
        step = env.step(action[-1])
        next_obs.append(step[0])
        reward.append(step[1])
    obs, action, next_obs, reward = map(np.asarray, (obs, action, next_obs, reward))
    predicted, predicted_reward = simulators.pendulum_step(obs, action)
    np.testing.assert_allclose(np.asarray(predicted), next_obs, atol=1e-5)
    np.testing.assert_allclose(np.asarray(predicted_reward), reward, atol=1e-4)
    assert simulators.dynamics_error("Pendulum-v1", obs, action, next_obs) < 1e-5
    assert simulators.dynamics_error("Pendulum-v1", obs, action * 0, next_obs) > 0.01


@pytest.mark.parametrize("env_id", ["CartPole-v1", "MountainCarContinuous-v0", "NoSuchEnv-v0"])
def test_dynamics_error_is_unavailable_for_other_envs(env_id):
    assert simulators.true_next_obs(env_id, np.zeros((2, 2)), np.zeros((2, 1))) is None
    assert (
        simulators.dynamics_error(env_id, np.zeros((2, 2)), np.zeros((2, 1)), np.zeros((2, 2)))
        is None
    )


def test_mujoco_simulate_gives_the_real_reward_and_termination():
    obs, action, next_obs = _rollout("Hopper-v5", 300, seed=5)
    env = gym.make("Hopper-v5")
    env.reset(seed=5)
    rewards, terms = [], []
    for a in action:  # the same rollout again, keeping reward and terminated this time
        _, r, term, trunc, _ = env.step(a)
        rewards.append(r)
        terms.append(term)
        if term or trunc:
            env.reset()
    env.close()
    exact = (np.abs(obs[:, 5:]) < 10).all(1)  # velocities at the +-10 clip cannot be rebuilt
    sim_next, sim_reward, sim_term = simulators.simulate("Hopper-v5", obs[exact], action[exact])
    np.testing.assert_allclose(sim_next, next_obs[exact], atol=1e-4)
    np.testing.assert_allclose(sim_reward, np.asarray(rewards)[exact], atol=1e-4)
    np.testing.assert_array_equal(sim_term, np.asarray(terms)[exact])
    assert np.asarray(terms).any(), "the rollout should end at least one episode by termination"


def test_non_finite_rows_give_nan_not_a_simulator_crash():
    obs, action, next_obs = _rollout("Hopper-v5", 4)
    obs[1, 0] = np.nan
    true_next = simulators.true_next_obs("Hopper-v5", obs, action)
    assert np.isnan(true_next[1]).all() and np.isfinite(true_next[[0, 2, 3]]).all()

"""Environments: vector envs keep truncation apart from termination, evaluation runs whole
episodes, and the jnp termination rules agree with the real envs."""

import gymnasium as gym
import numpy as np
import pytest

from edis_jax import envs
from edis_jax.envs import gym_envs


def test_vector_env_keeps_truncation_distinct_from_termination():
    # Pendulum never terminates and is truncated at 200 steps: the last step must say
    # truncated, not terminated, and keep the true final observation in info.
    env = envs.make_vector_env("Pendulum-v1", 2)
    obs, _ = env.reset(seed=0)
    zero = np.zeros((2, 1), np.float32)
    for t in range(200):
        obs, _, terminated, truncated, info = env.step(zero)
        assert not terminated.any()
        assert truncated.all() == (t == 199)
    assert "final_obs" in info and not np.allclose(info["final_obs"][0], obs[0])
    env.close()

    # Hopper under random actions falls: termination, without truncation, within 1000 steps.
    env = envs.make_vector_env("Hopper-v5", 1)
    env.reset(seed=0)
    env.action_space.seed(0)
    for _ in range(1000):
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        if terminated[0]:
            break
    assert terminated[0] and not truncated[0]
    env.close()


def test_evaluate_runs_full_episodes_with_per_env_seeds():
    policy = lambda obs: np.zeros((len(obs), 3), np.float32)  # noqa: E731
    returns = envs.evaluate(policy, "Hopper-v5", num_envs=2, episodes=2, seed=7)
    assert returns.shape == (2, 2)
    # Sub-env i is seeded with seed + i: its first episode equals a single env reset that way.
    for i in range(2):
        env = gym.make("Hopper-v5")
        env.reset(seed=7 + i)
        total, done = 0.0, False
        while not done:
            _, r, term, trunc, _ = env.step(np.zeros(3, np.float32))
            total, done = total + r, term or trunc
        assert returns[i, 0] == pytest.approx(total, rel=1e-9)


def test_an_episode_succeeds_when_any_step_reports_success():
    # Sub-env 0 reports success mid-episode; sub-env 1 on the step that ends its episode, whose
    # info (SAME_STEP autoreset) sits in final_info while the top level holds the reset's.
    info = {"success": np.array([True, False]), "_success": np.array([True, True])}
    info["final_info"] = {"success": np.array([False, True]), "_success": np.array([False, True])}
    ended = np.array([False, True])
    np.testing.assert_array_equal(envs.step_successes(info, ended), [True, True])
    # A sub-env that did not report (mask False) or an env without "success": no success.
    masked = {"success": np.array([True, True]), "_success": np.array([False, True])}
    np.testing.assert_array_equal(envs.step_successes(masked, np.zeros(2, bool)), [False, True])
    np.testing.assert_array_equal(envs.step_successes({}, np.ones(2, bool)), [False, False])


def test_episode_outcomes_returns_are_evaluates():
    policy = lambda obs: np.zeros((len(obs), 1), np.float32)  # noqa: E731
    returns, successes = envs.episode_outcomes(policy, "Pendulum-v1", 2, 1, seed=3)
    np.testing.assert_array_equal(returns, envs.evaluate(policy, "Pendulum-v1", 2, 1, seed=3))
    assert successes.shape == (2, 1) and not successes.any()  # Pendulum reports no success


def _transitions_around_the_thresholds(env_id: str, n: int, seed: int):
    """One-step transitions from states whose height and torso angle are drawn around the
    health thresholds, so both healthy and unhealthy next states occur for each rule."""
    rng = np.random.default_rng(seed)
    env = gym.make(env_id)
    env.action_space.seed(seed)
    obs_rows, act_rows, next_rows, terms = [], [], [], []
    env.reset(seed=seed)
    base = env.unwrapped
    for _ in range(n):
        base.reset(seed=int(rng.integers(1 << 30)))
        qpos, qvel = base.data.qpos.copy(), base.data.qvel.copy()
        qpos[1] = rng.uniform(0.5, 2.2)  # height, across the z thresholds
        qpos[2] = rng.uniform(-1.2, 1.2)  # torso angle, across the angle thresholds
        base.set_state(qpos, qvel)
        obs = base._get_obs()
        a = env.action_space.sample()
        next_obs, _, term, _, _ = env.step(a)
        obs_rows.append(obs), act_rows.append(a), next_rows.append(next_obs), terms.append(term)
    return np.array(obs_rows), np.array(act_rows), np.array(next_rows), np.array(terms)


@pytest.mark.parametrize("env_id", ["Hopper-v5", "Walker2d-v5"])
def test_termination_fn_agrees_with_env(env_id):
    obs, act, nxt, term = _transitions_around_the_thresholds(env_id, 400, seed=0)
    z, angle = nxt[:, 0], np.abs(nxt[:, 1])
    z_low, z_high, angle_max = (
        (0.7, np.inf, 0.2) if env_id.startswith("Hopper") else (0.8, 2.0, 1.0)
    )
    # Each clause of the rule decides some transitions, and healthy ones occur too.
    assert (term & (z <= z_low) & (angle < angle_max)).sum() > 5
    assert (term & (z > z_low) & (angle >= angle_max)).sum() > 5
    if np.isfinite(z_high):
        assert (term & (z >= z_high) & (angle < angle_max)).sum() > 5
    assert (~term).sum() > 20
    predicted = np.asarray(envs.termination_fn(env_id)(obs, act, nxt))
    assert predicted.shape == term.shape
    np.testing.assert_array_equal(predicted, term.astype(np.float32))


def test_termination_fn_catalogue():
    x = np.zeros((4, 17))
    assert np.all(np.asarray(envs.termination_fn("HalfCheetah-v5")(x, None, x)) == 0)
    assert envs.termination_fn("Pendulum-v1") is not None
    assert envs.termination_fn("CartPole-v1") is None
    assert envs.termination_fn("Hopper-v2") is None  # mujoco-py era rules are not encoded


def test_a_run_is_told_when_its_synthetic_rows_cannot_terminate():
    note = envs.missing_rule_note("Hopper-v2", terminal_rows=371)
    assert "371 rows" in note and "Hopper-v2" in note and "never terminal" in note
    assert "\n" not in note
    assert envs.missing_rule_note("Hopper-v5", 371) is None  # the rule is known
    assert envs.missing_rule_note("CartPole-v1", 0) is None  # nothing to miss


def test_unknown_env_id_is_a_clear_error():
    with pytest.raises(ValueError, match="cannot make gymnasium env 'Hopperz-v5'"):
        envs.make_env("Hopperz-v5")


def test_a_missing_mujoco_renderer_is_a_clear_error(monkeypatch):
    # What importing MuJoCo raises with MUJOCO_GL=egl on a machine without EGL (seen on a GPU
    # machine): PyOpenGL finds no EGL platform.
    def factory():
        raise AttributeError("'NoneType' object has no attribute 'eglQueryString'")

    monkeypatch.setenv("MUJOCO_GL", "egl")
    with pytest.raises(ValueError, match="renderer MUJOCO_GL=egl .*unset MUJOCO_GL"):
        gym_envs._make(factory, "Hopper-v5")
    monkeypatch.delenv("MUJOCO_GL")
    with pytest.raises(AttributeError):  # not a renderer problem: the error as it came
        gym_envs._make(factory, "Hopper-v5")

    def broken():  # an unrelated bug in an env, with MUJOCO_GL set
        raise AttributeError("'Hopper' object has no attribute 'frame_skip'")

    monkeypatch.setenv("MUJOCO_GL", "egl")
    with pytest.raises(AttributeError, match="frame_skip"):
        gym_envs._make(broken, "Hopper-v5")


def test_action_units_map_the_agents_box_to_the_env_bounds():
    # Pendulum's torque spans [-2, 2]; Hopper's box is already [-1, 1] (identity maps).
    scale = envs.ActionScale("Pendulum-v1")
    unit = np.array([[-1.0], [0.0], [0.25], [1.0]], np.float32)
    np.testing.assert_array_equal(scale.to_env(unit), [[-2.0], [0.0], [0.5], [2.0]])
    np.testing.assert_allclose(scale.to_unit(scale.to_env(unit)), unit, atol=1e-7)
    np.testing.assert_allclose(scale.to_env_float64(unit), scale.to_env(unit), atol=1e-6)
    hopper = envs.ActionScale("Hopper-v5")
    action = np.array([0.3, -0.7, 1.0], np.float32)
    assert hopper.identity
    np.testing.assert_array_equal(hopper.to_env(action), action)
    # An env taking unit actions steps the env with the env-unit action.
    wrapped = envs.make_env("Pendulum-v1", 0, unit_actions=True)
    plain = envs.make_env("Pendulum-v1", 0)
    assert wrapped.action_space.low.tolist() == [-1.0] and plain.action_space.high.tolist() == [2.0]
    obs_w, *_ = wrapped.step(np.array([0.5], np.float32))
    obs_p, *_ = plain.step(scale.to_env(np.array([0.5], np.float32)))
    np.testing.assert_allclose(obs_w, obs_p, atol=1e-6)
    assert type(envs.make_env("Hopper-v5", unit_actions=True)) is type(envs.make_env("Hopper-v5"))

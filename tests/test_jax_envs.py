"""The JAX-native envs (edis_jax.envs.jax_env) against gymnasium's, in float32 as training uses
them: one step from gymnasium's own states, a fixed policy's returns, resets, the time limit and
autoreset, and the simulator path. The 64-bit definition check is test_jax_envs_x64.py.

MJX compiles slowly on the CPU (about 20 s per env here), so each env's vmapped step is compiled
once per process (jax_env.batched_step) and every test of that env shares it."""

import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import jax_envs as bench
from edis_jax.envs import make_env, simulators
from edis_jax.envs.jax_env import (
    INEXACT_ENV_IDS,
    JAX_ENV_IDS,
    MJX_ENV_IDS,
    batched_step,
    has_jax_env,
    make_jax_env,
    step_autoreset,
)

EXACT_ENV_IDS = [e for e in JAX_ENV_IDS if e not in INEXACT_ENV_IDS]
# The suite compiles at -O0 (conftest.py). MJX's step compiles 1.6x faster there but runs 6x
# slower (Walker2d's 1000 checked transitions: 20 s against 3.4 s), so this file's steps are
# compiled at XLA's default level (3: xla/debug_options_flags.cc), the one training runs at.
FULL_OPTIMISATION = (("xla_backend_optimization_level", 3),)


def full_speed_step(env_id):
    return batched_step(env_id, FULL_OPTIMISATION)


def _needs_mjx(env_id):
    if env_id in MJX_ENV_IDS:
        pytest.importorskip("mujoco.mjx", reason="the mjx extra is not installed")


@pytest.mark.parametrize("env_id", EXACT_ENV_IDS)
def test_float32_steps_like_gymnasium(env_id):
    _needs_mjx(env_id)
    env, step = full_speed_step(env_id)
    found = bench.step_fidelity(env, step, transitions=1000).summary()
    # The float32 targets. Measured here (benchmarks/results/jax_envs_cpu-2threads.md):
    # median <= 3e-6, p99 <= 8e-5, max <= 8.5e-4 (HalfCheetah at contacts), the float32 limit of
    # the same physics that matches to 1e-12 in 64-bit.
    obs = found["obs_error"]
    assert obs["median"] <= 1e-5 and obs["p99"] <= 3e-4 and obs["max"] <= 2e-3, found
    assert found["reward_error"]["max"] <= 1e-4, found
    # No termination threshold fell within float32's error in these 1000 transitions (measured:
    # 0 of 32 / 65 terminations differ for Hopper / Walker2d).
    assert found["terminated_differs"] == 0 and found["truncated_differs"] == 0, found
    assert found["terminated"] + found["truncated"] > 0  # episode ends were exercised


# Hopper's and HalfCheetah's 20 episodes take 1-2 minutes of host-driven steps on this CPU: they
# run in `make test-all` (and in benchmarks/jax_envs.py's table), the others in `make test`.
_SLOW_RETURNS = ("Hopper-v5", "HalfCheetah-v5")


@pytest.mark.parametrize(
    "env_id",
    [pytest.param(e, marks=pytest.mark.slow) if e in _SLOW_RETURNS else e for e in EXACT_ENV_IDS],
)
def test_fixed_policy_returns_agree(env_id):
    _needs_mjx(env_id)
    env, step = full_speed_step(env_id)
    gym_returns, jax_returns = bench.mean_returns(env, step, episodes=20)
    gym_ci, jax_ci = bench._mean_ci(gym_returns)["ci95"], bench._mean_ci(jax_returns)["ci95"]
    # Different reset draws (numpy's generator against JAX's), same distribution: the two 95%
    # intervals of the mean overlap.
    assert gym_ci[0] <= jax_ci[1] and jax_ci[0] <= gym_ci[1], (gym_ci, jax_ci)


@pytest.mark.parametrize("env_id", JAX_ENV_IDS)
def test_reset_observations_match_gymnasiums(env_id):
    _needs_mjx(env_id)
    env = make_jax_env(env_id)
    count = 500
    gym_obs, jax_obs = bench.reset_observations(env, count=count)
    assert jax_obs.shape == gym_obs.shape and jax_obs.dtype == np.float32
    # Same per-dimension distribution. Means: within 5 standard errors of their difference.
    # Spreads: a sample std's relative standard error is about 1 / sqrt(2 count), so the ratio
    # of two has about sqrt(1 / count); 5 of those (0.22) for ~100 dims over the envs.
    # Constant dims (Ant's zero contact forces at reset) are equal.
    se = np.sqrt(gym_obs.var(0) / count + jax_obs.var(0) / count)
    assert np.all(np.abs(gym_obs.mean(0) - jax_obs.mean(0)) <= 5 * se + 1e-6)
    gym_std, jax_std = gym_obs.std(0), jax_obs.std(0)
    assert np.allclose(jax_std, gym_std, rtol=5 / np.sqrt(count), atol=1e-6), (gym_std, jax_std)


def test_task_constants_are_gymnasiums():
    pytest.importorskip("mujoco.mjx", reason="the mjx extra is not installed")
    from edis_jax.envs.mjx_locomotion import TASKS

    assert set(TASKS) == set(MJX_ENV_IDS)
    for env_id, task in TASKS.items():
        source = gym.make(env_id).unwrapped
        assert task.frame_skip == source.frame_skip
        assert task.forward_reward_weight == source._forward_reward_weight
        assert task.ctrl_cost_weight == source._ctrl_cost_weight
        assert task.reset_noise_scale == source._reset_noise_scale
        assert task.skipped_qpos == source.observation_structure["skipped_qpos"]
        assert task.healthy_reward == getattr(source, "_healthy_reward", 0.0)
        assert task.terminate_when_unhealthy == getattr(source, "_terminate_when_unhealthy", False)
        assert task.contact_cost_weight == getattr(source, "_contact_cost_weight", 0.0)
        assert task.contact_force_range == getattr(source, "_contact_force_range", None)


def test_time_limit_truncates_and_autoreset_starts_a_new_episode():
    env = make_jax_env("Pendulum-v1")
    assert env.max_episode_steps == 200  # gymnasium's registration
    state, obs = env.reset(jax.random.PRNGKey(0))
    last = state.replace(steps=jnp.int32(199))
    action = jnp.ones(1)
    _, final_obs, _, terminated, truncated = env.step(last, action)
    assert bool(truncated) and not bool(terminated)
    new_state, new_obs, _, _, truncated2, final2 = step_autoreset(env, last, action)
    assert bool(truncated2) and int(new_state.steps) == 0
    np.testing.assert_array_equal(final2, final_obs)  # the true last observation is kept
    assert not np.allclose(new_obs, final_obs)  # and the next episode starts elsewhere
    assert not np.array_equal(new_state.key, last.key)  # each reset draws a fresh key
    mid_state, mid_obs, *_ = step_autoreset(env, state, action)  # not ended: no reset
    assert int(mid_state.steps) == 1 and np.array_equal(mid_state.key, state.key)


def test_autoreset_scan_over_seeds_is_pure():
    env = make_jax_env("Pendulum-v1")

    @jax.jit
    def rollout(keys):
        state, _ = jax.vmap(env.reset)(keys)

        def body(state, _):
            action = jnp.full((len(keys), 1), 0.5)
            state, _, reward, _, truncated, _ = jax.vmap(lambda s, a: step_autoreset(env, s, a))(
                state, action
            )
            return state, (reward, truncated)

        return jax.lax.scan(body, state, None, length=450)[1]

    keys = jax.random.split(jax.random.PRNGKey(3), 4)
    rewards, truncated = rollout(keys)
    again, _ = rollout(keys)
    np.testing.assert_array_equal(rewards, again)  # a pure function of the keys
    assert not np.allclose(rewards[:, 0], rewards[:, 1])  # seeds differ
    # 450 steps of a 200-step limit: two truncations per seed, at steps 200 and 400.
    assert truncated.sum(0).tolist() == [2, 2, 2, 2] and truncated[199].all()


def test_mjx_step_compiles_once_and_truncates_at_the_limit():
    pytest.importorskip("mujoco.mjx", reason="the mjx extra is not installed")
    env, step = full_speed_step("Hopper-v5")
    keys = jax.random.split(jax.random.PRNGKey(0), bench.BATCH)
    state, _ = jax.vmap(env.reset)(keys)
    actions = np.zeros((bench.BATCH, env.action_dim), np.float32)
    state, *_ = step(state, actions)
    programs = step.jitted._cache_size()  # this batch size's, and any other callers'
    state, *_ = step(state, actions)  # the state a step returns has the types reset gave
    # One program for states from reset, from step and from gymnasium (state_from, stacked in
    # numpy): a weakly typed leaf (MJX's data.time) would compile a second one.
    stacked = jax.tree.map(lambda *x: np.stack(x), *[env.state_from(make_env("Hopper-v5"))] * 20)
    step(stacked, actions)
    assert step.jitted._cache_size() == programs
    at_limit = state.replace(steps=jnp.full(bench.BATCH, env.max_episode_steps - 1, jnp.int32))
    _, _, _, _, truncated = step(at_limit, actions)
    assert env.max_episode_steps == 1000 and np.asarray(truncated).all()


def test_make_jax_env_refuses_what_it_cannot_reproduce():
    with pytest.raises(ValueError, match="no JAX-native version.*Pendulum-v1"):
        make_jax_env("MountainCarContinuous-v0")
    with pytest.raises(ValueError, match="non-default arguments.*env-backend gymnasium"):
        make_jax_env("Pendulum-v1", {"g": 9.81})
    assert has_jax_env("Pendulum-v1") and not has_jax_env("Ant-v5")  # Ant: INEXACT_ENV_IDS
    assert not has_jax_env("Swimmer-v5")


def test_simulator_jax_path_gives_the_mujoco_rows(monkeypatch):
    pytest.importorskip("mujoco.mjx", reason="the mjx extra is not installed")
    # Real Hopper states from a short random rollout, plus one diverged row.
    gym_env = make_env("Hopper-v5")
    obs, _ = gym_env.reset(seed=0)
    rng = np.random.default_rng(0)
    rows, actions = [], []
    for _ in range(30):
        action = rng.uniform(-1, 1, 3).astype(np.float32)
        rows.append(obs)
        actions.append(action)
        obs, _, terminated, truncated, _ = gym_env.step(action)
        if terminated or truncated:
            obs, _ = gym_env.reset()
    obs, action = np.stack(rows), np.stack(actions)
    obs[5] = np.nan
    # Two calls of the 20-row program the other Hopper tests compiled, the last one padded.
    monkeypatch.setattr(simulators, "JAX_ROWS_PER_CALL", bench.BATCH)
    monkeypatch.setattr(simulators, "batched_step", full_speed_step)
    jax_rows = simulators.jax_env_step("Hopper-v5", obs, action)
    mujoco_rows = simulators.mujoco_step("Hopper-v5", obs, action)
    assert np.isnan(jax_rows[0][5]).all() and np.isnan(jax_rows[1][5])
    # float32 against MuJoCo C in float64: within the float32 step error measured above.
    np.testing.assert_allclose(jax_rows[0], mujoco_rows[0], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(jax_rows[1], mujoco_rows[1], rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(jax_rows[2], mujoco_rows[2])
    # simulate() takes the path simulator_path picks: MuJoCo C on the CPU, the JAX env on an
    # accelerator.
    on_cpu = jax.default_backend() == "cpu"
    assert simulators.simulator_path("Hopper-v5") == ("mujoco" if on_cpu else "jax")
    assert simulators.simulator_path("Ant-v5") == "mujoco"  # inexact: never the JAX env
    monkeypatch.setattr(simulators, "simulator_path", lambda env_id: "jax")
    via_simulate = simulators.simulate("Hopper-v5", obs, action)
    np.testing.assert_array_equal(via_simulate[0], jax_rows[0])

"""The data-alignment diagnostic: each metric against a known answer, then the whole command."""

import math

import gymnasium as gym
import numpy as np
import pytest

from edis_jax import diagnose, envs

# ------------------------------------------------------------------------------ state MMD


def _gaussian_mmd2(shift: float, dim: int, h: float) -> float:
    # Exact MMD^2 between N(0, I) and N(shift * e_1, I) under exp(-|x-y|^2 / (2 h^2)):
    # x - y ~ N(m, 2 I) and E exp(-|z|^2 / 2h^2) = (h^2 / (h^2 + 2))^(d/2) exp(-|m|^2 / 2(h^2 + 2)).
    c = (h**2 / (h**2 + 2)) ** (dim / 2)
    return 2 * c * (1 - math.exp(-(shift**2) / (2 * (h**2 + 2))))


# Relative spread of the estimate over 10 seeds (2000 rows each), measured: 8% at shift 1, 4% at
# shift 2 (mean within 1% of exact); the tolerances are 3 of those spreads.
@pytest.mark.parametrize(("shift", "rel"), [(1.0, 0.25), (2.0, 0.12)])
def test_state_mmd_matches_closed_form_for_shifted_gaussians(shift, rel):
    rng = np.random.default_rng(0)
    dim = 3
    target = rng.normal(size=(2000, dim))
    generated = rng.normal(size=(2000, dim))
    generated[:, 0] += shift
    exact = _gaussian_mmd2(shift, dim, math.sqrt(dim))
    assert diagnose.state_mmd(generated, target) == pytest.approx(exact, rel=rel)


def test_state_mmd_is_near_zero_for_one_distribution_and_grows_with_shift():
    rng = np.random.default_rng(1)
    scale = np.array([1.0, 10.0, 0.1, 3.0])  # standardisation makes the units irrelevant
    target = rng.normal(size=(1500, 4)) * scale
    same = rng.normal(size=(1500, 4)) * scale
    mmds = [diagnose.state_mmd(same + s * scale, target) for s in (0.0, 0.3, 1.0)]
    # Same distribution: measured |MMD^2| ~ 1e-4; a 0.3-std shift gives ~0.01 (closed form).
    assert abs(mmds[0]) < 2e-3
    assert mmds[0] < mmds[1] / 5 < mmds[2] / 5


def test_state_mmd_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="obs_dim"):
        diagnose.state_mmd(np.zeros((10, 3)), np.zeros((10, 4)))


# ------------------------------------------------------------------------ dynamics error


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
    assert diagnose.dynamics_error(env_id, obs[exact], action[exact], next_obs[exact]) < 1e-4


def test_dynamics_error_measures_the_next_state_gap():
    obs, action, next_obs = _rollout("Hopper-v5", 100, seed=3)
    offset = np.zeros(obs.shape[1], np.float32)
    offset[[0, 7]] = (0.3, 0.4)  # a gap of Euclidean length 0.5 in every row
    assert diagnose.dynamics_error("Hopper-v5", obs, action, next_obs + offset) == pytest.approx(
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
    predicted, predicted_reward = envs.pendulum_step(obs, action)
    np.testing.assert_allclose(np.asarray(predicted), next_obs, atol=1e-5)
    np.testing.assert_allclose(np.asarray(predicted_reward), reward, atol=1e-4)
    assert diagnose.dynamics_error("Pendulum-v1", obs, action, next_obs) < 1e-5
    assert diagnose.dynamics_error("Pendulum-v1", obs, action * 0, next_obs) > 0.01


@pytest.mark.parametrize("env_id", ["CartPole-v1", "MountainCarContinuous-v0", "NoSuchEnv-v0"])
def test_dynamics_error_is_unavailable_for_other_envs(env_id):
    assert envs.true_next_obs(env_id, np.zeros((2, 2)), np.zeros((2, 1))) is None
    assert (
        diagnose.dynamics_error(env_id, np.zeros((2, 2)), np.zeros((2, 1)), np.zeros((2, 2)))
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
    sim_next, sim_reward, sim_term = envs.simulate("Hopper-v5", obs[exact], action[exact])
    np.testing.assert_allclose(sim_next, next_obs[exact], atol=1e-4)
    np.testing.assert_allclose(sim_reward, np.asarray(rewards)[exact], atol=1e-4)
    np.testing.assert_array_equal(sim_term, np.asarray(terms)[exact])
    assert np.asarray(terms).any(), "the rollout should end at least one episode by termination"


def test_non_finite_rows_give_nan_not_a_simulator_crash():
    obs, action, next_obs = _rollout("Hopper-v5", 4)
    obs[1, 0] = np.nan
    true_next = envs.true_next_obs("Hopper-v5", obs, action)
    assert np.isnan(true_next[1]).all() and np.isfinite(true_next[[0, 2, 3]]).all()


def test_table_prints_na_for_unavailable_metrics():
    rows = [
        {
            "guidance": "none",
            "state_mmd": 0.5,
            "action_logprob": -1.0,
            "dynamics_error": None,
            "n": 8,
        }
    ]
    table = diagnose.format_table({"rows": rows, "env_id": "X-v0"})
    assert "n/a" in table.splitlines()[-1] and "0.5" in table


# ------------------------------------------------------------------------ action log-prob


def test_action_logprob_is_the_policy_density():
    import jax

    from edis_jax.agents import IQL
    from edis_jax.config import IQLConfig

    agent = IQL.create(jax.random.PRNGKey(0), 3, 2, IQLConfig(hidden_dims=(16,)))
    obs = np.random.default_rng(0).normal(size=(50, 3)).astype(np.float32)
    mean = np.asarray(agent.act(None, obs, deterministic=True))
    # A fresh IQL actor has log_std = 0: the density at the mean is N(0; 0, I_2) = -log(2 pi),
    # and one unit further along each of the 2 dims costs 2 * 1/2.
    assert diagnose.action_logprob(agent, obs, mean) == pytest.approx(
        -math.log(2 * math.pi), abs=1e-5
    )
    assert diagnose.action_logprob(agent, obs, mean + 1) == pytest.approx(
        -math.log(2 * math.pi) - 1.0, abs=1e-5
    )


# ------------------------------------------------------------------------- whole command


def _pendulum_episodes(bias: float, seed: int, episodes: int = 3, length: int = 100):
    """Episodes under torques N(bias, 0.3^2) (kept inside the agents' [-1, 1])."""
    env = gym.make("Pendulum-v1", max_episode_steps=length)
    rng = np.random.default_rng(seed)
    out = []
    for i in range(episodes):
        obs, _ = env.reset(seed=seed * 100 + i)
        ep = {
            "observations": [obs],
            "actions": [],
            "rewards": [],
            "terminations": [],
            "truncations": [],
        }
        done = False
        while not done:
            action = np.clip(bias + 0.3 * rng.normal(size=1), -1, 1).astype(np.float32)
            obs, reward, terminated, truncated, _ = env.step(action)
            done = terminated or truncated
            for k, v in zip(ep, (obs, action, reward, terminated, truncated), strict=True):
                ep[k].append(v)
        out.append({k: np.asarray(v) for k, v in ep.items()})
    return out


@pytest.mark.slow  # ~60 s of XLA compiles on 2 shared cores (retrain and two guided samplers)
def test_diagnose_command_writes_the_json_schema(minari_path, tmp_path):
    import json

    from edis_jax.data.minari_store import write_dataset

    write_dataset("test/pendulum/offline-v0", "Pendulum-v1", _pendulum_episodes(0.0, 0))
    write_dataset("test/pendulum/target-v0", "Pendulum-v1", _pendulum_episodes(0.8, 1))
    out = tmp_path / "diag.json"
    args = diagnose.DiagnoseArgs(
        dataset="test/pendulum/offline-v0",
        target="test/pendulum/target-v0",
        preset="tiny",
        policy_steps=300,
        n=128,
        guidance=("none", "all"),
        diffusion_steps=50,
        mmd_rows=128,
        json=str(out),
        progress=False,
    )
    diagnose.diagnose_main(args)
    result = json.loads(out.read_text())
    assert [r["guidance"] for r in result["rows"]] == ["none", "all"]
    for row in result["rows"]:
        assert set(row) == {"guidance", "state_mmd", "action_logprob", "dynamics_error", "n"}
        assert row["n"] == 128
        assert all(math.isfinite(row[m]) for m in diagnose.METRICS)
    assert result["retrain"]["diffusion_loss"] > 0 and "cep_state_acc" in result["retrain"]
    offline, target = result["reference"]
    # Real data follows the true dynamics exactly; target states match themselves better than
    # the offline states (the target's torques are biased by 0.8) do.
    assert offline["dynamics_error"] < 1e-5 and target["dynamics_error"] < 1e-5
    assert target["state_mmd"] < offline["state_mmd"]
    # The quick policy was fit to the target actions (mean 0.8), so they are likelier than the
    # offline ones (mean 0); an untrained policy (mean ~0) would rank them the other way.
    assert target["action_logprob"] > offline["action_logprob"]


def test_diagnose_args_reject_unknown_guidance():
    from edis_jax.config import ConfigError

    with pytest.raises(ConfigError, match="--guidance"):
        diagnose.DiagnoseArgs(dataset="a", target="b", guidance=("none", "energy"))

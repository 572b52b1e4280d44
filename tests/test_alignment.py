"""The alignment metrics against known answers: the state MMD against the closed form for
Gaussians, the action log-likelihood against the policy's density, the transition energy's
gradient alignment for an energy that knows the dynamics."""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from edis_jax import generator
from edis_jax.agents import IQL
from edis_jax.config import presets
from edis_jax.config.agent_configs import IQLConfig
from edis_jax.data import buffer
from edis_jax.data.transition import Transition, vector_slices
from edis_jax.diagnose import alignment

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
    assert alignment.state_mmd(generated, target) == pytest.approx(exact, rel=rel)


def test_state_mmd_is_near_zero_for_one_distribution_and_grows_with_shift():
    rng = np.random.default_rng(1)
    scale = np.array([1.0, 10.0, 0.1, 3.0])  # standardisation makes the units irrelevant
    target = rng.normal(size=(1500, 4)) * scale
    same = rng.normal(size=(1500, 4)) * scale
    mmds = [alignment.state_mmd(same + s * scale, target) for s in (0.0, 0.3, 1.0)]
    # Same distribution: measured |MMD^2| ~ 1e-4; a 0.3-std shift gives ~0.01 (closed form).
    assert abs(mmds[0]) < 2e-3
    assert mmds[0] < mmds[1] / 5 < mmds[2] / 5


def test_state_mmd_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="obs_dim"):
        alignment.state_mmd(np.zeros((10, 3)), np.zeros((10, 4)))


# ------------------------------------------------------------------------ action log-prob


def test_action_logprob_is_the_policy_density():
    agent = IQL.create(jax.random.PRNGKey(0), 3, 2, IQLConfig(hidden_dims=(16,)))
    obs = np.random.default_rng(0).normal(size=(50, 3)).astype(np.float32)
    mean = np.asarray(agent.act(None, obs, deterministic=True))
    # A fresh IQL actor has log_std = 0: the density at the mean is N(0; 0, I_2) = -log(2 pi),
    # and one unit further along each of the 2 dims costs 2 * 1/2.
    assert alignment.action_logprob(agent, obs, mean) == pytest.approx(
        -math.log(2 * math.pi), abs=1e-5
    )
    assert alignment.action_logprob(agent, obs, mean + 1) == pytest.approx(
        -math.log(2 * math.pi) - 1.0, abs=1e-5
    )


# ------------------------------------------------------------------ transition energy gradient


def test_cosines_row_by_row_and_zero_for_a_zero_row():
    a = jnp.array([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    b = jnp.array([[2.0, 0.0], [-1.0, 0.0], [3.0, 4.0]])
    np.testing.assert_allclose(alignment.cosines(a, b), [1.0, -1 / math.sqrt(2), 0.0], atol=1e-6)


def test_transition_alignment_of_an_energy_that_knows_the_dynamics(monkeypatch):
    """Data whose next state is the state itself (so s' = s in the normalised space too) and an
    energy 1/2 |x_s' - x_s|^2 that knows it: its gradient at the least noisy level points from
    each chain row straight to the true s', and it ranks every positive first there."""
    cfg = presets.preset("tiny")
    obs_dim, act_dim, n = 3, 2, 400
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(n, obs_dim)).astype(np.float32)
    data = Transition(
        obs, rng.uniform(-1, 1, (n, act_dim)).astype(np.float32),
        rng.normal(size=n).astype(np.float32), obs.copy(), np.zeros(n, np.float32),
        np.zeros(n, np.float32),
    )  # fmt: skip
    online = buffer.from_transitions(jax.tree.map(jnp.asarray, data))
    diffusion = dataclasses.replace(cfg.diffusion, next_obs="absolute", warm_start=False)
    gen = generator.create(jax.random.key(0), obs_dim, act_dim, diffusion, cfg.energy)
    gen = generator.prepare(gen, online, jax.random.key(1), num_steps=1)  # fits the normaliser
    slices = vector_slices(obs_dim, act_dim)

    def knows_the_dynamics(es, name, x, sigma, params=None):
        gap = x[..., slices["next_obs"]] - x[..., slices["obs"]]
        return 0.5 * jnp.sum(gap**2, axis=-1)

    monkeypatch.setattr(alignment, "energy", knows_the_dynamics)
    result = alignment.transition_alignment(gen, online, jax.random.key(2))
    levels = len(generator.cep_levels(gen))
    assert result["cos"].shape == result["rank_acc"].shape == (levels,)
    assert float(result["cos"][-1]) > 0.99
    assert float(result["rank_acc"][-1]) == 1.0
    assert float(result["best_cut"]) > 0.85
    assert result["chance"] == pytest.approx(1 / (cfg.energy.num_negatives + 1))

    # On rows of its own whose s' is off (here s + noise; the truth is s), the same energy's
    # gradient points straight at the true next state.
    rows = data.replace(next_obs=obs + rng.normal(size=obs.shape).astype(np.float32))
    rows = jax.tree.map(jnp.asarray, rows)
    cos = alignment.model_rows_alignment(gen, rows, jnp.asarray(obs))
    assert float(cos) > 0.99
    # An energy that pulls s' away from s points the other way.
    monkeypatch.setattr(alignment, "energy", lambda *a, **k: -knows_the_dynamics(*a, **k))
    assert float(alignment.model_rows_alignment(gen, rows, jnp.asarray(obs))) < -0.99

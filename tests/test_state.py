"""train/state.py: the run state at step 0."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from edis_jax import config
from edis_jax.config import presets
from edis_jax.data.transition import Transition
from edis_jax.train import state as S

OBS_DIM, ACT_DIM, ROWS = 3, 2, 200


def offline_data() -> Transition:
    """Observations far from zero mean and unit scale, so that normalising them matters."""
    rng = np.random.default_rng(0)
    obs = 5.0 + rng.normal(size=(ROWS, OBS_DIM)) * np.array([0.5, 3.0, 10.0])
    action = rng.uniform(-1, 1, size=(ROWS, ACT_DIM))
    return Transition.from_arrays(obs, action, rng.normal(size=ROWS), obs, np.zeros(ROWS))


@pytest.mark.parametrize("algo", ["iql", "sac", "calql"])
def test_normalize_obs_fits_the_offline_states_and_the_policy_sees_them_normalised(algo):
    offline = offline_data()
    cfg = presets.preset("tiny").replace(algo=algo, seeds=2, online_steps=0)
    on = S.init_state(cfg, offline, 1.0).agent
    off = S.init_state(config.with_values(cfg, {f"{algo}.normalize_obs": False}), offline, 1.0)
    off = off.agent
    obs = np.asarray(offline.obs)
    norm_on, norm_off = (getattr(a, "sac", a).obs_norm for a in (on, off))  # Cal-QL wraps SAC
    # Normalizer.fit's eps floor (1e-3) on the std; one fit shared by the seeds.
    np.testing.assert_allclose(norm_on.mean, np.tile(obs.mean(0), (2, 1)), rtol=1e-5)
    np.testing.assert_allclose(norm_on.std, np.tile(obs.std(0) + 1e-3, (2, 1)), rtol=1e-4)
    np.testing.assert_array_equal(norm_off.mean, np.zeros((2, OBS_DIM)))
    np.testing.assert_array_equal(norm_off.std, np.ones((2, OBS_DIM)))

    # Same key, same networks: the normalising agent acting on s acts as the other one does on
    # its normalised s, so the normaliser sits in front of the policy and nowhere else.
    def greedy(agent, x):
        return jax.vmap(lambda a: a.act(None, x, deterministic=True))(agent)

    x = jnp.asarray(obs[:16])
    normalised = (x - norm_on.mean[0]) / norm_on.std[0]
    np.testing.assert_allclose(greedy(on, x), greedy(off, normalised), rtol=1e-5, atol=1e-6)
    assert not np.allclose(greedy(on, x), greedy(off, x), atol=1e-3)


def test_runs_with_the_same_agent_and_generator_share_one_init_program():
    # init_state runs at every train, resume and load_run. Its program is keyed on SeedSpec,
    # not on the whole config, which also holds the run folder: a second run compiles nothing,
    # and the normaliser is an argument, so other data of the same shape reuses it too.
    offline = offline_data()
    cfg = presets.preset("tiny").replace(seeds=2, edis=True, out="runs/a")
    S.init_state(cfg, offline, 1.0)
    programs = S.fresh_seeds._cache_size()
    scaled = offline.replace(obs=offline.obs * 2.0)
    again = S.init_state(cfg.replace(out="runs/b"), scaled, 1.0).agent
    assert S.fresh_seeds._cache_size() == programs
    np.testing.assert_allclose(
        again.obs_norm.mean[0], 2 * np.asarray(offline.obs).mean(0), rtol=1e-6
    )
    S.init_state(config.with_values(cfg, {"iql.discount": 0.9}), offline, 1.0)
    assert S.fresh_seeds._cache_size() == programs + 1  # another agent: its own program

"""The generator's phases over seeds (train/generator_phases.py): equal to separate runs of
the pure functions, guided generation compiles once, no diffusion step, keys per seed, timings."""

import dataclasses

import jax
import numpy as np
import pytest
from generator_inputs import (
    ACT,
    DIFF,
    ENERGY,
    OBS,
    SEEDS,
    N,
    assert_params_close,
    assert_rows_mostly_equal,
    assert_trees_close,
    generate_jit,
    retrain_jit,
    seed,
    seed_inputs,
    stack,
    without_energy_output_bias,
)

from edis_jax import generator
from edis_jax.config.generator_configs import GUIDES
from edis_jax.energy import guidance
from edis_jax.train import chunks, generator_phases


@pytest.fixture(scope="module")
def seed_run():
    gens, real, online, policy, keys = seed_inputs()
    trained, metrics = generator_phases.retrain(gens, real, online, policy, keys, progress=False)
    samples, _ = generator_phases.generate(trained, keys, N, progress=False)
    return (gens, real, online, policy, keys), trained, metrics, samples


def test_seed_batched_generator_equals_separate_runs(seed_run):
    (gens, real, online, policy, keys), trained, metrics, samples = seed_run
    for i in range(SEEDS):
        alone, alone_metrics = retrain_jit(
            seed(gens, i), seed(real, i), seed(online, i), seed(policy, i), keys[i]
        )
        assert_params_close(
            without_energy_output_bias(alone), without_energy_output_bias(seed(trained, i))
        )
        heldout = {k for k in metrics if "heldout" in k}
        assert_trees_close(
            {k: v for k, v in alone_metrics.items() if k not in heldout},
            {k: v for k, v in seed(metrics, i).items() if k not in heldout},
            atol=1e-4,
        )
        # Held-out accuracies count 1024 comparisons of energies: float32 differences between
        # the vmapped and the single program may flip a near-tie or two (1/1024 each).
        for k in heldout:
            np.testing.assert_allclose(alone_metrics[k], seed(metrics, i)[k], atol=2.5e-3)
        assert_rows_mostly_equal(generate_jit(alone, keys[i], N)[0], seed(samples, i))
    assert set(metrics) == {"diffusion_loss"} | {
        f"cep_{name}_{m}" for name in GUIDES for m in ("loss", "acc", "heldout_acc")
    }
    assert metrics["diffusion_loss"].shape == (SEEDS,)  # the seed axis is kept
    assert samples.obs.shape == (SEEDS, N, OBS) and samples.reward.shape == (SEEDS, N)
    assert not np.allclose(samples.obs[0], samples.obs[1])  # seeds differ
    first = jax.tree.leaves(trained.diffusion.params)[0]
    assert not np.allclose(first[0], first[1])
    # The pure function vmaps too (traced only, to keep the suite short).
    shapes = jax.eval_shape(jax.vmap(generator.retrain), gens, real, online, policy, keys)
    assert jax.tree.structure(shapes[0]) == jax.tree.structure(trained)
    # The normaliser was refit on the filled rows of the real buffer only.
    filled = seed(real, 0).data.to_vector()[:50]
    np.testing.assert_allclose(trained.normalizer.mean[0], filled.mean(0), atol=1e-5)


def test_guided_generation_compiles_once(seed_run, monkeypatch):
    _, trained, _, _ = seed_run
    traces = []
    real_vector = guidance.guidance_vector

    def counting(*args, **kwargs):
        traces.append(1)
        return real_vector(*args, **kwargs)

    monkeypatch.setattr(guidance, "guidance_vector", counting)
    n = 45  # a batch shape not compiled yet: 3 batches of 15
    keys = jax.random.split(jax.random.PRNGKey(5), SEEDS)
    before = chunks._seed_program._cache_size()
    generator_phases.generate(trained, keys, n, progress=False)
    compiled = chunks._seed_program._cache_size() - before
    assert compiled == 2  # the sampler's batch of 15 rows, the conversion of 45 rows
    first = len(traces)
    assert first > 0  # the guidance was traced (in the Heun step body)
    rescaled = trained.replace(scales=trained.scales * 3.0)  # leaves change, not structure
    other_keys = jax.random.split(jax.random.PRNGKey(6), SEEDS)
    out, _ = generator_phases.generate(rescaled, other_keys, n, progress=False)
    assert len(traces) == first  # 2 calls x 3 batches, traced once
    assert chunks._seed_program._cache_size() == before + compiled
    assert out.obs.shape == (SEEDS, n, OBS)
    assert not np.allclose(
        out.obs, generator_phases.generate(trained, other_keys, n, progress=False)[0].obs
    )


def test_seed_retrain_without_diffusion_steps_has_no_diffusion_loss():
    _, real, online, _, keys = seed_inputs()
    cfg = dataclasses.replace(DIFF, warm_start=True, initial_steps=30, train_steps=0)
    gens = stack([generator.create(k, OBS, ACT, cfg, ENERGY, ()) for k in keys])
    trained, metrics = generator_phases.retrain(gens, real, online, None, keys, progress=False)
    assert metrics == {} and np.all(np.asarray(trained.diffusion.step) == 0)


def test_seed_phases_want_one_key_per_seed_and_time_their_parts(seed_run):
    (gens, real, online, policy, keys), _, _, _ = seed_run
    with pytest.raises(ValueError, match="one key per seed"):
        generator_phases.generate(seed(gens, 0), jax.random.PRNGKey(2), 10)
    with pytest.raises(ValueError, match="one key per seed"):
        generator_phases.retrain(gens, real, online, policy, keys[0], progress=False)
    timings = {}
    generator_phases.retrain(gens, real, online, policy, keys, progress=False, timings=timings)
    assert set(timings) == {"diffusion", "cep_negatives", "cep", "cep_heldout"}
    assert all(t > 0 for t in timings.values())

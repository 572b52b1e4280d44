"""The generator's pure functions: retrain, generate, terminals, plain SynthER, bad input,
clipped actions, warm start, pretraining, held-out accuracy, static configs without leaf numbers.
Their seed-batched runs: test_generator_phases.py."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from generator_inputs import (
    ACT,
    DIFF,
    ENERGY,
    OBS,
    N,
    generate_jit,
    linear_policy,
    make_buffer,
    retrain_jit,
    seed,
    seed_inputs,
)

from edis_jax import generator
from edis_jax.data import buffer
from edis_jax.data.transition import Transition
from edis_jax.diffusion import sampler


@pytest.fixture(scope="module")
def trained():
    """Seed 0's generator after one retrain."""
    gens, real, online, policy, keys = seed_inputs()
    gen, _ = retrain_jit(seed(gens, 0), seed(real, 0), seed(online, 0), seed(policy, 0), keys[0])
    return gen


def test_terminals_and_plain_synther(trained):
    _, real, online, _, keys = seed_inputs()
    gen = trained
    out, _ = generate_jit(gen, keys[0], 30, terminal_fn=_falls)
    np.testing.assert_array_equal(out.terminal, (out.next_obs[:, 0] < 0).astype(np.float32))
    assert out.terminal.dtype == jnp.float32 and 0 < out.terminal.sum() < 30
    assert jnp.all(out.mc_return == 0)
    plain = gen.replace(guide=())  # SynthER: no guidance, no CEP
    assert plain.guidance is None
    assert generate_jit(plain, keys[0], 30)[0].obs.shape == (30, OBS)
    _, metrics = jax.eval_shape(
        generator.retrain, plain, seed(real, 0), seed(online, 0), None, keys[0]
    )
    assert set(metrics) == {"diffusion_loss"}


def _falls(obs, action, next_obs):
    return next_obs[:, 0] < 0


def test_bad_input_gets_clear_errors(trained):
    gen = trained
    with pytest.raises(ValueError, match="invalid guide"):
        generator.create(jax.random.PRNGKey(0), OBS, ACT, DIFF, ENERGY, ("state", "reward"))
    buf = make_buffer(jax.random.PRNGKey(1), 10, 10, obs_dim=OBS + 1)
    with pytest.raises(ValueError, match="create it with the dataset's dims"):
        generator.retrain(gen, buf, buf, None, jax.random.PRNGKey(2))


# --------------------------------------------------------------------- generator fidelity


def test_generated_actions_are_clipped_into_the_box_and_counted(trained):
    gen = trained
    # Stretch the action dims of the normaliser: the model's actions now spill past +-1.
    normalizer = gen.normalizer
    scale = normalizer.std.at[OBS : OBS + ACT].multiply(20.0)
    gen = gen.replace(normalizer=normalizer.replace(std=scale))
    key = jax.random.PRNGKey(3)
    out, metrics = generate_jit(gen, key, N)
    raw = gen.normalizer.denormalize(
        sampler.sample(gen.diffusion, key, N, guidance=gen.guidance)[0]
    )
    raw_action = raw[:, OBS : OBS + ACT]
    outside = np.mean(np.any(np.abs(np.asarray(raw_action)) > 1.0, axis=-1))
    assert outside > 0.2, "the test needs actions outside the box"
    assert np.all(np.abs(out.action) <= 1.0)
    np.testing.assert_allclose(out.action, np.clip(raw_action, -1, 1), atol=1e-6)
    assert float(metrics["clipped_action_frac"]) == pytest.approx(outside, abs=1e-6)


def test_warm_start_keeps_the_model_and_normaliser_from_scratch_does_not():
    gens, real, online, policy, keys = seed_inputs()
    warm_cfg = dataclasses.replace(DIFF, warm_start=True)
    for warm in (False, True):
        cfg = warm_cfg if warm else DIFF
        gen = generator.create(jax.random.PRNGKey(0), OBS, ACT, cfg, ENERGY)
        first, _ = retrain_jit(gen, seed(real, 0), seed(online, 0), seed(policy, 0), keys[0])
        other_real = seed(real, 1)  # other data: a from-scratch normaliser would move
        prepared = generator.prepare(first, other_real, jax.random.PRNGKey(7), DIFF.train_steps)
        same_params = jax.tree.map(
            np.array_equal, first.diffusion.params, prepared.diffusion.params
        )
        same_norm = np.array_equal(first.normalizer.mean, prepared.normalizer.mean)
        if warm:
            assert all(jax.tree.leaves(same_params)) and same_norm
            # The cosine restarts at the current step over one retrain.
            assert int(prepared.diffusion.schedule_start) == DIFF.train_steps
            second, _ = retrain_jit(first, other_real, seed(online, 1), seed(policy, 1), keys[1])
            assert int(second.diffusion.step) == 2 * DIFF.train_steps
        else:
            assert not any(jax.tree.leaves(same_params)) and not same_norm
            assert int(prepared.diffusion.step) == 0


def test_pretrain_trains_the_warm_model_on_offline_data():
    _, real, _, _, _ = seed_inputs()
    cfg = dataclasses.replace(DIFF, warm_start=True, initial_steps=30)
    gen = generator.create(jax.random.PRNGKey(0), OBS, ACT, cfg, ENERGY)
    trained, metrics = jax.jit(generator.pretrain)(gen, seed(real, 0), jax.random.PRNGKey(1))
    assert int(trained.diffusion.step) == 30 and np.isfinite(metrics["diffusion_loss"])
    filled = seed(real, 0).data.to_vector()[:50]
    np.testing.assert_allclose(trained.normalizer.mean, filled.mean(0), atol=1e-5)


def test_no_diffusion_step_means_no_diffusion_loss():
    """A pretrained warm model retrained with train_steps 0 trains no diffusion step: its
    metrics leave diffusion_loss out, rather than holding a NaN."""
    _, real, online, _, keys = seed_inputs()
    cfg = dataclasses.replace(DIFF, warm_start=True, initial_steps=30, train_steps=0)
    gen = generator.create(keys[0], OBS, ACT, cfg, ENERGY, ())
    _, metrics = jax.eval_shape(
        generator.retrain, gen, seed(real, 0), seed(online, 0), None, keys[0]
    )
    assert metrics == {}


def _toy_online(key, n, holdout_garbage=False, holdout_every=10):
    """Online data unlike the real data: states near 2 (real: N(0, 1)) and s' = s + 1 exactly
    (real: s + 0.1 tanh(...)): a density ratio the energies can learn. With `holdout_garbage`
    the held-out rows (every 10th) are real-like instead."""
    k1, k2 = jax.random.split(key)
    obs = 2.0 + 0.3 * jax.random.normal(k1, (n, OBS))
    act = jnp.tanh(jax.random.normal(k2, (n, ACT)))
    next_obs = obs + 1.0
    if holdout_garbage:
        held = (jnp.arange(n) % holdout_every == holdout_every - 1)[:, None]
        obs = jnp.where(held, jax.random.normal(k1, obs.shape), obs)
        next_obs = jnp.where(held, obs, next_obs)
    data = Transition.from_arrays(obs, act, jnp.zeros(n), next_obs, jnp.zeros(n))
    return buffer.from_transitions(data)


@pytest.mark.parametrize("garbage", [False, True])
def test_heldout_accuracy_beats_chance_on_rows_cep_never_saw(garbage):
    diff = dataclasses.replace(DIFF, train_steps=200, train_chunk=200)
    energy = dataclasses.replace(ENERGY, steps=300, batch_size=32, heldout_groups=32)
    gen = generator.create(jax.random.PRNGKey(0), OBS, ACT, diff, energy, ("state", "transition"))
    real = make_buffer(jax.random.PRNGKey(1), 400, 400)
    online = _toy_online(jax.random.PRNGKey(2), 200, holdout_garbage=garbage)
    policy = jax.tree_util.Partial(linear_policy, jnp.zeros((OBS, ACT)))
    _, metrics = retrain_jit(gen, real, online, policy, jax.random.PRNGKey(3))
    chance = {"state": 0.5, "transition": 1.0 / (ENERGY.num_negatives + 1)}
    for name in ("state", "transition"):
        train, heldout = metrics[f"cep_{name}_acc"], metrics[f"cep_{name}_heldout_acc"]
        # Measured: train ~0.9 and held-out ~0.95-1.0 for both energies on this easy ratio.
        assert train > 1.5 * chance[name], (name, train)
        if garbage:
            # Held-out rows that look like model data: the energies (trained only on the other
            # rows) cannot tell them apart, so the held-out measure falls to about chance.
            assert heldout < 1.3 * chance[name], (name, heldout)
        else:
            assert heldout > 1.5 * chance[name] and heldout > 3 * (1 / 11) * (name != "state")


def test_static_configs_hold_structure_and_the_leaves_hold_the_numbers():
    numbers = dict(scale_state=0.5, scale_policy=0.2, scale_transition=0.3, lr=3e-3)
    other = dataclasses.replace(ENERGY, clip_factor=4.0, **numbers)
    key = jax.random.PRNGKey(0)
    gen = generator.create(key, OBS, ACT, dataclasses.replace(DIFF, lr=1e-3), other)
    # Numbers that differ between the configs leave one tree structure: the two stack.
    assert jax.tree.structure(gen) == jax.tree.structure(
        generator.create(key, OBS, ACT, DIFF, ENERGY)
    )
    np.testing.assert_allclose(gen.scales, [0.5, 0.2, 0.3])
    np.testing.assert_allclose(gen.energies.opt_state.hyperparams["learning_rate"], 3e-3)
    np.testing.assert_allclose(gen.energies.clip_factor, 4.0)
    np.testing.assert_allclose(gen.diffusion.lr, 1e-3)
    assert gen.energy_cfg.scale_state == ENERGY.scale_state == gen.energies.config.scale_state

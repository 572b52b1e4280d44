"""The generator: vmapped over seeds equals separate runs, the progress (seed-batched) paths
equal the pure ones, guided generation compiles once, terminals, plain SynthER, bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from edis_jax import generator
from edis_jax.config import GUIDES, DiffusionConfig, EnergyConfig
from edis_jax.data import buffer
from edis_jax.data.transition import Transition
from edis_jax.diffusion import sampler
from edis_jax.energy import guidance

OBS, ACT, SEEDS = 3, 2, 2
DIFF = DiffusionConfig(
    width=16, depth=1, dim_t=8, batch_size=16, train_steps=20, train_chunk=10, num_steps=8,
    sample_batch=16,
)  # fmt: skip
ENERGY = EnergyConfig(
    hidden_dims=(16, 16), steps=3, batch_size=8, num_negatives=2, negative_bank=8, level_stride=4
)
N = 40  # generated rows: 3 batches of 14 (padded), exercising the batch loop

retrain_jit = jax.jit(generator.retrain)
generate_jit = jax.jit(generator.generate, static_argnames=("n", "terminal_fn"))


def make_buffer(key, n, capacity, obs_dim=OBS):
    k1, k2, k3 = jax.random.split(key, 3)
    obs = jax.random.normal(k1, (n, obs_dim))
    act = jnp.tanh(jax.random.normal(k2, (n, ACT)))
    next_obs = obs + 0.1 * jnp.tanh(act.sum(-1, keepdims=True))
    reward = obs.sum(-1) + 0.1 * jax.random.normal(k3, (n,))
    data = Transition.from_arrays(obs, act, reward, next_obs, jnp.zeros(n))
    return buffer.from_transitions(data, capacity)


def seed_inputs(guide=("state", "policy", "transition")):
    keys = jax.random.split(jax.random.PRNGKey(0), 4 * SEEDS).reshape(4, SEEDS, -1)
    # Created one by one and stacked: one compiled `create`, as the lead's driver can do.
    gens = stack([generator.create(k, OBS, ACT, DIFF, ENERGY, guide) for k in keys[0]])
    real = jax.jit(jax.vmap(lambda k: make_buffer(k, 50, 64)))(keys[1])
    online = jax.jit(jax.vmap(lambda k: make_buffer(k, 20, 32)))(keys[2])
    # A policy whose params differ per seed: a pytree callable with a leading seed axis.
    weights = jax.random.normal(jax.random.PRNGKey(9), (SEEDS, OBS, ACT))
    policy = jax.tree_util.Partial(_linear_policy, weights)
    return gens, real, online, policy, keys[3]


def stack(trees):
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)


def _linear_policy(weights, key, obs):
    return jnp.tanh(obs @ weights + 0.1 * jax.random.normal(key, obs.shape[:-1] + (ACT,)))


def seed(tree, i):
    return jax.tree.map(lambda a: a[i], tree)


def assert_trees_close(a, b, atol):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(x, y, atol=atol, rtol=0)


def assert_rows_mostly_equal(a, b):
    # The samplers of two programs agree to ~1e-6 per step, but a chain of a barely trained
    # model is chaotic: now and then one row drifts apart (measured: 0 or 1 of 40 rows). Other
    # keys or a wrong batch split would change every row.
    a, b = (np.concatenate([np.reshape(x, (N, -1)) for x in jax.tree.leaves(t)], 1) for t in (a, b))
    same = np.all(np.abs(a - b) < 1e-3, axis=1)
    assert same.mean() >= 0.9, same


def assert_params_close(a, b):
    # Two compiled programs (vmapped and chunked, or not) differ by float32 rounding, ~1e-7.
    # Adam turns the rounding noise of a near-zero gradient (a unit that barely fires) into
    # lr-sized steps, so a handful of params may differ by up to lr * steps; a real mismatch
    # (another key, another batch) moves almost every param by ~lr.
    pairs = zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    diffs = np.concatenate([np.abs(np.asarray(x) - np.asarray(y)).ravel() for x, y in pairs])
    assert diffs.max() < 3 * ENERGY.lr * ENERGY.steps, diffs.max()
    assert diffs.mean() < 1e-5, diffs.mean()


def without_energy_output_bias(gen):
    # CEP's softmax losses do not change when E shifts by a constant, so the energies' output
    # bias gets a gradient of pure float32 noise (~1e-9), which Adam blows up to lr-sized steps:
    # it differs between any two compiled programs, and it changes no guidance gradient.
    last_layer = f"Dense_{len(ENERGY.hidden_dims)}"

    def zero(path, leaf):
        name = jax.tree_util.keystr(path)
        return jnp.zeros_like(leaf) if last_layer in name and "bias" in name else leaf

    params = jax.tree_util.tree_map_with_path(zero, gen.energies.params)
    return gen.replace(energies=gen.energies.replace(params=params, opt_state=None))


@pytest.fixture(scope="module")
def seed_run():
    gens, real, online, policy, keys = seed_inputs()
    trained, metrics = generator.retrain_with_progress(
        gens, real, online, policy, keys, progress=False
    )
    samples, _ = generator.generate_with_progress(trained, keys, N, progress=False)
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
    before = sampler._sample_rows_jit._cache_size()
    generator.generate_with_progress(trained, keys, n, progress=False)
    first = len(traces)
    assert first > 0  # the guidance was traced (in the Heun step body)
    rescaled = trained.replace(scales=trained.scales * 3.0)  # leaves change, not structure
    other_keys = jax.random.split(jax.random.PRNGKey(6), SEEDS)
    out, _ = generator.generate_with_progress(rescaled, other_keys, n, progress=False)
    assert len(traces) == first  # 2 calls x 3 batches, traced once
    assert sampler._sample_rows_jit._cache_size() == before + 1
    assert out.obs.shape == (SEEDS, n, OBS)
    assert not np.allclose(
        out.obs, generator.generate_with_progress(trained, other_keys, n, progress=False)[0].obs
    )


def test_terminals_and_plain_synther(seed_run):
    (gens, real, online, policy, keys), trained, _, _ = seed_run
    gen = seed(trained, 0)
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


def test_bad_input_gets_clear_errors(seed_run):
    _, trained, _, _ = seed_run
    gen = seed(trained, 0)
    with pytest.raises(ValueError, match="invalid guide"):
        generator.create(jax.random.PRNGKey(0), OBS, ACT, DIFF, ENERGY, ("state", "reward"))
    buf = make_buffer(jax.random.PRNGKey(1), 10, 10, obs_dim=OBS + 1)
    with pytest.raises(ValueError, match="create it with the dataset's dims"):
        generator.retrain(gen, buf, buf, None, jax.random.PRNGKey(2))
    with pytest.raises(ValueError, match="one key per seed"):
        generator.generate_with_progress(gen, jax.random.PRNGKey(2), 10)


# --------------------------------------------------------------------- generator fidelity


def test_generated_actions_are_clipped_into_the_box_and_counted(seed_run):
    _, trained, _, _ = seed_run
    gen = seed(trained, 0)
    # Stretch the action dims of the normaliser: the model's actions now spill past +-1.
    normalizer = gen.normalizer
    scale = normalizer.std.at[OBS : OBS + ACT].multiply(20.0)
    gen = gen.replace(normalizer=normalizer.replace(std=scale))
    key = jax.random.PRNGKey(3)
    out, metrics = generate_jit(gen, key, N)
    raw = gen.normalizer.denormalize(
        sampler.sample_pure(gen.diffusion, key, N, guidance=gen.guidance)[0]
    )
    raw_action = raw[:, OBS : OBS + ACT]
    outside = np.mean(np.any(np.abs(np.asarray(raw_action)) > 1.0, axis=-1))
    assert outside > 0.2, "the test needs actions outside the box"
    assert np.all(np.abs(out.action) <= 1.0)
    np.testing.assert_allclose(out.action, np.clip(raw_action, -1, 1), atol=1e-6)
    assert float(metrics["clipped_action_frac"]) == pytest.approx(outside, abs=1e-6)


def test_warm_start_keeps_the_model_and_normaliser_from_scratch_does_not():
    import dataclasses

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
    import dataclasses

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
    import dataclasses

    _, real, online, _, keys = seed_inputs()
    cfg = dataclasses.replace(DIFF, warm_start=True, initial_steps=30, train_steps=0)
    gens = stack([generator.create(k, OBS, ACT, cfg, ENERGY, ()) for k in keys])
    _, metrics = jax.eval_shape(
        generator.retrain, seed(gens, 0), seed(real, 0), seed(online, 0), None, keys[0]
    )
    assert metrics == {}
    trained, metrics = generator.retrain_with_progress(
        gens, real, online, None, keys, progress=False
    )
    assert metrics == {} and np.all(np.asarray(trained.diffusion.step) == 0)


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
    import dataclasses

    diff = dataclasses.replace(DIFF, train_steps=200, train_chunk=200)
    energy = dataclasses.replace(ENERGY, steps=300, batch_size=32, heldout_groups=32)
    gen = generator.create(jax.random.PRNGKey(0), OBS, ACT, diff, energy, ("state", "transition"))
    real = make_buffer(jax.random.PRNGKey(1), 400, 400)
    online = _toy_online(jax.random.PRNGKey(2), 200, holdout_garbage=garbage)
    policy = jax.tree_util.Partial(_linear_policy, jnp.zeros((OBS, ACT)))
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

"""The generator: vmapped over seeds equals separate runs, the progress (seed-batched) paths
equal the pure ones, guided generation compiles once, terminals, plain SynthER, bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from edis_jax import edis
from edis_jax.config import GUIDES, DiffusionConfig, EnergyConfig
from edis_jax.data import buffer as buffer_lib
from edis_jax.data.transition import Transition
from edis_jax.diffusion import sampler
from edis_jax.energy import guidance as guidance_lib

OBS, ACT, SEEDS = 3, 2, 2
DIFF = DiffusionConfig(
    width=16, depth=1, dim_t=8, batch_size=16, train_steps=20, train_chunk=10, num_steps=8,
    sample_batch=16,
)  # fmt: skip
ENERGY = EnergyConfig(
    hidden_dims=(16, 16), steps=3, batch_size=8, num_negatives=2, negative_bank=8, level_stride=4
)
N = 40  # generated rows: 3 batches of 14 (padded), exercising the batch loop

retrain_jit = jax.jit(edis.retrain)
generate_jit = jax.jit(edis.generate, static_argnames=("n", "terminal_fn"))


def make_buffer(key, n, capacity, obs_dim=OBS):
    k1, k2, k3 = jax.random.split(key, 3)
    obs = jax.random.normal(k1, (n, obs_dim))
    act = jnp.tanh(jax.random.normal(k2, (n, ACT)))
    next_obs = obs + 0.1 * jnp.tanh(act.sum(-1, keepdims=True))
    reward = obs.sum(-1) + 0.1 * jax.random.normal(k3, (n,))
    data = Transition.from_arrays(obs, act, reward, next_obs, jnp.zeros(n))
    return buffer_lib.from_transitions(data, capacity)


def seed_inputs(guide=("state", "policy", "transition")):
    keys = jax.random.split(jax.random.PRNGKey(0), 4 * SEEDS).reshape(4, SEEDS, -1)
    # Created one by one and stacked: one compiled `create`, as the lead's driver can do.
    gens = stack([edis.create(k, OBS, ACT, DIFF, ENERGY, guide) for k in keys[0]])
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
    trained, metrics = edis.retrain_with_progress(gens, real, online, policy, keys, progress=False)
    samples, _ = edis.generate_with_progress(trained, keys, N, progress=False)
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
    shapes = jax.eval_shape(jax.vmap(edis.retrain), gens, real, online, policy, keys)
    assert jax.tree.structure(shapes[0]) == jax.tree.structure(trained)
    # The normaliser was refit on the filled rows of the real buffer only.
    filled = seed(real, 0).data.to_vector()[:50]
    np.testing.assert_allclose(trained.normalizer.mean[0], filled.mean(0), atol=1e-5)


def test_guided_generation_compiles_once(seed_run, monkeypatch):
    _, trained, _, _ = seed_run
    traces = []
    real_vector = guidance_lib.guidance_vector

    def counting(*args, **kwargs):
        traces.append(1)
        return real_vector(*args, **kwargs)

    monkeypatch.setattr(guidance_lib, "guidance_vector", counting)
    n = 45  # a batch shape not compiled yet: 3 batches of 15
    keys = jax.random.split(jax.random.PRNGKey(5), SEEDS)
    before = sampler._sample_rows_jit._cache_size()
    edis.generate_with_progress(trained, keys, n, progress=False)
    first = len(traces)
    assert first > 0  # the guidance was traced (in the Heun step body)
    rescaled = trained.replace(scales=trained.scales * 3.0)  # leaves change, not structure
    other_keys = jax.random.split(jax.random.PRNGKey(6), SEEDS)
    out, _ = edis.generate_with_progress(rescaled, other_keys, n, progress=False)
    assert len(traces) == first  # 2 calls x 3 batches, traced once
    assert sampler._sample_rows_jit._cache_size() == before + 1
    assert out.obs.shape == (SEEDS, n, OBS)
    assert not np.allclose(
        out.obs, edis.generate_with_progress(trained, other_keys, n, progress=False)[0].obs
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
    _, metrics = jax.eval_shape(edis.retrain, plain, seed(real, 0), seed(online, 0), None, keys[0])
    assert set(metrics) == {"diffusion_loss"}


def _falls(obs, action, next_obs):
    return next_obs[:, 0] < 0


def test_bad_input_gets_clear_errors(seed_run):
    _, trained, _, _ = seed_run
    gen = seed(trained, 0)
    with pytest.raises(ValueError, match="invalid guide"):
        edis.create(jax.random.PRNGKey(0), OBS, ACT, DIFF, ENERGY, ("state", "reward"))
    buf = make_buffer(jax.random.PRNGKey(1), 10, 10, obs_dim=OBS + 1)
    with pytest.raises(ValueError, match="create it with the dataset's dims"):
        edis.retrain(gen, buf, buf, None, jax.random.PRNGKey(2))
    with pytest.raises(ValueError, match="one key per seed"):
        edis.generate_with_progress(gen, jax.random.PRNGKey(2), 10)

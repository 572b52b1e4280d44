"""The generator: vmapped over seeds equals separate runs, the progress (seed-batched) paths
equal the pure ones, guided generation compiles once, terminals, plain SynthER, bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from edis_jax import edis
from edis_jax.config import DiffusionConfig, EnergyConfig
from edis_jax.data import buffer as buffer_lib
from edis_jax.data.transition import Transition
from edis_jax.diffusion import sampler
from edis_jax.energy import guidance as guidance_lib

OBS, ACT, SEEDS = 3, 2, 2
DIFF = DiffusionConfig(
    width=16, depth=1, dim_t=8, batch_size=16, train_steps=25, train_chunk=10, num_steps=8,
    sample_batch=16,
)  # fmt: skip
ENERGY = EnergyConfig(
    hidden_dims=(16, 16), steps=3, batch_size=8, num_negatives=2, negative_bank=8, level_stride=4
)
N = 40  # generated rows: 3 batches of 14 (padded), exercising the batch loop

retrain_jit = jax.jit(edis.retrain)
retrain_vmap = jax.jit(jax.vmap(edis.retrain))
generate_jit = jax.jit(edis.generate, static_argnames=("n", "terminal_fn"))
generate_vmap = jax.jit(jax.vmap(lambda g, k: edis.generate(g, k, N)))


def make_buffer(key, n, capacity):
    k1, k2, k3 = jax.random.split(key, 3)
    obs = jax.random.normal(k1, (n, OBS))
    act = jnp.tanh(jax.random.normal(k2, (n, ACT)))
    next_obs = obs + 0.1 * jnp.concatenate([act, act[:, :1]], axis=-1)
    reward = obs.sum(-1) + 0.1 * jax.random.normal(k3, (n,))
    data = Transition.from_arrays(obs, act, reward, next_obs, jnp.zeros(n))
    return buffer_lib.from_transitions(data, capacity)


def seed_inputs(guide=("state", "policy", "transition")):
    keys = jax.random.split(jax.random.PRNGKey(0), 4 * SEEDS).reshape(4, SEEDS, -1)
    gens = jax.vmap(lambda k: edis.create(k, OBS, ACT, DIFF, ENERGY, guide))(keys[0])
    real = jax.vmap(lambda k: make_buffer(k, 50, 64))(keys[1])
    online = jax.vmap(lambda k: make_buffer(k, 20, 32))(keys[2])
    # A policy whose params differ per seed: a pytree callable with a leading seed axis.
    weights = jax.random.normal(jax.random.PRNGKey(9), (SEEDS, OBS, ACT))
    policy = jax.tree_util.Partial(_linear_policy, weights)
    return gens, real, online, policy, keys[3]


def _linear_policy(weights, key, obs):
    return jnp.tanh(obs @ weights + 0.1 * jax.random.normal(key, obs.shape[:-1] + (ACT,)))


def seed(tree, i):
    return jax.tree.map(lambda a: a[i], tree)


def assert_trees_close(a, b, atol):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(x, y, atol=atol, rtol=0)


@pytest.fixture(scope="module")
def vmapped():
    gens, real, online, policy, keys = seed_inputs()
    trained, metrics = retrain_vmap(gens, real, online, policy, keys)
    samples = generate_vmap(trained, keys)
    return (gens, real, online, policy, keys), trained, metrics, samples


def test_vmapped_generator_equals_separate_runs(vmapped):
    (gens, real, online, policy, keys), trained, metrics, samples = vmapped
    for i in range(SEEDS):
        alone, alone_metrics = retrain_jit(
            seed(gens, i), seed(real, i), seed(online, i), seed(policy, i), keys[i]
        )
        # Same program up to batching: float32 differences of ~1e-6 through 25 Adam steps.
        assert_trees_close(alone, seed(trained, i), atol=1e-4)
        assert_trees_close(alone_metrics, seed(metrics, i), atol=1e-4)
        assert_trees_close(generate_jit(alone, keys[i], N), seed(samples, i), atol=1e-3)
    assert set(metrics) >= {"diffusion_loss", "cep_state_loss", "cep_policy_acc"}
    assert samples.obs.shape == (SEEDS, N, OBS) and samples.reward.shape == (SEEDS, N)
    assert not np.allclose(samples.obs[0], samples.obs[1])  # seeds differ
    first = jax.tree.leaves(trained.diffusion.params)[0]
    assert not np.allclose(first[0], first[1])


def test_progress_paths_equal_the_vmapped_ones(vmapped):
    (gens, real, online, policy, keys), trained, metrics, samples = vmapped
    progress, progress_metrics = edis.retrain_with_progress(
        gens, real, online, policy, keys, progress=False
    )
    assert_trees_close(progress, trained, atol=1e-4)
    assert_trees_close(progress_metrics, metrics, atol=1e-4)
    out = edis.generate_with_progress(progress, keys, N, progress=False)
    assert_trees_close(out, samples, atol=1e-3)


def test_guided_generation_compiles_once(vmapped, monkeypatch):
    _, trained, _, _ = vmapped
    traces = []
    real_vector = guidance_lib.guidance_vector

    def counting(*args, **kwargs):
        traces.append(1)
        return real_vector(*args, **kwargs)

    monkeypatch.setattr(guidance_lib, "guidance_vector", counting)
    keys = jax.random.split(jax.random.PRNGKey(5), SEEDS)
    before = sampler._sample_rows_jit._cache_size()
    edis.generate_with_progress(trained, keys, N, progress=False)
    first = len(traces)
    assert first > 0  # the guidance was traced (twice per Heun step body)
    rescaled = trained.replace(scales=trained.scales * 3.0)  # leaves change, not structure
    other_keys = jax.random.split(jax.random.PRNGKey(6), SEEDS)
    out = edis.generate_with_progress(rescaled, other_keys, N, progress=False)
    assert len(traces) == first  # three batches x two calls, one trace
    assert sampler._sample_rows_jit._cache_size() == before + 1
    assert out.obs.shape == (SEEDS, N, OBS)


def test_plain_synther_and_terminals():
    gens, real, online, policy, keys = seed_inputs(guide=())
    gen, metrics = retrain_jit(seed(gens, 0), seed(real, 0), seed(online, 0), seed(policy, 0), keys[0])
    assert set(metrics) == {"diffusion_loss"} and np.isfinite(metrics["diffusion_loss"])
    assert gen.guidance is None
    out = generate_jit(gen, keys[0], 30, terminal_fn=_falls)
    np.testing.assert_array_equal(out.terminal, (out.next_obs[:, 0] < 0).astype(np.float32))
    assert out.terminal.dtype == jnp.float32 and 0 < out.terminal.sum() < 30
    assert jnp.all(out.mc_return == 0)
    # The normaliser was refit on the filled rows of the real buffer only.
    filled = seed(real, 0).data.to_vector()[:50]
    np.testing.assert_allclose(gen.normalizer.mean, filled.mean(0), atol=1e-5)


def _falls(obs, action, next_obs):
    return next_obs[:, 0] < 0


def test_bad_input_gets_clear_errors():
    with pytest.raises(ValueError, match="invalid guide"):
        edis.create(jax.random.PRNGKey(0), OBS, ACT, DIFF, ENERGY, ("state", "reward"))
    gen = edis.create(jax.random.PRNGKey(0), OBS + 1, ACT, DIFF, ENERGY)
    buf = make_buffer(jax.random.PRNGKey(1), 10, 10)
    with pytest.raises(ValueError, match="create it with the dataset's dims"):
        edis.retrain(gen, buf, buf, None, jax.random.PRNGKey(2))
    with pytest.raises(ValueError, match="one key per seed"):
        edis.generate_with_progress(gen, jax.random.PRNGKey(2), 10)

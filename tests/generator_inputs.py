"""Inputs shared by the generator's tests (test_generator.py, test_generator_phases.py): tiny
configs, buffers, a per-seed policy, and comparisons of two compiled programs' results."""

import jax
import jax.numpy as jnp
import numpy as np

from edis_jax import generator
from edis_jax.config.generator_configs import DiffusionConfig, EnergyConfig
from edis_jax.data import buffer
from edis_jax.data.transition import Transition

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
    # Created one by one and stacked: seeds differ in their leaves only.
    gens = stack([generator.create(k, OBS, ACT, DIFF, ENERGY, guide) for k in keys[0]])
    real = jax.jit(jax.vmap(lambda k: make_buffer(k, 50, 64)))(keys[1])
    online = jax.jit(jax.vmap(lambda k: make_buffer(k, 20, 32)))(keys[2])
    # A policy whose params differ per seed: a pytree callable with a leading seed axis.
    weights = jax.random.normal(jax.random.PRNGKey(9), (SEEDS, OBS, ACT))
    policy = jax.tree_util.Partial(linear_policy, weights)
    return gens, real, online, policy, keys[3]


def stack(trees):
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)


def linear_policy(weights, key, obs):
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

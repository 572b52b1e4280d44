"""Device replay buffers: wrap-around, mixture ratios, vmap over seeds."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from edis_jax.data import buffer
from edis_jax.data.transition import Transition


def _rows(values, obs_dim=3, act_dim=2) -> Transition:
    """Transitions whose every field encodes `values`, so a row's origin is visible."""
    v = jnp.asarray(values, jnp.float32)
    return Transition(
        obs=jnp.repeat(v[:, None], obs_dim, 1),
        action=jnp.repeat(v[:, None], act_dim, 1),
        reward=v,
        next_obs=jnp.repeat(v[:, None], obs_dim, 1) + 0.5,
        terminal=jnp.zeros_like(v),
        mc_return=v * 2,
    )


def test_add_wraps_around_and_keeps_newest():
    buf = buffer.create(jax.tree.map(lambda x: x[0], _rows([0.0])), capacity=5)
    add = jax.jit(buffer.add)
    for i in range(1, 8):  # 7 single adds into 5 slots
        buf = add(buf, jax.tree.map(lambda x: x[0], _rows([float(i)])))
    assert int(buf.size) == 5 and int(buf.ptr) == 2
    # Slots 0,1 were overwritten by 6,7; slots 2..4 hold 3,4,5.
    np.testing.assert_array_equal(buf.data.reward, [6, 7, 3, 4, 5])
    np.testing.assert_array_equal(buf.data.obs[:, 0], [6, 7, 3, 4, 5])
    np.testing.assert_array_equal(buf.data.mc_return, [12, 14, 6, 8, 10])


def test_add_batch_wraps_and_rejects_oversized_batch():
    buf = buffer.from_transitions(_rows([1, 2, 3]), capacity=4)
    buf = jax.jit(buffer.add_batch)(buf, _rows([4, 5, 6]))
    np.testing.assert_array_equal(buf.data.reward, [5, 6, 3, 4])
    assert int(buf.ptr) == 2 and int(buf.size) == 4
    with pytest.raises(ValueError, match="exceeds the buffer capacity"):
        buffer.add_batch(buf, _rows(range(5)))


def test_sample_only_from_filled_rows():
    buf = buffer.from_transitions(_rows([7, 8]), capacity=100)
    batch = buffer.sample(buf, jax.random.PRNGKey(0), 1000)
    assert set(np.unique(batch.reward).tolist()) == {7.0, 8.0}


@pytest.mark.parametrize("ratio", [0.0, 0.25, 0.5, 0.9, 1.0])
def test_mixture_gives_exact_ratio(ratio):
    a = buffer.from_transitions(_rows(np.ones(10)))
    b = buffer.from_transitions(_rows(-np.ones(10)))
    mix = buffer.Mixture.of(a, b, weights=[ratio, 1 - ratio])
    batch = jax.jit(buffer.sample_mixture, static_argnums=2)(mix, jax.random.PRNGKey(1), 256)
    assert int((batch.reward > 0).sum()) == round(ratio * 256)


def test_mixture_ratio_change_does_not_retrace():
    traces = []

    @jax.jit
    def draw(mix, key):
        traces.append(1)
        return buffer.sample_mixture(mix, key, 64)

    a, b = buffer.from_transitions(_rows(np.ones(4))), buffer.from_transitions(_rows(-np.ones(4)))
    for w in (0.1, 0.5, 0.7):
        draw(buffer.Mixture.of(a, b, weights=[w, 1 - w]), jax.random.PRNGKey(0))
    assert len(traces) == 1


def test_empty_buffer_with_zero_weight_is_never_used():
    full = buffer.from_transitions(_rows([3, 4, 5]))
    empty = buffer.create(jax.tree.map(lambda x: x[0], _rows([0])), 8)
    batch = buffer.sample_mixture(
        buffer.Mixture.of(empty, full, weights=[0, 1]), jax.random.PRNGKey(2), 50
    )
    assert bool(jnp.all(batch.reward >= 3))


def test_vmap_over_seeds_keeps_buffers_independent():
    data = jax.tree.map(lambda x: jnp.stack([x, x + 100]), _rows([1, 2, 3]))
    bufs = jax.vmap(lambda d: buffer.from_transitions(d, capacity=4))(data)
    extra = jax.tree.map(lambda x: jnp.stack([x, x + 100]), _rows([9, 10]))
    bufs = jax.vmap(buffer.add_batch)(bufs, extra)
    np.testing.assert_array_equal(bufs.data.reward[0], [10, 2, 3, 9])
    np.testing.assert_array_equal(bufs.data.reward[1], [110, 102, 103, 109])
    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    batch = jax.vmap(lambda b, k: buffer.sample(b, k, 200))(bufs, keys)
    assert bool(jnp.all(batch.reward[0] < 50)) and bool(jnp.all(batch.reward[1] > 50))

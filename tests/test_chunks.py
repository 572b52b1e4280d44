"""The chunked driver (train/chunks.py): seed programs equal vmap and compile once per shape
and static argument; chunks run in order with their outputs kept; phase timings add up."""

import jax
import jax.numpy as jnp
import numpy as np

from edis_jax.train import chunks


def _scaled_sum(x, w, *, power):
    return jnp.sum(w * x**power)


def _count_up(total, key, *, num_steps):
    """num_steps steps of adding fold_in(key, step)'s uniform draw; step = the total's count."""

    def body(carry, _):
        value, count = carry
        return (value + jax.random.uniform(jax.random.fold_in(key, count)), count + 1), None

    return jax.lax.scan(body, total, None, length=num_steps)[0], total[1]


def test_seed_programs_equal_vmap_and_compile_once_per_shape_and_static():
    x, w = jnp.arange(6.0).reshape(3, 2), jnp.array([1.0, 2.0, 3.0])
    before = chunks._seed_program._cache_size()
    out = chunks.over_seeds(_scaled_sum, x, w, power=2)
    np.testing.assert_allclose(out, jax.vmap(lambda a, b: _scaled_sum(a, b, power=2))(x, w))
    chunks.over_seeds(_scaled_sum, x + 1.0, 2 * w, power=2)  # new values: same program
    assert chunks._seed_program._cache_size() == before + 1
    chunks.over_seeds(_scaled_sum, x, w, power=3)  # a new static argument compiles
    chunks.over_seeds(_scaled_sum, x[:2], w[:2], power=2)  # and a new shape
    assert chunks._seed_program._cache_size() == before + 3
    shared = chunks.over_seeds(_scaled_sum, x, 2.0, in_axes=(0, None), power=1)
    np.testing.assert_allclose(shared, 2.0 * x.sum(1))


def test_chunks_run_in_order_and_do_not_change_the_result():
    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    start = (jnp.zeros(2), jnp.zeros(2, jnp.int32))

    def chunk(carry, i, n):
        return chunks.over_seeds(_count_up, carry, keys, num_steps=n)

    timings = {}
    clock = chunks.PhaseClock(timings)
    whole, _ = chunks.run_chunks(chunk, start, [10], desc="whole", progress=False)
    parts, outs = chunks.run_chunks(
        chunk, start, [3, 3, 4], desc="parts", progress=False, clock=clock, phase="count"
    )
    np.testing.assert_allclose(parts[0], whole[0], rtol=1e-6)
    assert np.all(parts[1] == 10)
    assert [np.asarray(o).tolist() for o in outs] == [[0, 0], [3, 3], [6, 6]]  # counts at start
    assert set(timings) == {"count"} and timings["count"] > 0
    assert chunks.run_chunks(chunk, start, [], desc="none", progress=False) == (start, [])

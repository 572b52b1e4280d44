"""Fixed-capacity replay buffers on device, and batches mixed from several of them.

A buffer is a pytree (storage, pointer, size), so it lives inside jitted and vmapped programs:
with a leading seed axis every seed has its own storage and pointer. Capacity is the static
leading size of the storage; pointer and size are int32 leaves.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from edis_jax.data.transition import Transition


class ReplayBuffer(struct.PyTreeNode):
    data: Transition  # every leaf has leading axis `capacity`
    ptr: jnp.ndarray  # next row to write
    size: jnp.ndarray  # rows filled so far (<= capacity)

    @property
    def capacity(self) -> int:
        return self.data.reward.shape[-1]


def create(example: Transition, capacity: int) -> ReplayBuffer:
    """An empty buffer whose rows look like `example` (one unbatched transition)."""
    if capacity <= 0:
        raise ValueError(f"buffer capacity must be > 0, got {capacity}")
    storage = jax.tree.map(lambda x: jnp.zeros((capacity, *jnp.shape(x)), jnp.float32), example)
    return ReplayBuffer(storage, jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32))


def from_transitions(data: Transition, capacity: int | None = None) -> ReplayBuffer:
    """A buffer holding `data` (batched), with room for `capacity` rows in all."""
    n = len(data)
    capacity = n if capacity is None else capacity
    if capacity < n:
        raise ValueError(f"capacity {capacity} is smaller than the {n} transitions given")
    buffer = create(jax.tree.map(lambda x: x[0], data), capacity)
    return add_batch(buffer, data)


def add(buffer: ReplayBuffer, transition: Transition) -> ReplayBuffer:
    """Write one transition at the pointer, overwriting the oldest row once full."""
    data = jax.tree.map(lambda store, x: store.at[buffer.ptr].set(x), buffer.data, transition)
    return _advance(buffer.replace(data=data), 1)


def add_batch(buffer: ReplayBuffer, batch: Transition) -> ReplayBuffer:
    """Write a batch of rows in order, wrapping around the end of the storage."""
    n = len(batch)
    if n > buffer.capacity:
        raise ValueError(f"batch of {n} rows exceeds the buffer capacity {buffer.capacity}")
    idx = (buffer.ptr + jnp.arange(n)) % buffer.capacity
    data = jax.tree.map(lambda store, x: store.at[idx].set(x), buffer.data, batch)
    return _advance(buffer.replace(data=data), n)


def set_mc_return(buffer: ReplayBuffer, rows: jnp.ndarray, values: jnp.ndarray) -> ReplayBuffer:
    """Overwrite mc_return at `rows` (written earlier); rows >= capacity are padding, ignored."""
    mc_return = buffer.data.mc_return.at[rows].set(values, mode="drop")
    return buffer.replace(data=buffer.data.replace(mc_return=mc_return))


def _advance(buffer: ReplayBuffer, n: int) -> ReplayBuffer:
    return buffer.replace(
        ptr=(buffer.ptr + n) % buffer.capacity,
        size=jnp.minimum(buffer.size + n, buffer.capacity),
    )


def sample(buffer: ReplayBuffer, key: jax.Array, n: int) -> Transition:
    """n rows uniformly with replacement from the filled part. An empty buffer yields row 0
    (zeros); mixtures give it zero weight, so such rows are never used."""
    idx = jax.random.randint(key, (n,), 0, jnp.maximum(buffer.size, 1))
    return jax.tree.map(lambda store: store[idx], buffer.data)


class Mixture(struct.PyTreeNode):
    """Several buffers and the fraction of each batch that each provides.

    `weights` is a leaf: changing the ratio (say, from real-only data to synthetic + online at
    the first retrain) reuses the same compiled program.
    """

    buffers: tuple[ReplayBuffer, ...]
    weights: jnp.ndarray

    @classmethod
    def of(cls, *buffers: ReplayBuffer, weights=None) -> Mixture:
        if weights is None:
            weights = [1.0] + [0.0] * (len(buffers) - 1)
        return cls(tuple(buffers), jnp.asarray(weights, jnp.float32))


def sample_mixture(mixture: Mixture, key: jax.Array, n: int) -> Transition:
    """n rows: the first round(w_0 n) from buffer 0, the next round(w_1 n) from buffer 1, ...

    The split is deterministic (no binomial noise in the ratio), and the shapes are static, so
    any weights compile to the same program.
    """
    w = mixture.weights / jnp.maximum(mixture.weights.sum(), 1e-12)
    bounds = jnp.round(jnp.cumsum(w) * n)  # row i comes from the first buffer with i < bound
    source = jnp.searchsorted(bounds, jnp.arange(n), side="right")
    source = jnp.minimum(source, len(mixture.buffers) - 1)
    keys = jax.random.split(key, len(mixture.buffers))
    batches = [sample(b, k, n) for b, k in zip(mixture.buffers, keys, strict=True)]

    def pick(*leaves):
        stacked = jnp.stack(leaves)  # (num_buffers, n, ...)
        return jnp.take_along_axis(
            stacked, source.reshape(1, n, *([1] * (stacked.ndim - 2))), axis=0
        )[0]

    return jax.tree.map(pick, *batches)

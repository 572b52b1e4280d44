"""Per-dimension standard normalisers (for agent states and for whole transition vectors)."""

from __future__ import annotations

import jax.numpy as jnp
from flax import struct

from edis_jax.data.transition import Transition


class Normalizer(struct.PyTreeNode):
    """x -> (x - mean) / std, per dimension. Leaves are arrays, so it vmaps and checkpoints."""

    mean: jnp.ndarray
    std: jnp.ndarray

    @classmethod
    def fit(cls, x: jnp.ndarray, eps: float = 1e-3, mask: jnp.ndarray | None = None) -> Normalizer:
        """Fit to the rows of x (rows where `mask` is 0 are ignored). eps floors the std so a
        constant dimension maps to zero instead of dividing by zero."""
        x = jnp.asarray(x, jnp.float32)
        if mask is None:
            mean, var = x.mean(0), x.var(0)
        else:
            w = jnp.asarray(mask, jnp.float32)[:, None]
            n = jnp.maximum(w.sum(), 1.0)
            mean = (w * x).sum(0) / n
            var = (w * (x - mean) ** 2).sum(0) / n
        return cls(mean=mean, std=jnp.sqrt(var) + eps)

    @classmethod
    def identity(cls, dim: int) -> Normalizer:
        return cls(mean=jnp.zeros(dim, jnp.float32), std=jnp.ones(dim, jnp.float32))

    def normalize(self, x: jnp.ndarray) -> jnp.ndarray:
        return (x - self.mean) / self.std

    def denormalize(self, x: jnp.ndarray) -> jnp.ndarray:
        return x * self.std + self.mean


class TransitionCodec(struct.PyTreeNode):
    """Transitions <-> the generator's normalised data vector x = (s, a, r, s' or s' - s).

    `delta` models the next state as its change s' - s: a residual much smaller than s' in most
    dims, so a model error of the same size in normalised units is a smaller error in s'."""

    normalizer: Normalizer
    delta: bool = struct.field(pytree_node=False, default=False)

    def vector(self, t: Transition) -> jnp.ndarray:
        return t.to_vector(self.delta)

    def encode(self, t: Transition) -> jnp.ndarray:
        return self.normalizer.normalize(t.to_vector(self.delta))

    def decode(self, x: jnp.ndarray, obs_dim: int, act_dim: int) -> Transition:
        return Transition.from_vector(self.normalizer.denormalize(x), obs_dim, act_dim, self.delta)

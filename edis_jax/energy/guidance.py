"""Energy guidance g(x, sigma) = clip( sum_k w_k m_k * grad_x E_k(x, sigma) ) (DESIGN.md section 2).

E_s guides the s dims, E_a the a dims and E_t the s' dims. One `jax.grad` of the summed weighted
energies gives every term in one backward pass: energy k sees x through `m_k x + stop_grad(...)`,
so its gradient reaches only its own dims while its value is unchanged. Rows of g longer than
sqrt(D) * clip_factor are scaled down to that norm. Adding +g to the sampler's slope d moves
samples down the energies, towards the online distribution.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
from flax import struct

from edis_jax.config.generator_configs import GUIDES
from edis_jax.data.transition import vector_slices
from edis_jax.energy.model import EnergySet, energy

EnergyFn = Callable[[jnp.ndarray, jnp.ndarray], jnp.ndarray]  # (x (B, D), sigma) -> (B,)

GUIDED_PART = {"state": "obs", "policy": "action", "transition": "next_obs"}


class Guidance(struct.PyTreeNode):
    """A pytree callable g(x, sigma) over the learned energies; crosses jit without retracing."""

    energies: EnergySet
    scales: jnp.ndarray  # (3,) = (w_s, w_a, w_t), in GUIDES order
    masks: jnp.ndarray  # (3, D), in GUIDES order
    guide: tuple[str, ...] = struct.field(pytree_node=False)
    sigma_scaled: bool = struct.field(pytree_node=False, default=False)

    def __call__(self, x: jnp.ndarray, sigma: jnp.ndarray) -> jnp.ndarray:
        fns, masks, scales = {}, {}, {}
        for name in self.guide:
            k = GUIDES.index(name)
            fns[name] = lambda y, s, name=name: energy(self.energies, name, y, s)
            masks[name], scales[name] = self.masks[k], self.scales[k]
        return guidance_vector(
            fns, masks, scales, x, sigma, self.energies.clip_factor, self.sigma_scaled
        )


def make_guidance(
    energies: EnergySet, scales: jnp.ndarray, obs_dim: int, act_dim: int, guide: tuple[str, ...]
) -> Guidance | None:
    """The guidance of the energies named in `guide`; None when `guide` is empty (SynthER)."""
    if not guide:
        return None
    masks = guide_masks(obs_dim, act_dim)
    stacked = jnp.stack([masks[name] for name in GUIDES])
    return Guidance(energies, scales, stacked, tuple(guide), energies.config.sigma_scaled)


def guidance_vector(
    energy_fns: Mapping[str, EnergyFn],
    masks: Mapping[str, jnp.ndarray],
    scales: Mapping[str, jnp.ndarray],
    x: jnp.ndarray,
    sigma: jnp.ndarray,
    clip_factor,
    sigma_scaled: bool = False,
) -> jnp.ndarray:
    """sum_k w_k m_k * grad E_k(x, sigma), optionally times sigma, rows clipped; shape of x.

    `sigma_scaled` multiplies by sigma: the exact score correction of p ~ q exp(-E), since the
    sampler's slope is d = -sigma grad log p. Off by default, like the published code.
    """

    def total_energy(x):
        total = 0.0
        for name, fn in energy_fns.items():
            m = masks[name]
            only_masked = m * x + jax.lax.stop_gradient((1.0 - m) * x)
            total = total + scales[name] * jnp.sum(fn(only_masked, sigma))
        return total

    g = jax.grad(total_energy)(x)
    if sigma_scaled:
        g = g * jnp.reshape(sigma, jnp.shape(sigma) + (1,) * (g.ndim - jnp.ndim(sigma)))
    return clip_rows(g, jnp.sqrt(jnp.float32(x.shape[-1])) * clip_factor)


def clip_rows(g: jnp.ndarray, max_norm) -> jnp.ndarray:
    """Rescale every row whose L2 norm exceeds max_norm down to max_norm."""
    norm = jnp.linalg.norm(g, axis=-1, keepdims=True)
    return g * jnp.minimum(1.0, max_norm / jnp.maximum(norm, 1e-12))


def guide_masks(obs_dim: int, act_dim: int) -> dict[str, jnp.ndarray]:
    """1.0 on the dims of x = (s, a, r, s') that each energy guides."""
    slices = vector_slices(obs_dim, act_dim)
    dim = 2 * obs_dim + act_dim + 1
    out = {}
    for name, part in GUIDED_PART.items():
        out[name] = jnp.zeros((dim,), jnp.float32).at[slices[part]].set(1.0)
    return out

"""The three energy networks E_s, E_a, E_t and their (joint) Adam state.

Each energy is an `EnergyNet` MLP on (x, c_noise(sigma)) in the normalised data space. The three
param trees sit in one dict so that one `jax.grad` of the summed CEP losses trains them all: the
losses share no params, and Adam is per-parameter, so this equals three separate optimisers. The
learning rate and the guidance clip factor are leaves. The energies persist across retrains.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct

from edis_jax.config.generator_configs import GUIDES, EnergyConfig
from edis_jax.diffusion import edm
from edis_jax.nets import EnergyNet


class EnergySet(struct.PyTreeNode):
    params: dict[str, Any]  # keyed by "state", "policy", "transition"
    opt_state: Any  # optax.inject_hyperparams state: holds the learning-rate leaf
    step: jnp.ndarray  # int32, CEP steps taken
    clip_factor: jnp.ndarray  # guidance rows are clipped to norm sqrt(D) * clip_factor
    config: EnergyConfig = struct.field(pytree_node=False)

    @property
    def network(self) -> EnergyNet:
        return EnergyNet(self.config.hidden_dims)


def init(key: jax.Array, data_dim: int, cfg: EnergyConfig) -> EnergySet:
    """Three freshly initialised energies (all of them, whichever are used for guidance)."""
    net = EnergyNet(cfg.hidden_dims)
    x, c = jnp.zeros((1, data_dim)), jnp.zeros((1,))
    keys = jax.random.split(key, len(GUIDES))
    params = {name: net.init(k, x, c)["params"] for name, k in zip(GUIDES, keys, strict=True)}
    return EnergySet(
        params=params,
        opt_state=optimizer(cfg.lr).init(params),
        step=jnp.zeros((), jnp.int32),
        clip_factor=jnp.asarray(cfg.clip_factor, jnp.float32),
        config=cfg,
    )


def energy(es: EnergySet, name: str, x: jnp.ndarray, sigma, params=None) -> jnp.ndarray:
    """E_name(x, c_noise(sigma)) for rows x (..., D); sigma broadcasts against x's rows."""
    params = es.params[name] if params is None else params
    c = jnp.broadcast_to(edm.c_noise(jnp.asarray(sigma, x.dtype)), x.shape[:-1])
    return es.network.apply({"params": params}, x, c)


def optimizer(lr: float = 0.0) -> optax.GradientTransformation:
    """Adam (EDIS: lr 1e-3). The learning rate lives in the optimiser state as a leaf
    (`opt_state.hyperparams["learning_rate"]`); `lr` here only seeds it at init."""
    return optax.inject_hyperparams(optax.adam)(learning_rate=lr)

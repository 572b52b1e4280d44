"""The diffusion model's train state and its training loop.

`DiffusionState` holds the residual-MLP params, their EMA (used for sampling), the optimiser
state, the fixed random Fourier frequencies of the time embedding (outside the optimised params,
never trained) and a step counter. The peak learning rate is a leaf. Training runs as `lax.scan`
chunks whose batches are drawn inside the scan; each step's key is `fold_in(key, step)`, so one
long chunk and many short ones give the same result.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct

from edis_jax.config.generator_configs import DiffusionConfig
from edis_jax.diffusion import edm
from edis_jax.nets import ResidualMLPDenoiser

# EMA warm-up of ema_pytorch, which SynthER uses with its defaults: the EMA copies the params for
# the first 100 steps, then its decay grows as 1 - (1 + t)^(-2/3) up to `ema_decay`. Without it a
# short (re)training would keep much of the random initialisation in the EMA.
EMA_START = 100
EMA_POWER = 2.0 / 3.0

BatchFn = Callable[[jax.Array], jnp.ndarray]  # key -> a batch (B, D) of normalised data


class DiffusionState(struct.PyTreeNode):
    params: Any
    ema_params: Any
    opt_state: Any
    freqs: jnp.ndarray  # (num_fourier,) random Fourier frequencies, fixed at init
    step: jnp.ndarray  # int32, optimiser steps taken
    lr: jnp.ndarray  # peak learning rate of the cosine schedule
    # The cosine runs from `lr` at step `schedule_start` to 0 at `schedule_start + schedule_steps`
    # (int32 leaves: a warm-started model restarts or continues it without recompiling).
    schedule_start: jnp.ndarray
    schedule_steps: jnp.ndarray
    data_dim: int = struct.field(pytree_node=False)
    config: DiffusionConfig = struct.field(pytree_node=False)

    @property
    def network(self) -> ResidualMLPDenoiser:
        c = self.config
        return ResidualMLPDenoiser(
            self.data_dim, c.width, c.depth, c.dim_t, c.activation, c.layer_norm
        )


def init(key: jax.Array, data_dim: int, cfg: DiffusionConfig) -> DiffusionState:
    """A fresh model: random params (EMA = params), fresh Adam state, new Fourier frequencies."""
    if data_dim <= 0:
        raise ValueError(f"diffusion data_dim must be > 0, got {data_dim}")
    key_freqs, key_params = jax.random.split(key)
    # SynthER draws the time-embedding frequencies from N(0, 1) once and never trains them.
    freqs = jax.random.normal(key_freqs, (cfg.num_fourier,), jnp.float32)
    step, lr = jnp.zeros((), jnp.int32), jnp.asarray(cfg.lr, jnp.float32)
    horizon = jnp.asarray(max(cfg.train_steps, 1), jnp.int32)
    state = DiffusionState(None, None, None, freqs, step, lr, step, horizon, data_dim, cfg)
    params = state.network.init(key_params, jnp.zeros((1, data_dim)), jnp.zeros((1,)), freqs)[
        "params"
    ]
    return state.replace(params=params, ema_params=params, opt_state=_optimizer(cfg).init(params))


def reinit(state: DiffusionState, key: jax.Array) -> DiffusionState:
    """A fresh model of the same shape, keeping the leaf hyperparameters (the peak lr)."""
    return init(key, state.data_dim, state.config).replace(lr=state.lr)


def restart_schedule(state: DiffusionState, num_steps) -> DiffusionState:
    """A cosine from the peak lr at the current step down to 0 after `num_steps` more steps."""
    return state.replace(
        schedule_start=state.step, schedule_steps=jnp.maximum(num_steps, 1).astype(jnp.int32)
    )


def denoiser(state: DiffusionState, *, ema: bool = True) -> Callable:
    """D(x; sigma) of the current (EMA by default) params."""
    network = _network_fn(state, state.ema_params if ema else state.params)
    return lambda x, sigma: edm.denoise(network, x, sigma, state.config.sigma_data)


def train_step(state: DiffusionState, batch: jnp.ndarray, key: jax.Array):
    """One Adam step on the EDM loss, then the (every `ema_every` steps) EMA update."""
    cfg = state.config

    def loss_fn(params):
        return edm.loss(_network_fn(state, params), batch, key, cfg)

    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    updates, opt_state = _optimizer(cfg).update(grads, state.opt_state, state.params)
    lr = state.lr * _cosine(state)
    params = optax.apply_updates(state.params, jax.tree.map(lambda u: -lr * u, updates))
    decay = _ema_decay(state.step, cfg)
    ema = jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, state.ema_params, params)
    state = state.replace(params=params, ema_params=ema, opt_state=opt_state, step=state.step + 1)
    return state, loss


def train_chunk(state: DiffusionState, batch_fn: BatchFn, key: jax.Array, num_steps: int):
    """`num_steps` training steps in one `lax.scan`; returns (state, mean loss).

    `batch_fn(key)` draws a batch from device data inside the scan. Step t uses
    `fold_in(key, t)`, so the result does not depend on how the steps are chunked.
    """

    def body(state, _):
        step_key = jax.random.fold_in(key, state.step)
        key_batch, key_loss = jax.random.split(step_key)
        return train_step(state, batch_fn(key_batch), key_loss)

    state, losses = jax.lax.scan(body, state, None, length=num_steps)
    return state, losses.mean()


# ----------------------------------------------------------------------------------- helpers


def _network_fn(state: DiffusionState, params) -> edm.Network:
    return lambda x, c: state.network.apply({"params": params}, x, c, state.freqs)


def _optimizer(cfg: DiffusionConfig) -> optax.GradientTransformation:
    # The learning rate is applied by hand (peak-lr leaf x cosine), so that it stays a leaf.
    return optax.chain(
        optax.clip_by_global_norm(cfg.grad_clip), optax.scale_by_adam(cfg.beta1, cfg.beta2)
    )


def _cosine(state: DiffusionState) -> jnp.ndarray:
    # Cosine decay to 0 over one (re)training (SynthER); optax.cosine_decay_schedule's formula,
    # written out because its horizon here is a leaf.
    steps = state.schedule_steps.astype(jnp.float32)
    count = jnp.minimum((state.step - state.schedule_start).astype(jnp.float32), steps)
    return 0.5 * (1 + jnp.cos(jnp.pi * count / steps))


def _ema_decay(step: jnp.ndarray, cfg: DiffusionConfig) -> jnp.ndarray:
    """The EMA weight kept at this step: 1 between updates, 0 (copy) during the warm-up."""
    epoch = (step - EMA_START).astype(jnp.float32)
    warm = 1.0 - (1.0 + jnp.maximum(epoch, 0.0)) ** (-EMA_POWER)
    decay = jnp.where(epoch > 0, jnp.minimum(cfg.ema_decay, warm), 0.0)
    return jnp.where(step % cfg.ema_every == 0, decay, 1.0)

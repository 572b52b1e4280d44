"""Pieces every agent shares: Adam with a leaf learning rate, Polyak averaging, the update scan.

Learning rates are pytree leaves (not baked into an optax transform), so changing one between
phases, or giving each vmapped seed its own, reuses the compiled program.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct

from edis_jax.data.buffer import Mixture, sample_mixture
from edis_jax.data.normalizer import Normalizer

# Adam with PyTorch's defaults (b1 0.9, b2 0.999, eps 1e-8), as in CORL's agents; the step size
# is applied separately from the leaf `Learner.lr`.
ADAM = optax.scale_by_adam()


class Learner(struct.PyTreeNode):
    """One network's params, its Adam state and its learning rate (a leaf)."""

    params: Any
    opt_state: optax.OptState
    lr: jnp.ndarray

    @classmethod
    def create(cls, params, lr: float) -> Learner:
        return cls(params=params, opt_state=ADAM.init(params), lr=scalar(lr))

    def apply_gradients(self, grads, lr_scale: jnp.ndarray | float = 1.0) -> Learner:
        """One Adam step of size lr * lr_scale (lr_scale carries schedules such as IQL's decay)."""
        updates, opt_state = ADAM.update(grads, self.opt_state, self.params)
        step = -self.lr * lr_scale
        params = optax.apply_updates(self.params, jax.tree.map(lambda u: step * u, updates))
        return self.replace(params=params, opt_state=opt_state)


def update_chunk(agent, mixture: Mixture, key: jax.Array, num_updates: int, batch_size: int):
    """`num_updates` steps of (sample a batch from the mixture, `agent.update(batch)`) in one
    lax.scan, for any of the three agents.

    Metrics are averaged over the chunk. num_updates and batch_size are static; everything else
    is traced, so the same program serves any weights, learning rates or agent numbers, and it
    vmaps over a leading seed axis of (agent, mixture, key).
    """

    def step(agent, key):
        return agent.update(sample_mixture(mixture, key, batch_size))

    agent, metrics = jax.lax.scan(step, agent, jax.random.split(key, num_updates))
    return agent, jax.tree.map(lambda m: m.mean(0), metrics)


def polyak(target, online, tau: jnp.ndarray):
    """target <- (1 - tau) target + tau online, leaf by leaf."""
    return jax.tree.map(lambda t, o: t + tau * (o - t), target, online)


def scalar(value) -> jnp.ndarray:
    """A float32 scalar leaf (never weakly typed, so replacing it keeps the compiled program)."""
    return jnp.asarray(value, jnp.float32)


class Agent(struct.PyTreeNode):
    """The constructor the three agents share. A subclass names its algorithm (`NAME`) and its
    config type (`CONFIG`) and builds itself from checked arguments (`build`)."""

    @classmethod
    def create(
        cls,
        key: jax.Array,
        obs_dim: int,
        act_dim: int,
        config,
        *,
        obs_norm: Normalizer | None = None,
        reward_scale: float = 1.0,
        **options,
    ):
        """A fresh agent. obs_norm: the observation normaliser (identity if None); reward_scale
        (from the data) multiplies the config's; options: the algorithm's own (IQL's
        decay_steps)."""
        obs_norm = _checked_normalizer(
            cls.NAME, obs_dim, act_dim, config, cls.CONFIG, obs_norm, reward_scale
        )
        return cls.build(key, obs_dim, act_dim, config, obs_norm, reward_scale, **options)


def _checked_normalizer(
    name: str, obs_dim: int, act_dim: int, config, config_type: type, obs_norm, reward_scale
) -> Normalizer:
    """Validate create()'s arguments; returns the observation normaliser (identity if None)."""
    if not isinstance(config, config_type):
        raise ValueError(
            f"{name}.create needs a {config_type.__name__}, got {type(config).__name__}: "
            f"pass config.{name} (or {config_type.__name__}())"
        )
    for arg, value in (("obs_dim", obs_dim), ("act_dim", act_dim)):
        if not isinstance(value, int) or value <= 0:
            raise ValueError(f"{name}.create: {arg} must be a positive int, got {value!r}")
    if not (math.isfinite(reward_scale) and reward_scale > 0):
        raise ValueError(
            f"{name}.create: reward_scale must be a positive number, got {reward_scale}"
        )
    if obs_norm is None:
        return Normalizer.identity(obs_dim)
    if jnp.shape(obs_norm.mean) != (obs_dim,):
        raise ValueError(
            f"{name}.create: obs_norm has shape {jnp.shape(obs_norm.mean)}, expected ({obs_dim},): "
            "fit it on the observations only"
        )
    return obs_norm

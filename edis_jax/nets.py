"""Networks: MLPs, critic ensembles, policy heads and the diffusion model's residual MLP.

All are `flax.linen` modules; their params live inside the agent or model pytrees.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

# gelu is the exact erf form, as PyTorch's nn.GELU() (flax's default is the tanh approximation).
ACTIVATIONS: dict[str, Callable] = {
    "relu": nn.relu,
    "silu": nn.silu,
    "gelu": functools.partial(nn.gelu, approximate=False),
}
# PyTorch's nn.LayerNorm epsilon, which the published denoiser uses (flax's default is 1e-6).
DENOISER_LN_EPS = 1e-5

LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0  # tanh-Gaussian log-std range (SAC/CQL implementations)


class MLP(nn.Module):
    """Linear layers with `activation` between them; `output_dim` adds a final linear layer."""

    hidden_dims: Sequence[int]
    output_dim: int | None = None
    activation: str = "relu"
    layer_norm: bool = False

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        act = ACTIVATIONS[self.activation]
        for width in self.hidden_dims:
            x = nn.Dense(width)(x)
            if self.layer_norm:
                x = nn.LayerNorm()(x)
            x = act(x)
        if self.output_dim is not None:
            x = nn.Dense(self.output_dim)(x)
        return x


class Critic(nn.Module):
    """Q(s, a) -> scalar."""

    hidden_dims: Sequence[int]
    layer_norm: bool = False

    @nn.compact
    def __call__(self, obs: jnp.ndarray, action: jnp.ndarray) -> jnp.ndarray:
        x = jnp.concatenate([obs, action], axis=-1)
        return MLP(self.hidden_dims, 1, layer_norm=self.layer_norm)(x)[..., 0]


class CriticEnsemble(nn.Module):
    """`num` independent critics evaluated in one vectorised call: output (num, *batch)."""

    hidden_dims: Sequence[int]
    num: int = 2
    layer_norm: bool = False

    @nn.compact
    def __call__(self, obs: jnp.ndarray, action: jnp.ndarray) -> jnp.ndarray:
        ensemble = nn.vmap(
            Critic,
            variable_axes={"params": 0},
            split_rngs={"params": True},
            in_axes=None,
            out_axes=0,
            axis_size=self.num,
        )
        return ensemble(self.hidden_dims, self.layer_norm)(obs, action)


class ValueNet(nn.Module):
    """V(s) -> scalar."""

    hidden_dims: Sequence[int]

    @nn.compact
    def __call__(self, obs: jnp.ndarray) -> jnp.ndarray:
        return MLP(self.hidden_dims, 1)(obs)[..., 0]


class TanhGaussianActor(nn.Module):
    """SAC's policy head: returns (mean, log_std) of the Gaussian before the tanh squash."""

    hidden_dims: Sequence[int]
    act_dim: int

    @nn.compact
    def __call__(self, obs: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
        h = MLP(self.hidden_dims)(obs)
        mean = nn.Dense(self.act_dim)(h)
        log_std = jnp.clip(nn.Dense(self.act_dim)(h), LOG_STD_MIN, LOG_STD_MAX)
        return mean, log_std


class GaussianActor(nn.Module):
    """IQL's policy head: tanh-bounded mean, state-independent log-std (CORL's IQL)."""

    hidden_dims: Sequence[int]
    act_dim: int

    @nn.compact
    def __call__(self, obs: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
        mean = jnp.tanh(MLP(self.hidden_dims, self.act_dim)(obs))
        log_std = self.param("log_std", nn.initializers.zeros, (self.act_dim,))
        log_std = jnp.broadcast_to(jnp.clip(log_std, LOG_STD_MIN, LOG_STD_MAX), mean.shape)
        return mean, log_std


def gaussian_log_prob(mean, log_std, x) -> jnp.ndarray:
    """log N(x; mean, exp(log_std)^2), summed over the last axis."""
    z = (x - mean) * jnp.exp(-log_std)
    return jnp.sum(-0.5 * z**2 - log_std - 0.5 * math.log(2 * math.pi), axis=-1)


def tanh_gaussian_sample(key, mean, log_std) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Reparameterised action tanh(u), u ~ N(mean, std), and its log-probability."""
    u = mean + jnp.exp(log_std) * jax.random.normal(key, mean.shape)
    return jnp.tanh(u), gaussian_log_prob(mean, log_std, u) - _tanh_log_det(u)


def tanh_gaussian_log_prob(mean, log_std, action, eps: float = 1e-6) -> jnp.ndarray:
    """log-probability of a given action in (-1, 1) under the tanh-squashed Gaussian."""
    action = jnp.clip(action, -1 + eps, 1 - eps)
    u = jnp.arctanh(action)
    return gaussian_log_prob(mean, log_std, u) - _tanh_log_det(u)


def _tanh_log_det(u) -> jnp.ndarray:
    # log |d tanh(u)/du| = log(1 - tanh(u)^2), in the numerically stable form.
    return jnp.sum(2.0 * (math.log(2.0) - u - jax.nn.softplus(-2.0 * u)), axis=-1)


# --------------------------------------------------------------------------- diffusion model


def fourier_time_features(c_noise: jnp.ndarray, freqs: jnp.ndarray) -> jnp.ndarray:
    """[c, sin(2 pi f c), cos(2 pi f c)]: 2F + 1 values (SynthER's random Fourier embedding).
    `freqs` are drawn once and never trained."""
    c = c_noise[..., None]
    angles = 2.0 * math.pi * c * freqs
    return jnp.concatenate([c, jnp.sin(angles), jnp.cos(angles)], axis=-1)


class ResidualMLPDenoiser(nn.Module):
    """SynthER's residual MLP F(x, c_noise) (DESIGN.md section 2, Denoiser F)."""

    data_dim: int
    width: int = 1024
    depth: int = 6
    dim_t: int = 256
    activation: str = "relu"
    layer_norm: bool = False

    @nn.compact
    def __call__(self, x: jnp.ndarray, c_noise: jnp.ndarray, freqs: jnp.ndarray) -> jnp.ndarray:
        act = ACTIVATIONS[self.activation]
        t = fourier_time_features(c_noise, freqs)
        t = nn.Dense(self.dim_t)(t)
        t = nn.Dense(self.dim_t)(nn.silu(t))
        h = nn.Dense(self.dim_t)(x) + t
        h = nn.Dense(self.width)(h)
        for _ in range(self.depth):
            z = nn.LayerNorm(DENOISER_LN_EPS)(h) if self.layer_norm else h
            h = h + nn.Dense(self.width)(act(z))
        z = nn.LayerNorm(DENOISER_LN_EPS)(h) if self.layer_norm else h
        return nn.Dense(self.data_dim)(act(z))


class EnergyNet(nn.Module):
    """E(x, c_noise(sigma)) -> scalar: an MLP on the D + 1 inputs."""

    hidden_dims: Sequence[int] = (256, 256, 256)

    @nn.compact
    def __call__(self, x: jnp.ndarray, c_noise: jnp.ndarray) -> jnp.ndarray:
        c = jnp.broadcast_to(c_noise, x.shape[:-1])[..., None]
        return MLP(self.hidden_dims, 1)(jnp.concatenate([x, c], axis=-1))[..., 0]

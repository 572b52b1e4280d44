"""EDM (Karras et al. 2022) pieces: noise schedule, preconditioning, denoiser and training loss.

Everything here is a pure function of arrays; the network enters as a callable
`network(x_in, c_noise) -> F`, so the same code serves the learned residual MLP and the exact
analytic denoisers used in the tests. Constants are SynthER's settings (DESIGN.md section 2).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from edis_jax.config.generator_configs import DiffusionConfig

Network = Callable[[jnp.ndarray, jnp.ndarray], jnp.ndarray]  # (c_in * x, c_noise) -> F


def noise_levels(cfg: DiffusionConfig) -> jnp.ndarray:
    """sigma_0 = sigma_max > ... > sigma_{N-1} = sigma_min, then sigma_N = 0 (EDM eq. 5); (N+1,).

    Computed in float64 and cast once, as the published code computes it in Python floats, so
    the float32 chain starts from the same constants."""
    return jnp.asarray(np.append(_sigmas_float64(cfg), 0.0).astype(np.float32))


def churn(cfg: DiffusionConfig) -> jnp.ndarray:
    """gamma_i = min(S_churn / N, sqrt(2) - 1) inside [S_tmin, S_tmax], else 0 (EDM Alg. 2); (N,).

    The bounds are compared against the float64 schedule, as in the published code."""
    sigma = _sigmas_float64(cfg)
    gamma = min(cfg.s_churn / cfg.num_steps, 2**0.5 - 1)
    inside = (sigma >= cfg.s_tmin) & (sigma <= cfg.s_tmax)
    return jnp.asarray(np.where(inside, gamma, 0.0).astype(np.float32))


def _sigmas_float64(cfg: DiffusionConfig) -> np.ndarray:
    n = cfg.num_steps
    i = np.arange(n, dtype=np.float64) / max(n - 1, 1)
    inv_rho = 1.0 / cfg.rho
    first, last = cfg.sigma_max**inv_rho, cfg.sigma_min**inv_rho
    return (first + i * (last - first)) ** cfg.rho


def preconditioning(sigma, sigma_data: float):
    """(c_skip, c_out, c_in, c_noise) of EDM Table 1."""
    total = sigma**2 + sigma_data**2
    c_skip = sigma_data**2 / total
    c_out = sigma * sigma_data / jnp.sqrt(total)
    c_in = 1.0 / jnp.sqrt(total)
    return c_skip, c_out, c_in, c_noise(sigma)


def c_noise(sigma) -> jnp.ndarray:
    """The network's (and the energies') time input ln(sigma) / 4."""
    return jnp.log(sigma) / 4.0


def denoise(network: Network, x: jnp.ndarray, sigma, sigma_data: float) -> jnp.ndarray:
    """D(x; sigma) = c_skip x + c_out F(c_in x, c_noise); sigma is a scalar or one per row."""
    sigma = jnp.broadcast_to(jnp.asarray(sigma, x.dtype), x.shape[:-1])
    c_skip, c_out, c_in, c_noise_ = preconditioning(sigma, sigma_data)
    f = network(c_in[..., None] * x, c_noise_)
    return c_skip[..., None] * x + c_out[..., None] * f


def loss_weight(sigma, sigma_data: float) -> jnp.ndarray:
    """lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2, which makes the effective
    target of F unit-variance at every noise level (EDM section 5)."""
    return (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2


def training_sigmas(key: jax.Array, n: int, cfg: DiffusionConfig) -> jnp.ndarray:
    """ln sigma ~ N(P_mean, P_std^2) (EDM section 5)."""
    return jnp.exp(cfg.p_mean + cfg.p_std * jax.random.normal(key, (n,)))


def loss(network: Network, x0: jnp.ndarray, key: jax.Array, cfg: DiffusionConfig) -> jnp.ndarray:
    """EDM loss on a batch x0 (B, D): weighted mean over dims of the squared denoising error,
    averaged over the batch."""
    key_sigma, key_noise = jax.random.split(key)
    sigma = training_sigmas(key_sigma, x0.shape[0], cfg)
    noisy = x0 + sigma[:, None] * jax.random.normal(key_noise, x0.shape)
    error = jnp.mean((denoise(network, noisy, sigma, cfg.sigma_data) - x0) ** 2, axis=-1)
    return jnp.mean(loss_weight(sigma, cfg.sigma_data) * error)

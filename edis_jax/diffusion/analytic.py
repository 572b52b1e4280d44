"""Exact denoisers of known distributions, for testing the sampler apart from any network."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def gmm_denoiser(weights, means, stds):
    """D(x; sigma) = E[x0 | x0 + sigma n = x] of the isotropic Gaussian mixture
    sum_c weights_c N(means_c, stds_c^2 I); means (C, D)."""
    w, mu, s = (jnp.asarray(a, jnp.float32) for a in (weights, means, stds))

    def denoise(x, sigma):
        var = s**2 + sigma**2  # (C,): each component convolved with the noise
        d2 = jnp.sum((x[:, None, :] - mu[None]) ** 2, axis=-1)
        log_resp = jnp.log(w) - 0.5 * d2 / var - 0.5 * x.shape[-1] * jnp.log(var)
        resp = jax.nn.softmax(log_resp, axis=1)
        post_mean = mu[None] + (s**2 / var)[None, :, None] * (x[:, None, :] - mu[None])
        return jnp.sum(resp[..., None] * post_mean, axis=1)

    return denoise

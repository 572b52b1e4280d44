"""Two of the data-alignment metrics of `edis-jax diagnose` (the third, the dynamics error, is in
simulators.py): the squared MMD between generated and target states, and the mean
log-likelihood of generated actions under a policy.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np


def state_mmd(
    generated: jnp.ndarray,
    target: jnp.ndarray,
    *,
    max_rows: int = 2000,
    seed: int = 0,
    bandwidth: float | None = None,
) -> float:
    """Unbiased squared MMD between two sets of states (rows), standardised by `target`'s stats.

    At most `max_rows` rows of each set are used (a fixed-seed subsample): the estimate costs
    O(rows^2). `bandwidth` defaults to sqrt(obs_dim) in standardised units.
    """
    generated, target = np.asarray(generated, np.float32), np.asarray(target, np.float32)
    if generated.ndim != 2 or target.ndim != 2 or generated.shape[1] != target.shape[1]:
        raise ValueError(
            f"state_mmd needs two (rows, obs_dim) arrays of equal obs_dim, got shapes "
            f"{generated.shape} and {target.shape}"
        )
    if len(generated) < 2 or len(target) < 2:
        raise ValueError("state_mmd needs at least 2 rows in each set")
    rng = np.random.default_rng(seed)
    generated, target = _subsample(generated, max_rows, rng), _subsample(target, max_rows, rng)
    mean, std = target.mean(0), target.std(0) + 1e-3  # floor: constant dims map to 0
    h = math.sqrt(target.shape[1]) if bandwidth is None else bandwidth
    return float(_mmd2_unbiased((generated - mean) / std, (target - mean) / std, h))


def action_logprob(agent, obs: jnp.ndarray, action: jnp.ndarray) -> float:
    """Mean log-likelihood of `action` given `obs` under `agent`'s policy (`agent.log_prob`)."""
    return float(jnp.mean(_log_prob(agent, obs, action)))


def _subsample(x: np.ndarray, max_rows: int, rng: np.random.Generator) -> np.ndarray:
    if len(x) <= max_rows:
        return x
    return x[rng.choice(len(x), max_rows, replace=False)]


@jax.jit
def _mmd2_unbiased(x: jnp.ndarray, y: jnp.ndarray, bandwidth: float) -> jnp.ndarray:
    # Gretton et al. 2012, eq. 3: within-set sums exclude the diagonal (k(x, x) = 1).
    def kernel_sum(a, b):
        sq = jnp.sum(a**2, 1)[:, None] + jnp.sum(b**2, 1)[None, :] - 2.0 * a @ b.T
        return jnp.sum(jnp.exp(-jnp.maximum(sq, 0.0) / (2.0 * bandwidth**2)))

    m, n = x.shape[0], y.shape[0]
    xx = (kernel_sum(x, x) - m) / (m * (m - 1))
    yy = (kernel_sum(y, y) - n) / (n * (n - 1))
    return xx + yy - 2.0 * kernel_sum(x, y) / (m * n)


@jax.jit
def _log_prob(agent, obs, action):
    return agent.log_prob(obs, action)

"""The data-alignment metrics of `edis-jax diagnose` (the dynamics error is in envs/simulators.py):
the squared MMD between generated and target states, the mean log-likelihood of generated
actions under a policy, and how well the transition energy's guidance gradient points towards
the true next state.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from edis_jax import generator
from edis_jax.data.buffer import ReplayBuffer
from edis_jax.data.transition import Transition, vector_slices
from edis_jax.diffusion import sampler
from edis_jax.energy import cep
from edis_jax.energy.model import energy


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


def transition_alignment(gen: generator.Generator, online: ReplayBuffer, key: jax.Array) -> dict:
    """Does E_t's guidance gradient point where the model's next states should go?

    On held-out online rows (s, a, s'_true) that CEP never trained on, the model's chain is
    inpainted on (s, a), K rows each, as for a held-out CEP bank. At every CEP level sigma_l,
    with x_l the chain row there and s'_end where that row ends:

    - "cos": mean cosine between -grad_{s'} E_t(x_l, sigma_l) and s'_true - s'_end (normalised
      space): the direction guidance pushes against the correction it should make (0: none);
    - "rank_acc": how often the positive, noised to sigma_l, has lower energy than all its K
      negatives (chance 1 / (K + 1)).

    A displacement whose cosine with the needed correction d is c brings s' at best to
    |d| sqrt(1 - c^2) from the truth; "best_cut" is 1 - sqrt(1 - c^2) at the last level, the
    most E_t guidance of that alignment can cut the distance to the true next state.
    """
    ecfg = gen.energy_cfg
    k_rows, k_chain, k_noise = jax.random.split(key, 3)
    positives, condition = cep.bank_rows(
        k_rows, online, gen.codec, ecfg, ("transition",), heldout=True
    )
    levels = generator.cep_levels(gen)
    x_end, saved = sampler.sample(
        gen.diffusion, k_chain, condition.values.shape[0], condition=condition, save_at=levels
    )
    sigmas = sampler.schedule(gen.diffusion_cfg).sigmas[jnp.asarray(levels)]
    groups, k = len(positives), ecfg.num_negatives
    x_true = gen.codec.encode(positives)
    slices = vector_slices(positives.obs_dim, positives.act_dim)
    s_next = slices["next_obs"]
    conditioned = jnp.arange(x_true.shape[-1]) < slices["action"].stop  # (s, a)
    needed = (jnp.repeat(x_true, k, axis=0) - x_end)[:, s_next]

    def one_level(x_l, sigma, noise_key):
        def total(x):
            return energy(gen.energies, "transition", x, sigma).sum()

        push = -jax.grad(total)(x_l)[:, s_next]
        pos = x_true + sigma * jax.random.normal(noise_key, x_true.shape)
        neg = jnp.where(conditioned, pos[:, None, :], x_l.reshape(groups, k, -1))
        e_pos = energy(gen.energies, "transition", pos, sigma)
        e_neg = energy(gen.energies, "transition", neg, sigma)
        return cosines(push, needed).mean(), jnp.mean(e_pos < e_neg.min(-1))

    noise_keys = jax.random.split(k_noise, len(levels))
    cos, rank_acc = jax.vmap(one_level)(saved, sigmas, noise_keys)
    last = jnp.clip(cos[-1], -1.0, 1.0)
    return {
        "sigma": sigmas,
        "cos": cos,
        "rank_acc": rank_acc,
        "chance": 1.0 / (k + 1),
        "best_cut": 1.0 - jnp.sqrt(1.0 - jnp.maximum(last, 0.0) ** 2),
    }


def model_rows_alignment(
    gen: generator.Generator, rows: Transition, true_next_obs: jnp.ndarray
) -> jnp.ndarray:
    """`transition_alignment`'s cosine at the last CEP level, on the model's own rows.

    `rows` are transitions the unguided chain generated and `true_next_obs` the simulator's next
    state for each row's (s, a). Returns the mean cosine between -grad_{s'} E_t(x, sigma) and
    the correction x_true - x in the s' dims, x encoding a row and x_true the row with the true
    next state. Here (s, a) come from the model, as in EDIS's guided sampling; in
    `transition_alignment` they are held-out online rows, like CEP's positives.
    """
    x = gen.codec.encode(rows)
    x_true = gen.codec.encode(rows.replace(next_obs=true_next_obs))
    s_next = vector_slices(rows.obs_dim, rows.act_dim)["next_obs"]
    sigma = sampler.schedule(gen.diffusion_cfg).sigmas[generator.cep_levels(gen)[-1]]

    def total(y):
        return energy(gen.energies, "transition", y, sigma).sum()

    push = -jax.grad(total)(x)[:, s_next]
    return cosines(push, (x_true - x)[:, s_next]).mean()


def cosines(a: jnp.ndarray, b: jnp.ndarray) -> jnp.ndarray:
    """Row-wise cosine similarity of two (rows, dim) arrays; 0 where a row is zero."""
    norms = jnp.linalg.norm(a, axis=-1) * jnp.linalg.norm(b, axis=-1)
    return jnp.sum(a * b, axis=-1) / jnp.where(norms > 0, norms, 1.0)


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

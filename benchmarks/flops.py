"""Analytic matmul FLOP counts: 2*m*n*k per dense layer, backward ~ 2x forward.

Only matmuls are counted (activations, norms and the optimiser are a few percent at these
sizes), so achieved FLOP/s is a lower bound on what the device really did.
"""

from __future__ import annotations

from collections.abc import Sequence

from edis_jax.config.generator_configs import DiffusionConfig, EnergyConfig

TRAIN_FACTOR = 3  # forward + backward (grad w.r.t. inputs and weights) ~ 3x forward
INPUT_GRAD_FACTOR = 2  # forward + backward w.r.t. the inputs only (guidance) ~ 2x forward
ENERGIES = 3  # state, policy, transition


def dense_chain_flops(rows: int, sizes: Sequence[int]) -> float:
    """FLOPs of a chain of dense layers sizes[0] -> sizes[1] -> ... applied to `rows` rows."""
    return float(sum(2 * rows * a * b for a, b in zip(sizes[:-1], sizes[1:], strict=False)))


def denoiser_flops(rows: int, data_dim: int, cfg: DiffusionConfig) -> float:
    """One forward pass of the residual MLP denoiser (nets.ResidualMLPDenoiser)."""
    time_features = 2 * cfg.num_fourier + 1
    time_mlp = dense_chain_flops(rows, (time_features, cfg.dim_t, cfg.dim_t))
    trunk = dense_chain_flops(rows, (data_dim, cfg.dim_t, cfg.width))
    blocks = cfg.depth * dense_chain_flops(rows, (cfg.width, cfg.width))
    head = dense_chain_flops(rows, (cfg.width, data_dim))
    return time_mlp + trunk + blocks + head


def energy_flops(rows: int, data_dim: int, cfg: EnergyConfig) -> float:
    """One forward pass of one energy net: (x, c_noise) -> hidden -> scalar."""
    return dense_chain_flops(rows, (data_dim + 1, *cfg.hidden_dims, 1))


def sampler_flops(
    rows: int, data_dim: int, dcfg: DiffusionConfig, ecfg: EnergyConfig, guided: bool
) -> float:
    """Useful FLOPs of the stochastic Heun sampler: 2N - 1 denoiser calls (the last step has
    sigma' = 0 and needs one), each with the guidance gradient of the three energies when
    guided: forward + backward to x only (the energies' weights get no gradient)."""
    calls = 2 * dcfg.num_steps - 1
    per_call = denoiser_flops(rows, data_dim, dcfg)
    if guided:
        per_call += ENERGIES * INPUT_GRAD_FACTOR * energy_flops(rows, data_dim, ecfg)
    return calls * per_call


def diffusion_train_step_flops(batch: int, data_dim: int, cfg: DiffusionConfig) -> float:
    """One denoiser training step: forward + backward at `batch` rows."""
    return TRAIN_FACTOR * denoiser_flops(batch, data_dim, cfg)


def matmul_flops(n: int) -> float:
    """An n x n by n x n matmul."""
    return 2.0 * n**3


def agent_update_flops(algo: str, cfg, obs_dim: int, act_dim: int, batch: int) -> float:
    """Matmul FLOPs of one agent update in CORL's structure (per row: Q, V, actor forwards;
    a gradient step ~ 3x its forward; an actor loss through the critics ~ 2x their forward,
    input gradients only).

    IQL: target Q (2 critics), V(s'), V fit, critic fit, actor fit = 8Q + 4V + 3A.
    SAC: next action, target Q, critic fit, actor fit, critics at pi(s) = 4A + 12Q.
    Cal-QL: SAC + policy actions at s and s' (2n A) + the CQL critic fit on 3n actions
    (2 critics x 3 x 3n Q), n = cql_n_actions.
    """
    h = tuple(cfg.hidden_dims)
    q = dense_chain_flops(1, (obs_dim + act_dim, *h, 1))
    v = dense_chain_flops(1, (obs_dim, *h, 1))
    if algo == "iql":
        actor = dense_chain_flops(1, (obs_dim, *h, act_dim))
        return batch * (8 * q + 4 * v + 3 * actor)
    actor = dense_chain_flops(1, (obs_dim, *h, 2 * act_dim))  # mean and log-std heads
    sac = 4 * actor + 12 * q
    if algo == "sac":
        return batch * sac
    if algo == "calql":
        n = cfg.cql_n_actions
        return batch * (sac + 2 * n * actor + 18 * n * q)
    raise ValueError(f"unknown algo {algo!r}: choose one of iql, sac, calql")

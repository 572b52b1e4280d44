"""PyTorch eager reference of the generator: SynthER's diffusion model and EDIS's energies.

Written for this benchmark, following the published implementations' structure (not their
code): SynthER's residual-MLP denoiser inside an EDM ("elucidated") diffusion wrapper, a
trainer that steps Adam once per batch with grad clipping, a cosine schedule, an EMA updated
every 10 steps and `.item()` logging; a stochastic Heun sampler written as a Python loop over
the schedule with two denoiser calls per step; EDIS's guidance taking a separate
`torch.autograd.grad` through each energy; CEP training that steps each energy's optimiser in
turn. Sizes, dtype (float32) and constants come from the same configs the JAX code uses.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from edis_jax.config.generator_configs import DiffusionConfig, EnergyConfig

_ACTIVATIONS = {"relu": nn.ReLU, "silu": nn.SiLU, "gelu": nn.GELU}


# ----------------------------------------------------------------------------- networks


class RandomFourierEmbedding(nn.Module):
    """[t, sin(2 pi f t), cos(2 pi f t)] with fixed random frequencies f (SynthER)."""

    def __init__(self, num_fourier: int):
        super().__init__()
        self.register_buffer("freqs", torch.randn(num_fourier))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        t = t[:, None]
        angles = 2 * math.pi * t * self.freqs[None, :]
        return torch.cat([t, angles.sin(), angles.cos()], dim=-1)


class ResidualBlock(nn.Module):
    def __init__(self, width: int, activation: str, layer_norm: bool):
        super().__init__()
        self.norm = nn.LayerNorm(width) if layer_norm else nn.Identity()
        self.act = _ACTIVATIONS[activation]()
        self.linear = nn.Linear(width, width)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.linear(self.act(self.norm(h)))


class ResidualDenoiser(nn.Module):
    """SynthER's residual MLP: proj(x) + time_mlp(t) -> width -> L residual blocks -> D."""

    def __init__(self, data_dim: int, cfg: DiffusionConfig):
        super().__init__()
        self.time_mlp = nn.Sequential(
            RandomFourierEmbedding(cfg.num_fourier),
            nn.Linear(2 * cfg.num_fourier + 1, cfg.dim_t),
            nn.SiLU(),
            nn.Linear(cfg.dim_t, cfg.dim_t),
        )
        self.proj = nn.Linear(data_dim, cfg.dim_t)
        self.trunk = nn.Sequential(
            nn.Linear(cfg.dim_t, cfg.width),
            *[ResidualBlock(cfg.width, cfg.activation, cfg.layer_norm) for _ in range(cfg.depth)],
            nn.LayerNorm(cfg.width) if cfg.layer_norm else nn.Identity(),
            _ACTIVATIONS[cfg.activation](),
            nn.Linear(cfg.width, data_dim),
        )

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.trunk(self.proj(x) + self.time_mlp(t))


class EnergyMLP(nn.Module):
    """E(x, t) -> scalar: an MLP on the D + 1 inputs (EDIS)."""

    def __init__(self, data_dim: int, cfg: EnergyConfig):
        super().__init__()
        sizes = (data_dim + 1, *cfg.hidden_dims)
        layers: list[nn.Module] = []
        for a, b in zip(sizes[:-1], sizes[1:], strict=False):
            layers += [nn.Linear(a, b), nn.ReLU()]
        self.net = nn.Sequential(*layers, nn.Linear(sizes[-1], 1))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = t.expand(x.shape[:-1])[..., None]
        return self.net(torch.cat([x, t], dim=-1))[..., 0]


# ------------------------------------------------------------------------------- EDM


class ElucidatedDiffusion(nn.Module):
    """EDM preconditioning, loss and the stochastic Heun sampler (Karras et al. 2022)."""

    def __init__(self, data_dim: int, cfg: DiffusionConfig):
        super().__init__()
        self.cfg = cfg
        self.data_dim = data_dim
        self.net = ResidualDenoiser(data_dim, cfg)

    def c_noise(self, sigma: torch.Tensor) -> torch.Tensor:
        return torch.log(sigma) * 0.25

    def preconditioned(self, x: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
        sd = self.cfg.sigma_data
        if not torch.is_tensor(sigma):
            sigma = torch.full((x.shape[0],), sigma, dtype=x.dtype)
        s = sigma[:, None]
        c_skip = sd**2 / (s**2 + sd**2)
        c_out = s * sd / (s**2 + sd**2).sqrt()
        c_in = 1 / (s**2 + sd**2).sqrt()
        return c_skip * x + c_out * self.net(c_in * x, self.c_noise(sigma))

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        sigma = (cfg.p_mean + cfg.p_std * torch.randn(x.shape[0])).exp()
        noised = x + sigma[:, None] * torch.randn_like(x)
        denoised = self.preconditioned(noised, sigma)
        weight = (sigma**2 + cfg.sigma_data**2) / (sigma * cfg.sigma_data) ** 2
        return (((denoised - x) ** 2).mean(-1) * weight).mean()

    def schedule(self) -> list[tuple[float, float, float]]:
        """(sigma_i, sigma_{i+1}, gamma_i) for i < N, with sigma_N = 0 (EDM eq. 5)."""
        cfg = self.cfg
        n = cfg.num_steps
        i = np.arange(n)
        inv_rho = 1 / cfg.rho
        sig = (
            cfg.sigma_max**inv_rho
            + i / max(n - 1, 1) * (cfg.sigma_min**inv_rho - cfg.sigma_max**inv_rho)
        ) ** cfg.rho
        sig = np.append(sig, 0.0)
        gamma_max = min(cfg.s_churn / n, math.sqrt(2) - 1)
        gammas = np.where((sig >= cfg.s_tmin) & (sig <= cfg.s_tmax), gamma_max, 0.0)
        return [(float(sig[k]), float(sig[k + 1]), float(gammas[k])) for k in range(n)]

    @torch.no_grad()
    def sample(self, n: int, guidance=None) -> torch.Tensor:
        """Stochastic Heun (EDM Algorithm 2), one Python iteration per step; `guidance(x,
        sigma)` returns the term added to the ODE direction."""
        cfg = self.cfg
        schedule = self.schedule()
        x = schedule[0][0] * torch.randn(n, self.data_dim)
        for sigma, sigma_next, gamma in schedule:
            sigma_hat = sigma * (1 + gamma)
            eps = cfg.s_noise * torch.randn_like(x)
            x_hat = x + math.sqrt(sigma_hat**2 - sigma**2) * eps
            d = (x_hat - self.preconditioned(x_hat, sigma_hat)) / sigma_hat
            if guidance is not None:
                d = d + guidance(x_hat, sigma_hat)
            x_next = x_hat + (sigma_next - sigma_hat) * d
            if sigma_next != 0:
                d_next = (x_next - self.preconditioned(x_next, sigma_next)) / sigma_next
                if guidance is not None:
                    d_next = d_next + guidance(x_next, sigma_next)
                x_next = x_hat + 0.5 * (sigma_next - sigma_hat) * (d + d_next)
            x = x_next
        return x


class DiffusionTrainer:
    """One optimiser step per batch, SynthER-style: Adam, cosine lr, grad-norm clip, EMA
    every `ema_every` steps, loss logged with `.item()` every step."""

    def __init__(self, model: ElucidatedDiffusion, data: torch.Tensor, train_steps: int):
        cfg = model.cfg
        self.model, self.data, self.cfg = model, data, cfg
        self.ema = ElucidatedDiffusion(model.data_dim, cfg)
        self.ema.load_state_dict(model.state_dict())
        self.ema.requires_grad_(False)
        self.opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
        self.sched = torch.optim.lr_scheduler.CosineAnnealingLR(self.opt, T_max=train_steps)
        self.step_count = 0
        self.last_loss = 0.0

    def step(self) -> float:
        idx = torch.randint(self.data.shape[0], (self.cfg.batch_size,))
        loss = self.model.loss(self.data[idx])
        loss.backward()
        nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.sched.step()
        self.step_count += 1
        if self.step_count % self.cfg.ema_every == 0:
            with torch.no_grad():
                for p_ema, p in zip(self.ema.parameters(), self.model.parameters(), strict=True):
                    p_ema.lerp_(p, 1 - self.cfg.ema_decay)
        self.last_loss = loss.item()
        return self.last_loss


# --------------------------------------------------------------------------- energies


class EnergyGuidance:
    """EDIS's guidance: for each energy a separate autograd.grad, masked to the dims it
    guides (state -> s, policy -> a, transition -> s'), weighted, summed, and clipped."""

    def __init__(self, energies, masks, scales, clip_factor: float):
        self.energies, self.masks, self.scales = energies, masks, scales
        self.clip_factor = clip_factor

    def __call__(self, x: torch.Tensor, sigma: float) -> torch.Tensor:
        t = torch.full((x.shape[0],), math.log(sigma) * 0.25)
        total = torch.zeros_like(x)
        with torch.enable_grad():
            for energy, mask, scale in zip(self.energies, self.masks, self.scales, strict=True):
                xg = x.detach().requires_grad_(True)
                (grad,) = torch.autograd.grad(energy(xg, t).sum(), xg)
                total = total + scale * mask * grad
        limit = math.sqrt(x.shape[-1]) * self.clip_factor
        norm = total.norm(dim=-1, keepdim=True)
        return total * torch.clamp(limit / norm.clamp_min(1e-12), max=1.0)


def make_energies(obs_dim: int, act_dim: int, cfg: EnergyConfig):
    """Three energy nets, their Adam optimisers and guidance (masks, scales)."""
    data_dim = 2 * obs_dim + act_dim + 1
    energies = [EnergyMLP(data_dim, cfg) for _ in range(3)]
    optimisers = [torch.optim.Adam(e.parameters(), lr=cfg.lr) for e in energies]
    masks = []
    for lo, hi in ((0, obs_dim), (obs_dim, obs_dim + act_dim), (data_dim - obs_dim, data_dim)):
        m = torch.zeros(data_dim)
        m[lo:hi] = 1.0
        masks.append(m)
    scales = [cfg.scale_state, cfg.scale_policy, cfg.scale_transition]
    guidance = EnergyGuidance(energies, masks, scales, cfg.clip_factor)
    return energies, optimisers, guidance


class CEPTrainer:
    """Contrastive energy prediction (EDIS / Lu et al. 2023), the published structure: each
    energy in turn builds its batch, computes its InfoNCE loss, steps its own Adam and logs
    with `.item()`. The batch matches the JAX code's: B noised positives at balanced levels;
    E_s against B unconditional negatives (softmax over the rows of the same level), E_a and
    E_t each against K inpainted negatives per positive (softmax per group), E_a's positives
    carrying the policy's action. Negatives come from banks drawn beforehand."""

    def __init__(self, energies, optimisers, sigmas, cfg: EnergyConfig, obs_dim, act_dim, actor):
        self.energies, self.optimisers, self.cfg = energies, optimisers, cfg
        self.sigmas, self.obs_dim, self.act_dim, self.actor = sigmas, obs_dim, act_dim, actor

    def step(self, online: torch.Tensor, bank_positives: torch.Tensor, banks: list) -> dict:
        cfg, ds, da = self.cfg, self.obs_dim, self.act_dim
        b, levels = cfg.batch_size, len(self.sigmas)
        logs = {}
        for i, (energy, opt, bank) in enumerate(
            zip(self.energies, self.optimisers, banks, strict=True)
        ):
            level = (torch.arange(b) + torch.randint(levels, ())) % levels
            sigma = self.sigmas[level]
            t = torch.log(sigma) * 0.25
            if i == 0:  # E_s: online rows against unconditional samples at the same level
                pos = online[torch.randint(online.shape[0], (b,))]
                pos = pos + sigma[:, None] * torch.randn_like(pos)
                neg = bank[level, torch.randint(bank.shape[1], (b,))]
                e_pos, e_neg = energy(pos, t), energy(neg, t)
                logits = -torch.cat([e_pos, e_neg])
                same = level[:, None] == torch.cat([level, level])[None, :]
                lse = torch.logsumexp(logits[None, :].masked_fill(~same, -math.inf), dim=1)
                loss = (e_pos + lse).mean()
            else:  # E_a (i = 1), E_t (i = 2): one positive against its K negatives
                groups = torch.randint(bank_positives.shape[0], (b,))
                pos = bank_positives[groups].clone()
                if i == 1:
                    with torch.no_grad():
                        pos[:, ds : ds + da] = self.actor(pos[:, :ds])[0]
                pos = pos + sigma[:, None] * torch.randn_like(pos)
                cond = ds if i == 1 else ds + da
                neg = bank[level, groups].clone()  # (B, K, D)
                neg[:, :, :cond] = pos[:, None, :cond]
                e_pos, e_neg = energy(pos, t), energy(neg, t[:, None].expand(neg.shape[:2]))
                logits = -torch.cat([e_pos[:, None], e_neg], dim=1)
                loss = -torch.log_softmax(logits, dim=1)[:, 0].mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            logs[f"cep_loss_{i}"] = loss.item()
            logs[f"cep_acc_{i}"] = (
                (e_pos[:, None] < e_neg.reshape(b, -1)).all(1).float().mean().item()
            )
        return logs

"""The generator's configuration: the diffusion model and its training (DiffusionConfig), the
energies and their CEP training (EnergyConfig), and the names of the three energies. Frozen
dataclasses validated on construction, as the rest of edis_jax.config's; defaults are the published
values, cited where they are set.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from edis_jax.config.validation import check, layer_widths, non_negative, positive, unit_interval

Guide = Literal["state", "policy", "transition"]
GUIDES: tuple[str, ...] = ("state", "policy", "transition")
# What `edis-jax diagnose` generates with: no guidance (plain SynthER), each energy, all three.
GUIDANCE_ROWS: tuple[str, ...] = ("none", *GUIDES, "all")


# ------------------------------------------------------------------------------- diffusion


@dataclass(frozen=True)
class DiffusionConfig:
    """EDM (Karras et al. 2022) with SynthER's settings (Lu et al. 2023); DESIGN.md section 2."""

    width: int = 1024
    depth: int = 6  # residual blocks
    dim_t: int = 256
    activation: Literal["relu", "silu", "gelu"] = "relu"
    layer_norm: bool = False
    num_fourier: int = 8  # random Fourier frequencies of the time embedding (fixed, not trained)
    sigma_data: float = 1.0
    sigma_min: float = 0.002
    sigma_max: float = 80.0
    rho: float = 7.0
    p_mean: float = -1.2
    p_std: float = 1.2
    batch_size: int = 256
    lr: float = 3e-4
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0
    ema_decay: float = 0.995
    ema_every: int = 10
    train_steps: int = 30_000  # per (re)training; IQL-EDIS 30k-50k, Cal-QL-EDIS 10k
    train_chunk: int = 1000  # steps per jitted call; the progress bar ticks between chunks
    num_steps: int = 128  # Heun sampler steps
    s_churn: float = 80.0
    s_tmin: float = 0.05
    s_tmax: float = 50.0
    s_noise: float = 1.003
    sample_batch: int = 10_000  # rows per jitted sampler call; large n runs in such batches
    # Warm start: keep the model (params, EMA, optimiser, normaliser) across retrains and train
    # it `train_steps` further each time, instead of the published from-scratch retrain.
    warm_start: bool = False
    # Steps on the offline data before the online phase (warm start only), so that the first
    # retrain starts from a trained model.
    initial_steps: int = 0
    # Warm-start learning rate: "restart" runs a cosine from `lr` to 0 over every (re)training;
    # "continue" runs one cosine over all the run's steps (initial + every retrain).
    warm_lr: Literal["restart", "continue"] = "restart"
    # The data vector's last part: "absolute" s' (SynthER, the published code) or "delta" s' - s.
    next_obs: Literal["absolute", "delta"] = "absolute"
    # Inpainting (the CEP negatives of E_t and E_a): after each step to sigma, the conditioned
    # dims are set to their "clean" values (the published code) or to the values "noised" to
    # sigma with fresh noise, so that the denoiser sees every dim at the level it was trained on
    # (the replacement method of Song et al. 2021, "Score-based generative modeling", App. I.2).
    inpainting: Literal["clean", "noised"] = "clean"
    # RePaint's resampling (Lugmayr et al. 2022): under inpainting each step is taken this many
    # times, the state noised back to the step's sigma in between, so that the generated dims
    # can agree with the conditioned ones. 1 = no resampling; costs this many times the steps.
    inpaint_resamples: int = 1

    def __post_init__(self):
        positive(self, "width", "depth", "dim_t", "num_fourier", "sigma_data", "sigma_min")
        positive(self, "sigma_max", "rho", "batch_size", "lr", "train_chunk", "num_steps")
        positive(self, "ema_every", "sample_batch", "grad_clip", "inpaint_resamples")
        non_negative(self, "train_steps", "s_churn", "s_tmin", "s_tmax")
        unit_interval(self, "beta1", "beta2", "ema_decay")
        non_negative(self, "initial_steps")
        check(
            self.next_obs in ("absolute", "delta"),
            f"--diffusion.next-obs must be absolute or delta, got {self.next_obs!r}",
        )
        check(
            self.inpainting in ("clean", "noised"),
            f"--diffusion.inpainting must be clean or noised, got {self.inpainting!r}",
        )
        check(
            self.warm_lr in ("restart", "continue"),
            f"--diffusion.warm-lr must be restart or continue, got {self.warm_lr!r}",
        )
        check(
            self.warm_start or self.initial_steps == 0,
            "--diffusion.initial-steps needs --diffusion.warm-start (a from-scratch retrain "
            "would throw the initial training away)",
        )
        check(
            self.sigma_min < self.sigma_max,
            f"--diffusion.sigma-min ({self.sigma_min}) must be below --diffusion.sigma-max "
            f"({self.sigma_max})",
        )


@dataclass(frozen=True)
class EnergyConfig:
    """Energy networks trained by contrastive energy prediction (CEP, Lu et al. 2023)."""

    hidden_dims: tuple[int, ...] = (256, 256, 256)
    lr: float = 1e-3
    steps: int = 20  # CEP steps per energy per retrain (published code)
    batch_size: int = 256  # online positives per step
    num_negatives: int = 10  # K negatives per positive for E_a and E_t
    # CEP noise levels: every level_stride-th step of the sampler's schedule (the paper's 128
    # steps with 16: 8 levels); at most --diffusion.num-steps.
    level_stride: int = 16
    # Guidance scales (IQL-EDIS defaults, EDIS paper appendix).
    scale_state: float = 2.0  # w_s, the state energy's guidance scale
    scale_policy: float = 0.1  # w_a, the policy energy's guidance scale
    scale_transition: float = 0.1  # w_t, the transition energy's guidance scale
    clip_factor: float = 10.0  # rows of g with norm above sqrt(D) * clip_factor are rescaled
    sigma_scaled: bool = False  # multiply g by sigma (exact score of q*exp(-E)); off by default
    # Negatives are drawn once per retrain into a bank of this many rows per conditioned energy,
    # then resampled each CEP step: the chain is the dominant cost (DESIGN.md, CEP training).
    negative_bank: int = 2560
    # The bank is drawn afresh this many times per retrain (the CEP steps are split evenly
    # between the banks), so E_t and E_a see bank_refreshes * negative_bank / K positives.
    bank_refreshes: int = 1
    # E_s positives come from the `recent_window` latest online transitions (the paper's buffer
    # of "trajectories from very recent policies"); 0 = the whole online buffer (published code).
    recent_window: int = 0
    # Every `holdout_every`-th online row is kept out of CEP training, to measure the energies'
    # accuracy on positives and negatives they never saw.
    holdout_every: int = 10
    heldout_groups: int = 128  # held-out positives per energy in that measurement

    def __post_init__(self):
        layer_widths(self.hidden_dims, "--energy.hidden-dims")
        positive(self, "lr", "steps", "batch_size", "num_negatives", "level_stride")
        positive(self, "clip_factor", "negative_bank", "bank_refreshes", "heldout_groups")
        check(
            self.steps % self.bank_refreshes == 0,
            f"--energy.steps ({self.steps}) must be a multiple of --energy.bank-refreshes "
            f"({self.bank_refreshes}): each bank gets the same number of CEP steps",
        )
        non_negative(self, "recent_window")
        check(
            self.holdout_every >= 2,
            f"--energy.holdout-every must be >= 2 (every k-th online row is held out), "
            f"got {self.holdout_every}",
        )
        non_negative(self, "scale_state", "scale_policy", "scale_transition")
        check(
            self.negative_bank >= self.num_negatives,
            f"--energy.negative-bank ({self.negative_bank}) must be >= --energy.num-negatives "
            f"({self.num_negatives}): the bank holds K negatives per positive",
        )

"""Typed configuration: one frozen dataclass per part, validated on construction (the agents' are
in agent_configs.py, the checks in validation.py, the presets in presets.py).

Every number here becomes either a static structure choice (sizes, layer counts, switches) or a
pytree leaf inside the state that uses it (learning rates, alpha, beta, guidance scales, mixing
ratios), so sweeping a number never recompiles. Defaults are the published values (EDIS paper,
Liu et al. 2024; SynthER, Lu et al. 2023; CORL), cited where they are set.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

from edis_jax.agent_configs import CalQLConfig, IQLConfig, SACConfig
from edis_jax.tasks import TASKS
from edis_jax.validation import (
    ConfigError,
    check,
    layer_widths,
    non_negative,
    positive,
    unit_interval,
)

Algo = Literal["iql", "calql", "sac"]
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


# ---------------------------------------------------------------------------------- online


@dataclass(frozen=True)
class OnlineConfig:
    """The online phase: acting, buffers, generator schedule and agent updates."""

    utd: int = 1  # agent updates per environment step (U)
    retrain_every: int = 10_000  # R: env steps between generator retrains (EDIS paper)
    num_samples: int = 100_000  # S: synthetic transitions generated per retrain (EDIS paper)
    synthetic_ratio: float = 0.5  # rho: fraction of each batch drawn from synthetic data
    # EDIS batches after the first retrain as fractions of (synthetic, online-only, all real =
    # offline + online) rows, e.g. 0.25 0.25 0.5; unset: (rho, 1 - rho, 0), the paper's mix.
    mixture: tuple[float, float, float] | None = None
    # Online batches of the baseline (no EDIS) and of EDIS before its first retrain: this
    # fraction comes from the online buffer, the rest from all real data. 0 = replay all real
    # data (CORL). The offline phase always draws from the offline data alone.
    baseline_online_ratio: float = 0.0
    # "simulator": after each generation, recompute s', r and terminal of every synthetic row by
    # setting the simulator to its (s, a) (an oracle: what a perfect dynamics model would give).
    relabel: Literal["none", "simulator"] = "none"
    # "clean": the paper's description (synthetic + online in every update after the first
    # retrain). "published": the published code's loops (DESIGN.md section 2): IQL-EDIS updates
    # on real data every step and makes `utd_retrain` extra synthetic-mix updates on each retrain
    # step; Cal-QL-EDIS also retrains after its first online step.
    schedule: Literal["clean", "published"] = "clean"
    utd_retrain: int = 20  # published IQL-EDIS: synthetic-mix updates per retrain step

    def __post_init__(self):
        positive(self, "utd", "retrain_every", "num_samples", "utd_retrain")
        check(
            self.schedule in ("clean", "published"),
            f"--online.schedule must be clean or published, got {self.schedule!r}",
        )
        unit_interval(self, "synthetic_ratio", "baseline_online_ratio")
        if self.mixture is not None:
            check(
                len(self.mixture) == 3
                and all(0.0 <= w <= 1.0 for w in self.mixture)
                and abs(sum(self.mixture) - 1.0) < 1e-6,
                f"--online.mixture takes three fractions (synthetic, online, real) in [0, 1] "
                f"that sum to 1, got {self.mixture}",
            )
        check(
            self.relabel in ("none", "simulator"),
            f"--online.relabel must be none or simulator, got {self.relabel!r}",
        )


# ------------------------------------------------------------------------------------- run


@dataclass(frozen=True)
class RunConfig:
    """Everything one `edis-jax train` run needs; saved resolved into the run directory."""

    algo: Algo = "iql"
    dataset: str = "local/hopper/medium-v0"
    preset: Literal["tiny", "cpu", "paper"] = "cpu"
    seeds: int = 2
    seed: int = 0  # base seed; seed i of the run uses fold_in(PRNGKey(seed), i)
    offline_steps: int = 20_000
    online_steps: int = 20_000
    edis: bool = True
    guide: tuple[Guide, ...] = GUIDES
    out: str = "runs/default"
    overwrite: bool = False
    # Start from this run's offline phase (its agent at the last offline step), or later in it
    # (--init-at): arms that share it differ only in their online settings.
    init_from: str | None = None
    # Where in that run to start: "offline", the end of its offline phase; "first-retrain", a
    # baseline's state at this run's first generator retrain (online step --online.retrain-every;
    # the baseline keeps it), up to which an EDIS arm trains exactly as its baseline does.
    init_at: Literal["offline", "first-retrain"] = "offline"
    # Take the warm-started generator as this run's pretraining would leave it from that run
    # (its pretrained_generator/ folder) instead of training it again: arms that differ only in
    # guidance or online settings pretrain once. Refused unless the inputs are the same.
    generator_from: str | None = None
    # The published per-task config applied on top of the preset (tasks.py; `edis-jax tasks`).
    task: str | None = None
    batch_size: int = 256  # agent batch
    eval_every: int = 5000  # in steps of the current phase
    eval_episodes: int = 1  # full episodes per seed per evaluation
    log_every: int = 1000
    # Loggers beside metrics.jsonl, which stays the source of truth (optional extras;
    # train/loggers.py): `--log tensorboard wandb`.
    log: tuple[Literal["tensorboard", "wandb"], ...] = ()
    checkpoint_every: int = 5000  # online env steps between checkpoints
    ref_min_score: float | None = None  # override the dataset's reference scores
    ref_max_score: float | None = None
    iql: IQLConfig = field(default_factory=IQLConfig)
    sac: SACConfig = field(default_factory=SACConfig)
    calql: CalQLConfig = field(default_factory=CalQLConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    energy: EnergyConfig = field(default_factory=EnergyConfig)
    online: OnlineConfig = field(default_factory=OnlineConfig)

    def __post_init__(self):
        check(
            self.algo in ("iql", "calql", "sac"),
            f"unknown algo {self.algo!r}: choose one of iql, calql, sac",
        )
        check(
            self.preset in PRESET_NAMES,
            f"unknown preset {self.preset!r}: choose one of {', '.join(PRESET_NAMES)}",
        )
        check(self.task is None or self.task in TASKS, unknown_task(self.task))
        positive(self, "seeds", "batch_size", "eval_every", "eval_episodes", "log_every")
        positive(self, "checkpoint_every")
        check(
            all(name in ("tensorboard", "wandb") for name in self.log),
            f"--log takes tensorboard and/or wandb, got {self.log}",
        )
        non_negative(self, "offline_steps", "online_steps")
        check(
            self.seed >= 0,
            f"--seed must be >= 0 (gymnasium seeds its envs with it), got {self.seed}",
        )
        check(
            self.offline_steps + self.online_steps > 0,
            "--offline-steps and --online-steps are both 0: give at least one phase some steps",
        )
        bad = [g for g in self.guide if g not in GUIDES]
        check(not bad, f"unknown guide {bad}: --guide takes a comma list of {','.join(GUIDES)}")
        check(len(set(self.guide)) == len(self.guide), f"--guide lists a term twice: {self.guide}")
        check(
            (self.ref_min_score is None) == (self.ref_max_score is None),
            "give both --ref-min-score and --ref-max-score, or neither",
        )
        if self.ref_min_score is not None:
            check(
                self.ref_max_score > self.ref_min_score,
                "--ref-max-score must be above --ref-min-score",
            )
        if self.edis and self.online_steps > 0:
            self._check_generator()
        self._check_init_at()
        check(
            self.generator_from is None
            or (self.edis and self.online_steps > 0 and self.diffusion.initial_steps > 0),
            "--generator-from takes a pretrained generator: it needs EDIS on, online steps and "
            "a pretraining (--diffusion.warm-start --diffusion.initial-steps N)",
        )

    def _check_init_at(self) -> None:
        check(
            self.init_at in ("offline", "first-retrain"),
            f"--init-at must be offline or first-retrain, got {self.init_at!r}",
        )
        if self.init_at == "offline":
            return
        check(
            self.init_from is not None,
            "--init-at first-retrain starts from another run's state: give that baseline run "
            "with --init-from RUN",
        )
        check(
            self.edis and self.online.retrain_every < self.online_steps,
            "--init-at first-retrain needs an EDIS run that retrains inside its online phase "
            "(--edis, --online.retrain-every below --online-steps); otherwise use --init-at "
            "offline",
        )
        check(
            not (self.online.schedule == "published" and self.algo == "calql"),
            "--init-at first-retrain: Cal-QL-EDIS's published schedule retrains after online "
            "step 1, before --online.retrain-every; use --init-at offline",
        )

    def _check_generator(self) -> None:
        """Settings under which the EDIS generator of the online phase would be useless."""
        d, stride = self.diffusion, self.energy.level_stride
        pretrained = d.warm_start and d.initial_steps > 0  # usable with no retraining steps
        check(
            d.train_steps > 0 or pretrained,
            "--diffusion.train-steps is 0 with EDIS on, so the generator is never trained: give "
            "it steps, pretrain it (--diffusion.warm-start --diffusion.initial-steps N), or pass "
            "--no-edis",
        )
        check(
            self.online.num_samples >= self.batch_size,
            f"--online.num-samples ({self.online.num_samples}) is below the agent --batch-size "
            f"({self.batch_size}): generate at least one batch per retrain, or pass --no-edis",
        )
        check(
            stride <= d.num_steps,
            f"--energy.level-stride ({stride}) is beyond the {d.num_steps}-step sampler schedule "
            f"(--diffusion.num-steps), leaving CEP one noise level: choose a stride <= "
            f"{d.num_steps}",
        )

    @property
    def agent(self) -> IQLConfig | SACConfig | CalQLConfig:
        """The config of the selected algorithm."""
        return getattr(self, self.algo)

    def replace(self, **changes) -> RunConfig:
        return dataclasses.replace(self, **changes)


# --------------------------------------------------------------------------------- presets

PRESET_NAMES = ("tiny", "cpu", "paper")


def with_values(cfg: RunConfig, values: dict) -> RunConfig:
    """cfg with fields replaced: {"seeds": 3, "calql.cql_alpha": 1.0, ...} (dotted: nested)."""
    top = {k: v for k, v in values.items() if "." not in k}
    nested: dict[str, dict] = {}
    for key, value in values.items():
        if "." in key:
            part, name = key.split(".", 1)
            nested.setdefault(part, {})[name] = value
    for part, changes in nested.items():
        top[part] = dataclasses.replace(getattr(cfg, part), **changes)
    return dataclasses.replace(cfg, **top)


def unknown_task(task) -> str:
    return f"unknown task {task!r}: `edis-jax tasks` lists them (e.g. iql_edis/hopper-medium)"


# --------------------------------------------------------------------------- serialisation


def to_dict(cfg: RunConfig) -> dict:
    """The resolved config as plain JSON-ready values (tuples become lists)."""
    return dataclasses.asdict(cfg)


def from_dict(data: dict, cls: type = RunConfig):
    """Rebuild a config written by `to_dict`; unknown keys are an error naming them."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"unknown {cls.__name__} fields {unknown}: was it written by another version?"
        )
    kwargs = {}
    for name, value in data.items():
        default = getattr(cls(), name) if name in _NESTED.get(cls, ()) else None
        if default is not None and dataclasses.is_dataclass(default):
            kwargs[name] = from_dict(value, type(default))
        elif isinstance(value, list):
            kwargs[name] = tuple(value)
        else:
            kwargs[name] = value
    return cls(**kwargs)


_NESTED = {RunConfig: ("iql", "sac", "calql", "diffusion", "energy", "online")}

"""Typed configuration: one frozen dataclass per part, validated on construction (the agents' are
in agent_configs.py, the generator's in generator_configs.py, the checks in validation.py, the
presets in presets.py).

Every number here becomes either a static structure choice (sizes, layer counts, switches) or a
pytree leaf inside the state that uses it (learning rates, alpha, beta, guidance scales, mixing
ratios), so sweeping a number never recompiles. Defaults are the published values (EDIS paper,
Liu et al. 2024; SynthER, Lu et al. 2023; CORL), cited where they are set.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

from edis_jax.config.agent_configs import CalQLConfig, IQLConfig, SACConfig
from edis_jax.config.generator_configs import GUIDES, DiffusionConfig, EnergyConfig, Guide
from edis_jax.config.tasks import TASKS
from edis_jax.config.validation import (
    ConfigError,
    check,
    non_negative,
    positive,
    unit_interval,
)

Algo = Literal["iql", "calql", "sac"]


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
    # Where the envs run: "gymnasium", on the host, one device call per env step; "jax", the
    # JAX-native env inside the compiled program, one device call per chunk of steps
    # (train/jax_online.py); "auto", jax on an accelerator for an env with an exact JAX version,
    # gymnasium otherwise. config.json records the backend a run resolved to.
    env_backend: Literal["auto", "gymnasium", "jax"] = "auto"
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
            self.env_backend in ("auto", "gymnasium", "jax"),
            f"--env-backend must be auto, gymnasium or jax, got {self.env_backend!r}",
        )
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

"""The presets: `tiny` (tests, seconds), `cpu` (2 cores, minutes), `paper` (a GPU, the published
sizes and schedules), and the published per-task values on top of one (tasks.py)."""

from __future__ import annotations

from edis_jax.config import PRESET_NAMES, OnlineConfig, RunConfig, unknown_task, with_values
from edis_jax.config.agent_configs import CalQLConfig, IQLConfig, SACConfig
from edis_jax.config.generator_configs import DiffusionConfig, EnergyConfig
from edis_jax.config.tasks import TASKS
from edis_jax.config.validation import ConfigError


def preset(name: str, task: str | None = None) -> RunConfig:
    """The named preset: `tiny` (tests, seconds), `cpu` (2 cores, minutes), `paper` (a GPU);
    with a task, that published per-task config's values on top (tasks.py)."""
    if name not in PRESET_NAMES:
        raise ConfigError(f"unknown preset {name!r}: choose one of {', '.join(PRESET_NAMES)}")
    cfg = _PRESETS[name]()
    if task is None:
        return cfg
    if task not in TASKS:
        raise ConfigError(unknown_task(task))
    return with_values(cfg, {**TASKS[task]["values"], "task": task})


def _tiny() -> RunConfig:
    return RunConfig(
        preset="tiny",
        seeds=2,
        offline_steps=200,
        online_steps=200,
        batch_size=32,
        eval_every=100,
        log_every=50,
        checkpoint_every=100,
        iql=IQLConfig(hidden_dims=(32, 32)),
        sac=SACConfig(hidden_dims=(32, 32), start_steps=50),
        calql=CalQLConfig(hidden_dims=(32, 32), cql_n_actions=4),
        diffusion=DiffusionConfig(
            width=32,
            depth=2,
            dim_t=16,
            batch_size=32,
            train_steps=100,
            train_chunk=50,
            num_steps=16,
            sample_batch=256,
        ),
        energy=EnergyConfig(
            hidden_dims=(32, 32),
            steps=4,
            batch_size=16,
            num_negatives=4,
            level_stride=4,
            negative_bank=64,
        ),
        online=OnlineConfig(utd=1, retrain_every=100, num_samples=512),
    )


def _cpu() -> RunConfig:
    # Sized for 2 CPU cores. The generator settings were chosen with `edis-jax diagnose
    # --retrains 3` on the shipped Hopper medium data (docs/generator_fidelity.md): a
    # warm-started model pretrained 15k steps on the offline data (one cosine over the run) that
    # learns s' - s, 5 negative banks per retrain (510 distinct CEP positives for E_t and E_a),
    # 500 CEP steps (20 left the energies at chance), and sigma-scaled guidance.
    return RunConfig(
        preset="cpu",
        seeds=2,
        offline_steps=20_000,
        online_steps=10_000,
        eval_every=2500,
        eval_episodes=5,
        log_every=500,
        checkpoint_every=2500,
        diffusion=DiffusionConfig(
            width=256,
            depth=4,
            dim_t=64,
            train_steps=3000,
            num_steps=32,
            sample_batch=2048,
            warm_start=True,
            initial_steps=15_000,
            warm_lr="continue",
            next_obs="delta",
        ),
        energy=EnergyConfig(
            steps=500,
            level_stride=4,
            negative_bank=1024,
            bank_refreshes=5,
            sigma_scaled=True,
            scale_state=1.0,
            scale_policy=1.0,
            scale_transition=0.3,
        ),
        online=OnlineConfig(utd=1, retrain_every=5000, num_samples=20_000),
    )


def _paper() -> RunConfig:
    # EDIS paper: 1M offline steps, 200k online, retrain every 10k, 100k samples per retrain,
    # diffusion 1024x6 trained 30k steps.
    return RunConfig(
        preset="paper",
        seeds=5,
        offline_steps=1_000_000,
        online_steps=200_000,
        eval_every=10_000,
        log_every=1000,
        checkpoint_every=10_000,
        eval_episodes=10,
        # The published loops (IQL-EDIS: 1 update per step on real data, 20 synthetic-mix
        # updates per retrain step; Cal-QL-EDIS: U = 1; published configs, iql_edis and
        # cal_ql_edis hopper/medium) with the paper's default synthetic fraction 0.5.
        online=OnlineConfig(
            utd=1,
            utd_retrain=20,
            synthetic_ratio=0.5,
            retrain_every=10_000,
            num_samples=100_000,
            schedule="published",
        ),
    )


_PRESETS = {"tiny": _tiny, "cpu": _cpu, "paper": _paper}

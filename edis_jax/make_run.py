"""`make run`: does EDIS help IQL on the shipped Hopper-v5 medium dataset (`cpu` preset)?

One IQL run (4 seeds, one compiled program) trains the offline phase and continues online as the
baseline. IQL-EDIS and IQL-SynthER (the same generator, unguided) train exactly as IQL does until
their first generator retrain, so they start there from the state IQL kept (`--init-from`
with `--init-at first-retrain`): the three arms share every step before it and differ only in
what the generator changes, and SynthER takes the generator EDIS pretrained on the offline data
(`--generator-from`).
It ends with the statistics table (IQM with 95% bootstrap intervals, area under the online
curve, Welch p against IQL), one sentence per arm, and the score and generator-health plots.
Re-running continues an interrupted run and keeps finished ones; delete runs/make_run to start
over.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from edis_jax import config, report
from edis_jax.config import presets
from edis_jax.storage import checkpoint
from edis_jax.train import loop
from edis_jax.train.directory import with_older_defaults

DATASET = "local/hopper/medium-v0"  # shipped with the package (edis_jax/assets)
OUT = Path("runs/make_run")
SEEDS = 4


def arm_configs() -> list[config.RunConfig]:
    """The baseline first (it owns the shared offline phase), then the arms started from it."""
    # overwrite=True: these folders belong to `make run`; a stale or changed run there is redone.
    base = presets.preset("cpu").replace(
        algo="iql", dataset=DATASET, seeds=SEEDS, eval_episodes=5, overwrite=True
    )
    iql = base.replace(edis=False, out=str(OUT / "iql"))
    edis = base.replace(
        edis=True, out=str(OUT / "iql_edis"), init_from=iql.out, init_at="first-retrain"
    )
    # SynthER's generator is EDIS's without guidance: the same pretraining, done once.
    synther = edis.replace(guide=(), out=str(OUT / "iql_synther"), generator_from=edis.out)
    return [iql, edis, synther]


def run_or_continue(
    cfg: config.RunConfig,
    *,
    arms_start_at_first_retrain: bool = False,
    stop_at_online_step: int | None = None,
) -> None:
    """Train `cfg`, continue it from its latest checkpoint, or keep it if it finished. A
    baseline that arms start at their first retrain (`arms_start_at_first_retrain`) is redone
    if an older edis-jax wrote it without the state they start from. `stop_at_online_step`
    leaves the run there, to be continued later (a baseline trained only as far as the arms
    that start from it need)."""
    run_dir = Path(cfg.out)
    saved = run_dir / "config.json"
    # Compared as configs: a config.json written before a field existed reads back with the
    # value older runs had, and its lists read back as the tuples they were. It holds the env
    # backend `auto` resolved to when the run started, which `auto` accepts.
    same = False
    if saved.is_file():
        written = config.from_dict(with_older_defaults(json.loads(saved.read_text())))
        auto = cfg.env_backend == "auto"
        same = written == (cfg.replace(env_backend=written.env_backend) if auto else cfg)
    if same and arms_start_at_first_retrain and _lacks_first_retrain_state(cfg):
        print(f"{run_dir}: written before baselines kept their first-retrain state, redone")
        same = False
    if same and (run_dir / "summary.json").is_file():
        print(f"{run_dir}: finished earlier, kept")
    elif same and stop_at_online_step is not None and _holds_start(cfg, stop_at_online_step):
        # Its stop there saved no checkpoint: resuming would redo the steps since the last one.
        print(f"{run_dir}: holds the state at online step {stop_at_online_step} already, kept")
    elif same and checkpoint.latest_step(run_dir) is not None:
        print(f"{run_dir}: continuing from its latest checkpoint")
        loop.resume(run_dir, stop_at_online_step=stop_at_online_step)
    else:
        print(f"{run_dir}: training {report.label({'config': config.to_dict(cfg)})}")
        loop.train(cfg, stop_at_online_step=stop_at_online_step)


def _holds_start(cfg: config.RunConfig, online_step: int) -> bool:
    """Whether the run saved the state that arms starting at `online_step` take: the end of its
    offline phase (step 0) or its first retrain."""
    folder = checkpoint.OFFLINE_DIR if online_step == 0 else checkpoint.FIRST_RETRAIN_DIR
    return checkpoint.latest_step(Path(cfg.out), folder) == cfg.offline_steps + online_step


def _lacks_first_retrain_state(cfg: config.RunConfig) -> bool:
    """A run past its first-retrain step without the state kept there (an older edis-jax wrote
    it): the arms could not start from it."""
    run_dir = Path(cfg.out)
    latest = checkpoint.latest_step(run_dir)
    kept_at = cfg.offline_steps + cfg.online.retrain_every
    return (
        latest is not None
        and latest >= kept_at
        and not (run_dir / checkpoint.FIRST_RETRAIN_DIR).is_dir()
    )


def main() -> int:
    configs = arm_configs()
    sources = {c.init_from for c in configs if c.init_at == "first-retrain"}
    for cfg in configs:
        run_or_continue(cfg, arms_start_at_first_retrain=cfg.out in sources)
    result = report.report(
        [c.out for c in configs], out=str(OUT / "report.png"), baseline=configs[0].out
    )
    print()
    print(result.text)
    print(f"\nlearning curves: {result.curves}")
    if result.health is not None:
        print(f"generator health: {result.health}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

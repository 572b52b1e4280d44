"""`make run`: IQL against IQL-EDIS on the embedded Hopper-v5 medium dataset, `cpu` preset.

Runs both (2 seeds each, one compiled program per run), then prints the comparison table and
the plot's path. Re-running continues an interrupted run and skips a finished one, so the
command is idempotent; delete runs/make_run to start over.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from edis_jax import checkpoint, config, report
from edis_jax.train import loop

DATASET = "local/hopper/medium-v0"  # shipped with the package (edis_jax/assets)
OUT = Path("runs/make_run")


def main_job_configs() -> list[config.RunConfig]:
    # overwrite=True: these folders belong to `make run`; a stale or changed run there is redone.
    base = config.preset("cpu").replace(algo="iql", dataset=DATASET, seeds=2, overwrite=True)
    return [
        base.replace(edis=False, out=str(OUT / "iql")),
        base.replace(edis=True, out=str(OUT / "iql_edis")),
    ]


def run_or_continue(cfg: config.RunConfig) -> None:
    run_dir = Path(cfg.out)
    saved = run_dir / "config.json"
    same = saved.is_file() and json.loads(saved.read_text()) == config.to_dict(cfg)
    if same and (run_dir / "summary.json").is_file():
        print(f"{run_dir}: finished earlier, kept")
    elif same and checkpoint.latest_step(run_dir) is not None:
        print(f"{run_dir}: continuing from its latest checkpoint")
        loop.resume(run_dir)
    else:
        print(f"{run_dir}: training {report.label({'config': config.to_dict(cfg)})}")
        loop.train(cfg)


def main() -> int:
    configs = main_job_configs()
    for cfg in configs:
        run_or_continue(cfg)
    text, png, _ = report.report([c.out for c in configs], out=str(OUT / "report.png"))
    print()
    print(text)
    print(f"\nlearning curves: {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

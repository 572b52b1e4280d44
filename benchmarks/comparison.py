"""`python -m benchmarks.comparison`: the honest-comparison issue's experiment (#12).

Every arm starts its online phase from one IQL offline phase (`--init-from`), on the shipped
Hopper-v5 medium dataset at the `cpu` preset, and differs from the baseline only in what its
flags name (docs/comparisons.md). The generator arms take IQL-EDIS's
pretrained generator (`--generator-from`: bitwise what pretraining again would give). Default
size: 8 seeds, 30k online steps, 5 evaluation episodes per point.

Each arm is an ordinary run directory under `--out`: re-running continues an interrupted arm
from its latest checkpoint and keeps finished ones (make_run.run_or_continue), so the whole
experiment may span several sessions. It ends with `edis-jax report` of the finished arms
against IQL (IQM [95% CI], final score, online AUC, Welch p, wall time), written to
`--out`/report.md and report.png.

`--archive DIR` copies each finished arm's config.json, summary.json and metrics.jsonl (what the
report reads, a few hundred kB) to DIR/<arm>/: the run directories live on one machine, and a
session's machine is not always kept. `--out DIR --report-only` reports an archive.

The mixture of the "keeping real data" arm (0.25 synthetic / 0.25 online / 0.5 all real) is an
a-priori choice, not tuned on any seed, so the reported seeds carry no selection.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

from edis_jax import config, make_run, presets, report
from edis_jax.train.directory import RunDirError, with_older_defaults

DATASET = make_run.DATASET  # shipped with the package
ARCHIVED = ("config.json", "summary.json", "metrics.jsonl")  # what report.load_run reads

# arm -> RunConfig values beside `edis` (config.with_values keys); the baseline comes first.
ARMS: dict[str, tuple[bool, dict]] = {
    "iql": (False, {}),
    "iql_edis": (True, {}),
    "iql_edis_published": (True, {"online.schedule": "published"}),
    "iql_edis_real": (True, {"online.mixture": (0.25, 0.25, 0.5)}),
    "iql_synther": (True, {"guide": ()}),
    "iql_edis_no_synthetic": (True, {"online.synthetic_ratio": 0.0}),
    "iql_online_half": (False, {"online.baseline_online_ratio": 0.5}),
    "iql_edis_oracle": (True, {"online.relabel": "simulator"}),
}


# What each pair of arms isolates (A - B), for the question the issue asks when IQL-EDIS does
# not beat IQL: which part (batch composition, synthetic rows, their dynamics, the guidance)
# costs what. A pair is reported once both arms have finished.
CONTRASTS = (
    ("EDIS as a whole", "iql_edis", "iql"),
    ("batch composition alone: half of each batch online-only rows", "iql_online_half", "iql"),
    (
        "synthetic rows in place of real (offline + online) rows, at the same online share",
        "iql_edis",
        "iql_online_half",
    ),
    (
        "EDIS's batches without their synthetic rows (online-only after the first retrain)",
        "iql_edis_no_synthetic",
        "iql",
    ),
    ("synthetic rows in place of half the online-only rows", "iql_edis", "iql_edis_no_synthetic"),
    (
        "the simulator's s', r, terminal for the same synthetic (s, a)",
        "iql_edis_oracle",
        "iql_edis",
    ),
    ("energy guidance (same pretrained generator)", "iql_edis", "iql_synther"),
    ("offline rows kept in the mix (0.25 / 0.25 / 0.5)", "iql_edis_real", "iql_edis"),
    ("the published schedule instead of the clean one", "iql_edis_published", "iql_edis"),
    # Each EDIS variant against the baseline: the issue's target (at or above IQL on both).
    ("EDIS keeping offline rows in the mix, against the baseline", "iql_edis_real", "iql"),
    ("EDIS on the published schedule, against the baseline", "iql_edis_published", "iql"),
)


def contrast_pairs(out: Path, finished: list[str]) -> list[tuple[str, dict, dict]]:
    """CONTRASTS whose two arms are both among the `finished` run directories, as loaded runs."""
    done = {Path(d).name for d in finished}
    return [
        (what, report.load_run(out / a), report.load_run(out / b))
        for what, a, b in CONTRASTS
        if a in done and b in done
    ]


def base_config(out: Path, seeds: int, online_steps: int) -> config.RunConfig:
    """The settings every arm shares: the `cpu` preset as it is now or, once the baseline arm
    has started, the settings it saved. The experiment spans sessions, and a later change to the
    preset must not split it between two settings (its finished arms would be refused)."""
    saved = out / "iql" / "config.json"
    if not saved.is_file():
        return presets.preset("cpu").replace(
            algo="iql", dataset=DATASET, seeds=seeds, online_steps=online_steps, eval_episodes=5
        )
    base = config.from_dict(with_older_defaults(json.loads(saved.read_text())))
    if (base.seeds, base.online_steps) != (seeds, online_steps):
        raise RunDirError(
            f"{out} holds an experiment of {base.seeds} seeds and {base.online_steps} online "
            f"steps, not {seeds} and {online_steps}: pass --seeds {base.seeds} --online-steps "
            f"{base.online_steps}, or another --out"
        )
    return base


def arm_configs(out: Path, seeds: int, online_steps: int, arms: list[str]) -> list:
    """The configs of `arms`, the baseline first (it owns the shared offline phase)."""
    base = base_config(out, seeds, online_steps)
    baseline = str(out / "iql")
    configs = []
    for name in ["iql", *[a for a in arms if a != "iql"]]:
        edis, values = ARMS[name]
        cfg = base.replace(edis=edis, out=str(out / name))
        if name != "iql":
            cfg = cfg.replace(init_from=baseline)
        # The generator arms share IQL-EDIS's pretraining (refused if their inputs differ).
        if edis and name != "iql_edis" and "iql_edis" in arms:
            cfg = cfg.replace(generator_from=str(out / "iql_edis"))
        configs.append(config.with_values(cfg, values))
    return configs


def archive(finished: list[str], dest: Path) -> None:
    """Copy each finished arm's result files (report.load_run's inputs) to dest/<arm>/, each
    written whole before it replaces an older copy. A failed copy (a full disk) removes its
    partial file and raises RunDirError with one line; older copies are untouched."""
    for run_dir in map(Path, finished):
        target = dest / run_dir.name
        for name in ARCHIVED:
            partial = target / f"{name}.tmp"
            try:
                target.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(run_dir / name, partial)
                os.replace(partial, target / name)
            except OSError as err:
                partial.unlink(missing_ok=True)
                raise RunDirError(
                    f"could not archive {run_dir / name} to {target} ({err.strerror or err}): "
                    "free space or pass another --archive DIR, then run again (finished arms "
                    "are kept)"
                ) from err


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/comparison"))
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--online-steps", type=int, default=30_000)
    parser.add_argument("--arms", nargs="+", choices=list(ARMS), default=list(ARMS))
    parser.add_argument("--report-only", action="store_true", help="report the finished arms")
    parser.add_argument("--archive", type=Path, help="copy finished arms' results to DIR/<arm>")
    args = parser.parse_args(argv)
    try:
        configs = arm_configs(args.out, args.seeds, args.online_steps, args.arms)
        if not args.report_only:
            for cfg in configs:
                make_run.run_or_continue(cfg)  # refused if its folder holds other settings
                if args.archive is not None:  # each arm as soon as it has finished
                    archive([cfg.out], args.archive)
        finished = [c.out for c in configs if (Path(c.out) / "summary.json").is_file()]
        if args.archive is not None and args.report_only:
            archive(finished, args.archive)
    except RunDirError as err:
        print(f"comparison: {err}", file=sys.stderr)
        return 2
    if not finished:
        print("no arm has finished yet")
        return 1
    result = report.report(finished, out=str(args.out / "report.png"), baseline=configs[0].out)
    text = result.text
    pairs = contrast_pairs(args.out, finished)
    if pairs:
        text += "\n\nWhat each pair of arms isolates:\n\n" + report.contrasts(pairs)
    (args.out / "report.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

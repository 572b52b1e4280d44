"""`python -m benchmarks.comparison`: the honest comparisons, IQL's (#12) and Cal-QL's (#29).

Every arm starts its online phase from one offline phase of its algorithm (`--init-from`), on
the shipped Hopper-v5 medium dataset at the `cpu` preset, and differs from the baseline only in
what its flags name (docs/comparisons.md). The generator arms take the first EDIS arm's
pretrained generator (`--generator-from`: bitwise what pretraining again would give), where its
pretraining is theirs (`pretraining_of`).

- `--algo iql` (default): 8 arms, 8 seeds, 30k online steps, 5 evaluation episodes per point.
- `--algo calql`: 5 arms on the published hopper-medium Cal-QL-EDIS values (SIZES says the
  size and why). Its clean-schedule arms start at the baseline's first retrain (`--init-at
  first-retrain`): until then they train exactly as Cal-QL does.

Each arm is an ordinary run directory under `--out`: re-running continues an interrupted arm
from its latest checkpoint and keeps finished ones (make_run.run_or_continue), so the whole
experiment may span several sessions. It ends with `edis-jax report` of the finished arms
against IQL (IQM [95% CI], final score, online AUC, Welch p, wall time), written to
`--out`/report.md and report.png.

`--archive DIR` copies each finished arm's config.json, summary.json and metrics.jsonl (what the
report reads, a few hundred kB) to DIR/<arm>/: the run directories live on one machine, and a
session's machine is not always kept. `--out DIR --report-only` reports an archive. On a new
machine, `--arms` without the baseline (its results archived earlier) trains the baseline only
as far as those arms start from it, and the report is then the archive's.

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
from typing import NamedTuple

from edis_jax import config, make_run, report
from edis_jax.config import presets
from edis_jax.config.tasks import TASKS
from edis_jax.config.validation import ConfigError
from edis_jax.train import state as S
from edis_jax.train.directory import RunDirError, with_older_defaults

DATASET = make_run.DATASET  # shipped with the package
ARCHIVED = ("config.json", "summary.json", "metrics.jsonl")  # what report.load_run reads

# algo -> arm -> (edis, RunConfig values: config.with_values keys); the baseline comes first,
# then the arm whose generator pretraining the others take.
ARMS: dict[str, dict[str, tuple[bool, dict]]] = {}
ARMS["iql"] = {
    "iql": (False, {}),
    "iql_edis": (True, {}),
    "iql_edis_published": (True, {"online.schedule": "published"}),
    "iql_edis_real": (True, {"online.mixture": (0.25, 0.25, 0.5)}),
    "iql_synther": (True, {"guide": ()}),
    "iql_edis_no_synthetic": (True, {"online.synthetic_ratio": 0.0}),
    "iql_online_half": (False, {"online.baseline_online_ratio": 0.5}),
    "iql_edis_oracle": (True, {"online.relabel": "simulator"}),
}
ARMS["calql"] = {
    "calql": (False, {}),
    # The paper's Cal-QL-EDIS: a retrain after online step 1, then synthetic rows in every update.
    "calql_edis_published": (True, {"online.schedule": "published"}),
    "calql_edis": (True, {}),  # the clean schedule: first retrain at --online.retrain-every
    "calql_synther": (True, {"guide": ()}),
    "calql_edis_no_synthetic": (True, {"online.synthetic_ratio": 0.0}),
}


# What each pair of arms isolates (A - B), for the question the issue asks when IQL-EDIS does
# not beat IQL: which part (batch composition, synthetic rows, their dynamics, the guidance)
# costs what. A pair is reported once both arms have finished.
CONTRASTS: dict[str, tuple[tuple[str, str, str], ...]] = {}
CONTRASTS["iql"] = (
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
CONTRASTS["calql"] = (
    ("EDIS as a whole: the published schedule", "calql_edis_published", "calql"),
    ("EDIS as a whole: the clean schedule", "calql_edis", "calql"),
    ("the published schedule instead of the clean one", "calql_edis_published", "calql_edis"),
    ("energy guidance (same pretrained generator)", "calql_edis", "calql_synther"),
    (
        "synthetic rows: rho of each batch synthetic instead of online-only",
        "calql_edis",
        "calql_edis_no_synthetic",
    ),
    (
        "batch composition: online-only batches after the first retrain instead of half online, "
        "half all real",
        "calql_edis_no_synthetic",
        "calql",
    ),
)

# Cal-QL's published hopper-medium values (published_configs.md, cal_ql_edis; config/tasks.py):
# cql alpha 10 offline and 0.1 online, Lagrange gap 10, critic 256x256, normalised rewards,
# synthetic ratio 0.2. The generator and its guidance stay the `cpu` preset's: sigma-scaled
# scales 1 / 1 / 0.3, calibrated on this data (docs/generator_fidelity.md), not the published
# 2 / 0.01 / 0.01 of unscaled guidance. Every Cal-QL arm takes them, the baseline too.
CALQL_TASK = "cal_ql_edis/hopper-medium"
# The published Cal-QL baseline draws half its batch offline, half online (cal_ql.py's
# mixing_ratio 0.5); ours draws the other half from all real data (offline + online), the
# nearest mixture edis-jax has. EDIS arms use it before their first retrain.
CALQL_ONLINE_SHARE = 0.5


class Size(NamedTuple):
    seeds: int
    offline_steps: int
    online_steps: int
    retrain_every: int


# (algo, preset) -> size. IQL: the `cpu` preset's offline phase and retrain period. Cal-QL at
# `cpu`: sized from the measured cost of its arms on this CPU
# (docs/results.md#the-cal-ql-comparison): about 0.47 s per offline update of 6 seeds and a
# retrain of several minutes; the issue's minimum of 6 seeds and 3 retrains of the clean
# schedule inside the online phase (4 of the published one), every arm within two sessions.
# Cal-QL at `paper` (a GPU): the paper preset's networks and generator, 8 seeds, the steps and
# SIZE_VALUES chosen to fit one GPU call of about 7 minutes by the H200 rates of
# benchmarks/results/gpu_nvidia-h200-971f357.md (not yet run there). `tiny`: tests.
SIZES = {
    ("iql", "cpu"): Size(seeds=8, offline_steps=20_000, online_steps=30_000, retrain_every=5000),
    ("calql", "cpu"): Size(seeds=6, offline_steps=3000, online_steps=3000, retrain_every=750),
    ("calql", "paper"): Size(
        seeds=8, offline_steps=20_000, online_steps=15_000, retrain_every=4000
    ),
    ("calql", "tiny"): Size(seeds=2, offline_steps=100, online_steps=200, retrain_every=50),
}
# Beside the size: 13 retrains of the published 10k diffusion steps and 100k samples would take
# most of a GPU session on their own; 2k steps and 20k samples (the GPU smoke run's) do not.
SIZE_VALUES = {("calql", "paper"): {"diffusion.train_steps": 2000, "online.num_samples": 20_000}}
EVAL_EPISODES = {"cpu": 5, "paper": 10, "tiny": 1}  # paper: the published Cal-QL-EDIS's 10


def contrast_pairs(out: Path, finished: list[str], algo: str = "iql") -> list:
    """The algo's CONTRASTS whose two arms are both among the `finished` run directories, as
    (what, loaded run A, loaded run B)."""
    done = {Path(d).name for d in finished}
    return [
        (what, report.load_run(out / a), report.load_run(out / b))
        for what, a, b in CONTRASTS[algo]
        if a in done and b in done
    ]


def report_text(
    out: Path, finished: list[str], baseline: str, algo: str, figure: str | None = None
) -> str:
    """The comparison's report of its finished arms: the table against the baseline, the
    contrasts whose two arms have finished and, for Cal-QL, each arm's online improvement."""
    text = report.report(finished, out=figure, baseline=baseline).text
    pairs = contrast_pairs(out, finished, algo)
    if pairs:
        text += "\n\nWhat each pair of arms isolates:\n\n" + report.contrasts(pairs)
    if algo == "calql":  # the paper's claim: at least 1.2x Cal-QL's online improvement
        runs = [report.load_run(d) for d in finished]
        text += "\n\nOnline improvement (final - offline score):\n\n" + report.improvements(runs)
    return text


def base_config(
    out: Path, algo: str = "iql", size: Size | None = None, preset: str = "cpu", seed: int = 0
) -> config.RunConfig:
    """The settings every arm shares: the preset (with Cal-QL's published values) as it is now
    or, once the baseline arm has started, the settings it saved. The experiment spans
    sessions, and a later change to the preset must not split it between two settings (its
    finished arms would be refused). `seed` is the base seed: seed i of the run draws from
    fold_in(PRNGKey(seed), i), so experiments of other base seeds are further, independent
    seeds of the same arms (a block of seeds that fits one session)."""
    size = size or SIZES[algo, preset]
    saved = out / algo / "config.json"
    if saved.is_file():
        base = config.from_dict(with_older_defaults(json.loads(saved.read_text())))
        if (base.preset, size_of(base)) != (preset, size):
            raise RunDirError(
                f"{out} holds an experiment of the {base.preset} preset with "
                f"{_describe(size_of(base))}, not {_describe(size)} at {preset}: pass --preset "
                f"{base.preset} {_flags(size_of(base))}, or another --out"
            )
        if base.seed != seed:
            raise RunDirError(
                f"{out} holds the experiment of base seed {base.seed}, not {seed}: pass --seed "
                f"{base.seed}, or another --out for base seed {seed}"
            )
        return base
    cfg = presets.preset(preset).replace(
        seed=seed,
        algo=algo,
        dataset=DATASET,
        seeds=size.seeds,
        offline_steps=size.offline_steps,
        online_steps=size.online_steps,
        eval_episodes=EVAL_EPISODES[preset],
    )
    cfg = config.with_values(cfg, {"online.retrain_every": size.retrain_every})
    if algo == "calql":
        published = TASKS[CALQL_TASK]["values"]
        values = {
            **{k: v for k, v in published.items() if k.startswith("calql.")},
            "online.synthetic_ratio": published["online.synthetic_ratio"],
            "online.baseline_online_ratio": CALQL_ONLINE_SHARE,
            "online.schedule": "clean",  # the paper preset's is the published one
            # 10 points per online phase: its AUC needs more than the preset's few. A
            # checkpoint at each (the arms may stop at a session's end and continue).
            "eval_every": size.online_steps // 10,
            "checkpoint_every": size.online_steps // 10,
        }
        if preset != "cpu":  # the published guidance; `cpu` keeps its calibrated scales
            values |= {k: v for k, v in published.items() if k.startswith("energy.scale_")}
        cfg = config.with_values(cfg, {**values, **SIZE_VALUES.get((algo, preset), {})})
    return cfg


def size_of(cfg: config.RunConfig) -> Size:
    return Size(cfg.seeds, cfg.offline_steps, cfg.online_steps, cfg.online.retrain_every)


def arm_configs(
    out: Path, arms: list[str], algo: str = "iql", size: Size | None = None, preset: str = "cpu",
    seed: int = 0,
) -> list[config.RunConfig]:  # fmt: skip
    """The configs of `arms` of `algo`, the baseline first (it owns the shared offline phase).
    A generator arm takes the pretraining of the first asked arm whose pretraining is the same
    (`pretraining_of`), so each distinct pretraining runs once."""
    base = base_config(out, algo, size, preset, seed)
    names = list(ARMS[algo])
    baseline = names[0]
    configs, owners = [], {}  # owners: pretraining -> the arm that does it
    for name in [baseline, *[a for a in names if a in arms and a != baseline]]:
        edis, values = ARMS[algo][name]
        cfg = config.with_values(base.replace(edis=edis, out=str(out / name)), values)
        if name != baseline:
            cfg = cfg.replace(init_from=str(out / baseline))
        pretraining = pretraining_of(cfg)
        if pretraining is not None:
            owner = owners.setdefault(pretraining, name)
            if owner != name:
                cfg = cfg.replace(generator_from=str(out / owner))
        # Cal-QL's clean-schedule arms train exactly as Cal-QL does until their first retrain
        # (IQL's keep the offline start that their finished runs were made with).
        if algo == "calql" and edis and cfg.online.schedule == "clean":
            cfg = cfg.replace(init_at="first-retrain")
        configs.append(cfg)
    return configs


def pretraining_of(cfg: config.RunConfig) -> tuple | None:
    """What an arm's generator pretraining depends on among the settings the arms vary, or None
    if it pretrains none: the generator's settings and, with warm_lr "continue", the lr horizon,
    which counts the run's retrains (Cal-QL's published schedule has one more than the clean
    one, so the two pretrain differently). Everything else it reads the arms share."""
    d = cfg.diffusion
    if not (cfg.edis and d.warm_start and d.initial_steps > 0):
        return None
    return d, (S.num_retrains(cfg) if d.warm_lr == "continue" else None)


def arms_start(arms: list[config.RunConfig]) -> int:
    """The online step where `arms` start from their baseline: its first retrain if one of them
    starts there (--init-at first-retrain), else the end of its offline phase (step 0)."""
    return max(
        (a.online.retrain_every if a.init_at == "first-retrain" else 0 for a in arms), default=0
    )


def _describe(size: Size) -> str:
    return (
        f"{size.seeds} seeds, {size.offline_steps} offline and {size.online_steps} online steps, "
        f"a retrain every {size.retrain_every}"
    )


def _flags(size: Size) -> str:
    return (
        f"--seeds {size.seeds} --offline-steps {size.offline_steps} --online-steps "
        f"{size.online_steps} --retrain-every {size.retrain_every}"
    )


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
    parser.add_argument("--algo", choices=list(ARMS), default="iql")
    parser.add_argument("--preset", choices=("cpu", "paper", "tiny"), default="cpu")
    parser.add_argument(
        "--out", type=Path, help="default runs/comparison (IQL), runs/comparison_calql"
    )
    parser.add_argument("--seeds", type=int, help="default: SIZES of the algo")
    parser.add_argument(
        "--seed", type=int, default=0,
        help="base seed: another base seed (with another --out) gives further, independent seeds",
    )  # fmt: skip
    parser.add_argument("--offline-steps", type=int)
    parser.add_argument("--online-steps", type=int)
    parser.add_argument("--retrain-every", type=int)
    parser.add_argument("--arms", nargs="+", help="default: every arm of the algo")
    parser.add_argument("--report-only", action="store_true", help="report the finished arms")
    parser.add_argument("--archive", type=Path, help="copy finished arms' results to DIR/<arm>")
    args = parser.parse_args(argv)
    algo, preset = args.algo, args.preset
    if (algo, preset) not in SIZES:
        parser.error(
            f"--algo {algo} runs at --preset {' or '.join(p for a, p in SIZES if a == algo)}"
        )
    name = "comparison" if algo == "iql" else f"comparison_{algo}"
    out = args.out or Path("runs") / (name if preset == "cpu" else f"{name}_{preset}")
    arms = args.arms or list(ARMS[algo])
    unknown = [a for a in arms if a not in ARMS[algo]]
    if unknown:
        parser.error(
            f"--arms: {', '.join(unknown)} not among --algo {algo}'s: {', '.join(ARMS[algo])}"
        )
    size = SIZES[algo, preset]._replace(
        **{k: v for k, v in vars(args).items() if k in Size._fields and v is not None}
    )
    try:
        configs = arm_configs(out, arms, algo, size, preset, args.seed)
        if not args.report_only:
            for cfg in configs:
                stop = None if Path(cfg.out).name in arms else arms_start(configs[1:])
                if stop is not None:
                    print(f"{cfg.out}: not among --arms, trained to online step {stop} only")
                # Refused if its folder holds other settings.
                make_run.run_or_continue(cfg, stop_at_online_step=stop)
                if args.archive is not None and stop is None:  # as soon as it has finished
                    archive([cfg.out], args.archive)
        finished = [c.out for c in configs if (Path(c.out) / "summary.json").is_file()]
        if args.archive is not None and args.report_only:
            archive(finished, args.archive)
    except (RunDirError, ConfigError) as err:
        print(f"comparison: {err}", file=sys.stderr)
        return 2
    if configs[0].out not in finished and args.archive is not None:
        # The baseline finished in an earlier session (its run gone, its results archived):
        # the report is the archive's, which holds every arm finished so far.
        out = args.archive
        finished = [
            str(out / name) for name in ARMS[algo] if (out / name / "summary.json").is_file()
        ]
        configs = [c.replace(out=str(out / Path(c.out).name)) for c in configs]
    if configs[0].out not in finished:
        print(f"the baseline {configs[0].out} has not finished: run it (--arms {algo}) to report")
        return 1
    text = report_text(out, finished, configs[0].out, algo, figure=str(out / "report.png"))
    (out / "report.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

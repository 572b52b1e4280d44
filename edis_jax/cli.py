"""The `edis-jax` command: a dispatcher on the first word; each subcommand parses its own flags
with tyro.

    edis-jax data make --env Hopper-v5 --kind medium --steps 100000 --id local/hopper/medium-v0
    edis-jax data list
    edis-jax data info local/hopper/medium-v0
    edis-jax data scores ID --ref-min-score A --ref-max-score B
    edis-jax data export ID FILE.npz
    edis-jax train --algo iql --dataset local/hopper/medium-v0 --preset cpu --seeds 2 --out runs/x
    edis-jax train --task iql_edis/hopper-medium --seeds 5 --out runs/paper
    edis-jax tasks
    edis-jax resume runs/x
    edis-jax report runs/x runs/y
    edis-jax diagnose --dataset ID --target ID --json diag.json

Every failure ends with one line, `edis-jax: error: ...` (the problem and the fix), never a
traceback: exit status 2 for bad input, 1 for the rest (disk full, a diverged run, no usable
checkpoint, an internal error). `--verbose` anywhere on the line shows library warnings (orbax,
absl, MuJoCo deprecations) and the traceback of an internal error.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import tyro
from tqdm.auto import tqdm

from edis_jax import presets
from edis_jax.config import ConfigError
from edis_jax.datagen.options import DEFAULTS as BUILD

Handler = Callable[[list[str]], int]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: `edis-jax COMMAND ...`; returns the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    verbose = "--verbose" in args
    args = [a for a in args if a != "--verbose"]
    _quiet_libraries(verbose)
    if not args or args[0] in ("-h", "--help"):
        print(_usage(COMMANDS))
        return 0 if args else 2
    handler = COMMANDS.get(args[0])
    if handler is None:
        return _fail(f"unknown command {args[0]!r}: choose one of {', '.join(COMMANDS)}")
    try:
        return handler(args[1:])
    except (ValueError, ConfigError) as e:  # DatasetNotFoundError, ReferenceScoreError, ...
        return _fail(_first_line(e))
    except KeyboardInterrupt:
        return _fail("interrupted (nothing half-written was kept)", status=130)
    except Exception as e:
        if verbose:
            raise
        if type(e).__module__.startswith("edis_jax") or isinstance(e, OSError):
            # CheckpointError, CheckpointSaveError, DivergedError; a full disk, permissions
            return _fail(_first_line(e), status=1)
        return _fail(
            f"internal error ({type(e).__name__}: {_first_line(e)}); run again with --verbose "
            "for the traceback and report it",
            status=1,
        )


# ------------------------------------------------------------------------------------- data


@dataclass(frozen=True)
class MakeArgs:
    """Build a D4RL-style dataset as a Minari dataset under MINARI_DATASETS_PATH."""

    env: str  # gymnasium env id with a Box action space, e.g. Hopper-v5
    kind: Literal["random", "medium", "medium-replay", "expert", "medium-expert"]
    steps: int  # transitions to roll out (medium-expert: this many of each; not medium-replay)
    id: str  # dataset id, namespace/name-vN, e.g. local/hopper/medium-v0
    seed: int = 0
    # Defaults are the builder's own (datagen/options.py's DEFAULTS), so the CLI and the Python API agree.
    medium_fraction: float = BUILD["medium_fraction"]  # medium = SAC stopped at this fraction
    expert_return: float | None = None  # expert return that sets the medium target
    expert_steps: int = BUILD["expert_steps"]  # cap on the expert SAC's env steps
    # The expert stops once the best of its last max(W, n/4) evaluations is within tol x the
    # return spread of the best before them (datagen/selection.py, plateau).
    plateau_window: int = BUILD["plateau_window"]  # W: evaluations without progress to stop
    plateau_tol: float = BUILD["plateau_tol"]  # progress below this fraction of the spread
    max_train_steps: int = BUILD["max_train_steps"]  # budget for SAC to reach the medium target
    eval_every: int = BUILD["eval_every"]  # env steps between SAC evaluations
    eval_episodes: int = BUILD["eval_episodes"]  # per evaluation and per reference score (>= 10)
    sac_critic_lr: float | None = None  # the behaviour SAC's critic lr (default: SACConfig's)
    ref_min_score: float | None = None  # override the reference scores stored
    ref_max_score: float | None = None
    overwrite: bool = False  # replace an existing dataset with this id (once the new one is whole)
    progress: bool = True


@dataclass(frozen=True)
class InfoArgs:
    """Show what a dataset holds: transitions, episodes, returns, reference scores, env id."""

    id: tyro.conf.Positional[str]
    json: bool = False  # print the raw dict as JSON


@dataclass(frozen=True)
class ListArgs:
    """List the datasets in MINARI_DATASETS_PATH and the ones shipped with edis-jax."""

    json: bool = False


@dataclass(frozen=True)
class ScoresArgs:
    """Store reference scores in a local dataset's metadata (for normalised scores)."""

    id: tyro.conf.Positional[str]
    ref_min_score: float
    ref_max_score: float


@dataclass(frozen=True)
class ExportArgs:
    """Save a dataset as one compressed .npz, the form datasets ship in (edis_jax/assets)."""

    id: tyro.conf.Positional[str]
    path: tyro.conf.Positional[str]


def data_command(args: list[str]) -> int:
    """`edis-jax data make|list|info|scores|export ...`"""
    if not args or args[0] in ("-h", "--help"):
        print(_usage(DATA_COMMANDS, prefix="edis-jax data"))
        return 0 if args else 2
    handler = DATA_COMMANDS.get(args[0])
    if handler is None:
        return _fail(f"unknown data command {args[0]!r}: choose one of {', '.join(DATA_COMMANDS)}")
    return handler(args[1:])


def data_make(args: list[str]) -> int:
    from edis_jax.datagen import builder

    a = _parse(MakeArgs, args, "edis-jax data make")
    if a.kind == "medium-replay":
        print(
            "note: medium-replay holds SAC's whole buffer up to the medium point; --steps is unused"
        )
    summary = builder.make_dataset(
        a.env, a.kind, a.steps, a.id, a.seed,
        medium_fraction=a.medium_fraction, expert_return=a.expert_return,
        expert_steps=a.expert_steps, max_train_steps=a.max_train_steps, eval_every=a.eval_every,
        eval_episodes=a.eval_episodes, ref_min_score=a.ref_min_score,
        ref_max_score=a.ref_max_score, sac_critic_lr=a.sac_critic_lr,
        plateau_window=a.plateau_window, plateau_tol=a.plateau_tol, overwrite=a.overwrite,
        progress=a.progress,
    )  # fmt: skip
    t = summary["timings"]
    print(
        f"built {summary['id']} ({summary['kind']}, {summary['env_id']}): "
        f"{summary['transitions']} transitions, {summary['episodes']} episodes, "
        f"mean return {summary['mean_return']:.1f}, in {t['total_s']:.1f} s -> {summary['path']}"
    )
    print("timings: " + ", ".join(f"{k} {v:.1f}" for k, v in t.items()))
    return 0


def data_list(args: list[str]) -> int:
    from edis_jax.data import datasets, minari_store

    a = _parse(ListArgs, args, "edis-jax data list")
    rows = datasets.list_datasets()
    if a.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print(
            f"no datasets in {minari_store.dataset_path('')}; build one with `edis-jax data make`"
        )
        return 0
    header = ("id", "env", "kind", "transitions", "episodes", "ref_min", "ref_max", "where")
    keys = ("id", "env_id", "kind", "transitions", "episodes", "ref_min_score", "ref_max_score")
    table = [header] + [tuple(_cell(r[k]) for k in keys) + (r["location"],) for r in rows]
    print(_format_table(table))
    return 0


def data_info(args: list[str]) -> int:
    from edis_jax.data import datasets

    a = _parse(InfoArgs, args, "edis-jax data info")
    info = datasets.dataset_info(a.id)
    if a.json:
        print(json.dumps(info, indent=2, default=float))
        return 0
    print(_format_info(info))
    return 0


def data_scores(args: list[str]) -> int:
    from edis_jax.data import datasets

    a = _parse(ScoresArgs, args, "edis-jax data scores")
    datasets.set_reference_scores(a.id, a.ref_min_score, a.ref_max_score)
    print(f"{a.id}: ref_min_score {a.ref_min_score}, ref_max_score {a.ref_max_score}")
    return 0


def data_export(args: list[str]) -> int:
    from edis_jax.data import datasets

    a = _parse(ExportArgs, args, "edis-jax data export")
    path = datasets.export_dataset(a.id, a.path)
    print(f"exported {a.id} -> {path} ({path.stat().st_size / 1e6:.1f} MB)")
    return 0


DATA_COMMANDS: dict[str, Handler] = {
    "make": data_make,
    "list": data_list,
    "info": data_info,
    "scores": data_scores,
    "export": data_export,
}
# ------------------------------------------------------------------------------ train / resume


def train_command(args: list[str]) -> int:
    """Offline pretraining then online fine-tuning for N vmapped seeds (EDIS or baseline)."""
    from edis_jax import config
    from edis_jax.train import loop

    task = _flag_value(args, "--task")
    name = _flag_value(args, "--preset") or ("paper" if task else "cpu")
    cfg = _parse(
        config.RunConfig,
        _split_guide(args),
        "edis-jax train",
        default=presets.preset(name, task),
        description="Offline then online training of N seeds in one compiled program. "
        "--preset picks the defaults (tiny, cpu, paper) that the other flags override; "
        "--task applies a published per-task config on top (preset paper unless given; "
        "`edis-jax tasks` lists them); "
        "--guide takes a comma list of state,policy,transition (or none).",
    )
    summary = loop.train(cfg)
    _print_summary(summary, cfg.out)
    return 0


@dataclass(frozen=True)
class ResumeArgs:
    """Continue an interrupted run from its latest checkpoint."""

    run_dir: tyro.conf.Positional[str]


def resume_command(args: list[str]) -> int:
    """Continue an interrupted `edis-jax train` run exactly where its checkpoint left it."""
    from edis_jax.train import loop

    a = _parse(ResumeArgs, args, "edis-jax resume")
    summary = loop.resume(a.run_dir)
    _print_summary(summary, a.run_dir)
    return 0


@dataclass(frozen=True)
class ReportArgs:
    """Compare runs: a table of scores over seeds (IQM with 95% bootstrap CIs), PNGs of learning
    curves and of generator health."""

    run_dirs: tyro.conf.Positional[tuple[str, ...]]
    out: str | None = None  # PNG path (default: report.png beside the first run directory)
    baseline: str | None = None  # run directory the others are tested against (Welch's t-test)


def report_command(args: list[str]) -> int:
    """Print a comparison table of runs; write their learning curves and generator health as
    PNGs."""
    from edis_jax import report

    a = _parse(ReportArgs, args, "edis-jax report")
    text, curves, health = report.report(list(a.run_dirs), a.out, baseline=a.baseline)
    print(text)
    print(f"\nlearning curves: {curves}")
    if health is not None:
        print(f"generator health: {health}")
    return 0


def diagnose_command(args: list[str]) -> int:
    """Measure how well generated transitions match online data, per guidance energy."""
    from edis_jax import diagnose

    a = _parse(diagnose.DiagnoseArgs, args, "edis-jax diagnose")
    diagnose.diagnose_main(a)
    return 0


def _flag_value(args: list[str], flag: str) -> str | None:
    """The value of `flag VALUE` or `flag=VALUE` in args (the last one), or None."""
    value = None
    for i, arg in enumerate(args):
        if arg == flag and i + 1 < len(args):
            value = args[i + 1]
        elif arg.startswith(flag + "="):
            value = arg.split("=", 1)[1]
    return value


@dataclass(frozen=True)
class TasksArgs:
    """List the published per-task configs (`train --task NAME`), or show one task's values."""

    name: tyro.conf.Positional[str | None] = None  # a task: print every value it sets
    json: bool = False


def tasks_command(args: list[str]) -> int:
    """List the paper's tasks (published per-task configs) that `train --task` applies."""
    from edis_jax import config
    from edis_jax.tasks import TASKS

    a = _parse(TasksArgs, args, "edis-jax tasks")
    if a.name is not None:
        if a.name not in TASKS:
            return _fail(config.unknown_task(a.name))
        task = TASKS[a.name]
        if a.json:
            print(json.dumps(task, indent=2))
            return 0
        print(f"{a.name}: {task['dataset']} ({task['env']}), from {task['source']}")
        print("\n".join(f"  {k} = {v}" for k, v in task["values"].items()))
        return 0
    if a.json:
        print(json.dumps(TASKS, indent=2))
        return 0
    header = ("task", "dataset", "env", "key values (on top of --preset paper)")
    rows = [(n, t["dataset"], t["env"], _key_values(t["values"])) for n, t in TASKS.items()]
    print(_format_table([header, *rows]))
    print("\nrun one with `edis-jax train --task NAME`; `edis-jax tasks NAME` shows its values")
    return 0


# Short labels of the values that differ most between tasks, in the order shown.
_KEY_VALUES = (
    ("online.utd", "utd"), ("online.utd_retrain", "utd"), ("online.synthetic_ratio", "rho"),
    ("diffusion.train_steps", "diffusion"), ("iql.expectile", "expectile"), ("iql.beta", "beta"),
    ("energy.scale_state", "w_s"), ("energy.scale_policy", "w_a"),
    ("energy.scale_transition", "w_t"), ("calql.cql_alpha", "alpha"),
    ("calql.cql_alpha_online", "alpha_online"), ("calql.critic_hidden_dims", "critic"),
    ("calql.cql_lagrange", "lagrange"), ("calql.cql_target_action_gap", "gap"),
    ("calql.reward_scale", "r_scale"), ("calql.reward_bias", "r_bias"),
    ("online.baseline_online_ratio", "online_ratio"),
)  # fmt: skip


def _key_values(values: dict) -> str:
    def fmt(v) -> str:
        if isinstance(v, tuple):
            return f"{len(v)}x{v[0]}"
        return f"{v:g}" if isinstance(v, float) else str(v)

    shown = [f"{label} {fmt(values[k])}" for k, label in _KEY_VALUES if k in values]
    return ", ".join(shown) or "(the preset's)"


def _split_guide(args: list[str]) -> list[str]:
    """`--guide state,policy` (DESIGN.md's form) -> tyro's `--guide state policy`; `none` -> no
    guidance (plain SynthER)."""
    out: list[str] = []
    for i, arg in enumerate(args):
        if i > 0 and args[i - 1] == "--guide":
            out.extend(p for p in arg.split(",") if p and p != "none")
        elif arg.startswith("--guide="):
            out.append("--guide")
            out.extend(p for p in arg.split("=", 1)[1].split(",") if p and p != "none")
        else:
            out.append(arg)
    return out


def _print_summary(summary: dict | None, run_dir: str) -> None:
    if summary is None:
        print(f"stopped early; continue with `edis-jax resume {run_dir}`")
        return

    def fmt(stats: dict) -> str:  # a non-finite score is null in summary.json
        return " ± ".join("nan" if v is None else f"{v:.1f}" for v in (stats["mean"], stats["std"]))

    print(
        f"{summary['algo']}{'-edis' if summary['edis'] else ''} on {summary['dataset']}, "
        f"{summary['seeds']} seeds: offline {fmt(summary['offline_score'])}, "
        f"final {fmt(summary['final_score'])}, best {fmt(summary['best_score'])} "
        f"(normalised), {summary['wall_time_s']['total']:.0f} s -> {run_dir}"
    )


COMMANDS: dict[str, Handler] = {
    "data": data_command,
    "train": train_command,
    "resume": resume_command,
    "report": report_command,
    "diagnose": diagnose_command,
    "tasks": tasks_command,
}


# ---------------------------------------------------------------------------------- helpers


def _parse(cls, args: list[str], prog: str, **kwargs):
    """tyro's parse, with its rejection of the flags (a multi-line box on stderr) reduced to one
    ConfigError line; --help still prints in full."""
    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured):
            parsed = tyro.cli(cls, args=args, prog=prog, **kwargs)
    except SystemExit as e:
        if e.code not in (0, None):
            message = _box_message(captured.getvalue()).rstrip(".")
            raise ConfigError(f"{message}; see `{prog} --help`") from None
        raise
    sys.stderr.write(captured.getvalue())  # tyro's warnings, if any
    return parsed


def _box_message(text: str) -> str:
    """The message of tyro's error box (its first section, unwrapped) and the flags it suggests
    for an unknown one; the last line of anything else (argparse's `error: ...`)."""
    lines = re.sub(r"\x1b\[[0-9;]*m", "", text).strip().splitlines()
    if not any(_RULE.match(line) for line in lines):
        return lines[-1].strip() if lines else "invalid arguments"
    # Below the title, rules (drawn with ─ or, without Unicode, -) separate the sections.
    sections: list[list[str]] = [[]]
    for line in lines[1:]:
        if _RULE.match(line):
            if sections[-1]:
                sections.append([])
        elif line.strip("│ "):
            sections[-1].append(line.strip("│ "))
    message = re.sub(r"^Error parsing (\S+): ", r"\1: ", " ".join(sections[0]))
    for section in sections[1:]:
        if section and section[0].startswith("Perhaps you meant"):
            flags = [row.split()[0] for row in section[1:] if row.startswith("-")]
            message += f" (did you mean {' or '.join(flags)}?)" if flags else ""
    return message


_RULE = re.compile(r"^[\s│╭╮╰╯]*[─-]{3,}[\s│╭╮╰╯]*$")


def _fail(message: str, status: int = 2) -> int:
    # A progress bar left open by the failure would share the line: close it first.
    for bar in list(getattr(tqdm, "_instances", ())):
        bar.close()
    print(f"edis-jax: error: {message}", file=sys.stderr)
    return status


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _quiet_libraries(verbose: bool) -> None:
    """Without --verbose: no orbax / absl log lines and no MuJoCo deprecation notices (HalfCheetah
    prints one per env made); other MuJoCo warnings (NaN in the physics) still show."""
    if verbose:
        from edis_jax import checkpoint

        checkpoint._quiet_orbax.verbose = True
        return
    logging.getLogger("absl").setLevel(logging.ERROR)
    try:
        import mujoco
    except ImportError:
        return

    def warn(message: str) -> None:
        if "deprecated" not in message:
            print(f"WARNING: {message}", file=sys.stderr)

    mujoco.set_mju_user_warning(warn)


def _usage(commands: dict[str, Handler], prefix: str = "edis-jax") -> str:
    lines = [f"usage: {prefix} COMMAND [ARGS...]", "", "commands:"]
    for name, handler in commands.items():
        doc = (handler.__doc__ or "").strip().splitlines()
        lines.append(f"  {name:10s} {doc[0] if doc else ''}")
    lines.append(f"\nrun `{prefix} COMMAND --help` for a command's flags")
    return "\n".join(lines)


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def _format_table(rows: list[tuple]) -> str:
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows
    )


def _format_info(info: dict) -> str:
    def stats(s: dict | None) -> str:
        if not s or s["mean"] is None:
            return "-"
        return f"mean {s['mean']:.1f}  std {s['std']:.1f}  min {s['min']:.1f}  max {s['max']:.1f}"

    lines = [
        f"id              {info['id']}",
        f"env             {info['env_id']}",
        f"path            {info['path']}",
        f"transitions     {info['transitions']}",
        f"episodes        {info['episodes']}  (terminated {info['terminations']})",
        f"obs/act dims    {info['obs_dim']} / {info['act_dim']}",
        f"episode length  {stats(info['episode_length'])}",
        f"episode return  {stats(info['episode_return'])}",
        f"ref scores      min {_cell(info['ref_min_score'])}  max {_cell(info['ref_max_score'])}",
    ]
    if info.get("normalized_return"):
        lines.append(f"normalised      {stats(info['normalized_return'])}")
    else:
        lines.append(f"normalised      - ({info.get('normalized_return_error', '')})")
    lines.append(f"checks          {info['checks']}")
    build = info.get("build")
    if build:
        lines.append(f"built by        {build.get('command', '')}")
        hidden = ("command", "env_id", "steps", "seed", "expert_evals")  # the curve: in --json
        extra = {k: v for k, v in build.items() if k not in hidden}
        lines.append(f"build info      {json.dumps(extra, default=str)}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())

"""`edis-jax data make|list|info|scores|export`: build, list, inspect and export datasets."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from typing import Literal

import tyro

from edis_jax.cli.parsing import Handler, cell, fail, format_table, parse, usage
from edis_jax.datagen.options import DEFAULTS as BUILD


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
    # The behaviour SAC's env: auto = jax (compiled chunks) on a GPU/TPU where the env has an
    # exact JAX version, gymnasium otherwise; evaluations and rollouts step gymnasium's.
    env_backend: Literal["auto", "gymnasium", "jax"] = BUILD["env_backend"]
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
    path: tyro.conf.Positional[str]  # the file to write, exactly this name (e.g. x.npz)
    overwrite: bool = False  # replace an existing file at PATH


def data_command(args: list[str]) -> int:
    """`edis-jax data make|list|info|scores|export ...`"""
    if not args or args[0] in ("-h", "--help"):
        print(usage(DATA_COMMANDS, prefix="edis-jax data"))
        return 0 if args else 2
    handler = DATA_COMMANDS.get(args[0])
    if handler is None:
        return fail(f"unknown data command {args[0]!r}: choose one of {', '.join(DATA_COMMANDS)}")
    return handler(args[1:])


def data_make(args: list[str]) -> int:
    from edis_jax.datagen import builder

    a = parse(MakeArgs, args, "edis-jax data make")
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
        plateau_window=a.plateau_window, plateau_tol=a.plateau_tol, env_backend=a.env_backend,
        overwrite=a.overwrite, progress=a.progress,
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

    a = parse(ListArgs, args, "edis-jax data list")
    rows, unreadable = datasets.list_datasets()
    if a.json:
        print(json.dumps(rows, indent=2))
    elif not rows:
        print(
            f"no datasets in {minari_store.dataset_path('')}; build one with `edis-jax data make`"
        )
    else:
        header = ("id", "env", "kind", "transitions", "episodes", "ref_min", "ref_max", "where")
        keys = ("id", "env_id", "kind", "transitions", "episodes", "ref_min_score", "ref_max_score")
        table = [header] + [tuple(cell(r[k]) for k in keys) + (r["location"],) for r in rows]
        print(format_table(table))
    if unreadable:
        print(
            f"edis-jax: warning: {len(unreadable)} folder{'s' * (len(unreadable) != 1)} of the "
            f"store could not be read as datasets (delete or rebuild them): "
            f"{'; '.join(unreadable)}",
            file=sys.stderr,
        )
    return 0


def data_info(args: list[str]) -> int:
    from edis_jax.data import datasets

    a = parse(InfoArgs, args, "edis-jax data info")
    info = datasets.dataset_info(a.id)
    if a.json:
        print(json.dumps(info, indent=2, default=float))
        return 0
    print(_format_info(info))
    return 0


def data_scores(args: list[str]) -> int:
    from edis_jax.data import datasets

    a = parse(ScoresArgs, args, "edis-jax data scores")
    datasets.set_reference_scores(a.id, a.ref_min_score, a.ref_max_score)
    print(f"{a.id}: ref_min_score {a.ref_min_score}, ref_max_score {a.ref_max_score}")
    return 0


def data_export(args: list[str]) -> int:
    from edis_jax.data import datasets

    a = parse(ExportArgs, args, "edis-jax data export")
    path = datasets.export_dataset(a.id, a.path, a.overwrite)
    print(f"exported {a.id} -> {path} ({path.stat().st_size / 1e6:.1f} MB)")
    return 0


DATA_COMMANDS: dict[str, Handler] = {
    "make": data_make,
    "list": data_list,
    "info": data_info,
    "scores": data_scores,
    "export": data_export,
}


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
        f"ref scores      min {cell(info['ref_min_score'])}  max {cell(info['ref_max_score'])}",
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

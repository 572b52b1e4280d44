"""The run directory: what a run writes where, one writer at a time, and the checks that refusean --out, a --resume or an --init-from before anything on disk changes.

A run writes into its directory:
  .edis-jax-run   the marker that makes it a run directory (--overwrite deletes nothing else)
  config.json     the resolved RunConfig
  metrics.jsonl   one record per log point per seed (no wall-clock values, so a resumed run
                  writes exactly the records an uninterrupted run writes)
  checkpoints/    orbax checkpoints of the whole run (train/state.RunState + host record),
                  and config.json: the config they were written with (resume checks it)
  offline_checkpoint/    the agent at the end of the offline phase (for --init-from)
  pretrained_generator/  the generator after its pretraining (for --generator-from)
  first_retrain_checkpoint/  a baseline's state at online step --online.retrain-every (for
                  --init-from with --init-at first-retrain)
  summary.json    the scores and timings (DESIGN.md section 4)

One writer per run: `train` and `resume` hold an exclusive flock on the run folder itself (the
kernel drops it when the process ends, however it ends), and a second one is refused. A new run
is built in a staging folder beside its --out and swapped in once it has its config.json.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path

from edis_jax import __version__
from edis_jax.config import RunConfig, from_dict, to_dict
from edis_jax.storage import checkpoint, file_locks
from edis_jax.storage.output_paths import check_writable_folder


class RunDirError(ValueError):
    """The run directory cannot be used as asked; the message says why and what to do."""


# Written into every run directory, and only by edis-jax: --overwrite deletes no other folder.
RUN_MARKER = ".edis-jax-run"


def write_start(run_dir: Path, cfg: RunConfig) -> None:
    """What a run holds before its first checkpoint: enough for `resume` to start it."""
    config = json.dumps(to_dict(cfg), indent=2)
    (run_dir / RUN_MARKER).write_text(f"edis-jax {__version__}\n")
    (run_dir / "config.json").write_text(config)
    (run_dir / checkpoint.CHECKPOINT_DIR).mkdir(exist_ok=True)
    (run_dir / checkpoint.CHECKPOINT_DIR / "config.json").write_text(config)


# What two runs must share for one to start its online phase from the other's offline phase.
OFFLINE_FIELDS = (
    "algo", "dataset", "seeds", "seed", "offline_steps", "batch_size", "eval_every",
    "eval_episodes", "log_every", "checkpoint_every", "ref_min_score", "ref_max_score",
)  # fmt: skip


def check_offline_source(cfg: RunConfig) -> RunConfig:
    """The --init-from run's config, after checking that its offline phase is this run's: the
    same dataset, algorithm, seeds and offline settings (agent config included)."""
    source_dir = Path(cfg.init_from)
    source = read_config(source_dir, "--init-from")
    for name in OFFLINE_FIELDS:
        mine, theirs = getattr(cfg, name), getattr(source, name)
        if mine != theirs:
            raise RunDirError(
                f"--init-from {source_dir}: its {name} is {theirs!r}, this run's is {mine!r}; "
                "arms that share an offline phase must match in it"
            )
    if to_dict(cfg)[cfg.algo] != to_dict(source)[cfg.algo]:
        raise RunDirError(
            f"--init-from {source_dir}: its {cfg.algo} agent settings differ from this run's "
            f"(--{cfg.algo}.*); arms that share an offline phase must match in them"
        )
    if cfg.offline_steps == 0:
        raise RunDirError("--init-from needs an offline phase to share: --offline-steps is 0")
    if not (source_dir / checkpoint.OFFLINE_DIR).is_dir():
        raise RunDirError(
            f"--init-from {source_dir}: it has not finished its offline phase (no "
            f"{checkpoint.OFFLINE_DIR}/ folder); finish or resume it first"
        )
    return source


# What an EDIS arm may set differently from the baseline it starts from at its first retrain:
# none of it acts before that retrain (the generator, its data and guidance, the batches after
# the retrain), or it names the run rather than changes it.
EDIS_ONLY_FIELDS = (
    "edis", "guide", "diffusion", "energy", "online.num_samples", "online.synthetic_ratio",
    "online.mixture", "online.relabel", "online.schedule", "online.utd_retrain",
    "out", "overwrite", "init_from", "init_at", "generator_from", "log", "preset", "task",
    "env_backend",  # compared once resolved (train/loop.py's _with_env_backend)
)  # fmt: skip


def check_first_retrain_source(cfg: RunConfig) -> None:
    """For --init-at first-retrain: the --init-from run must be a baseline that kept its state
    at this run's first retrain, and match this run in everything that acts before it."""
    source_dir = Path(cfg.init_from)
    source = check_offline_source(cfg)
    if source.edis:
        raise RunDirError(
            f"--init-from {source_dir} is an EDIS run: --init-at first-retrain starts from a "
            "baseline (--no-edis), whose online phase an EDIS arm repeats until its first retrain"
        )
    differ = [
        f"{name} {theirs!r} -> {mine!r}"
        for name, theirs, mine in _config_diff(_as_json(source), _as_json(cfg))
        if not any(name == f or name.startswith(f + ".") for f in EDIS_ONLY_FIELDS)
    ]
    if differ:
        raise RunDirError(
            f"--init-from {source_dir}: it differs from this run in settings that act before "
            f"the first retrain ({', '.join(differ)}); match them, or use --init-at offline"
        )
    if not (source_dir / checkpoint.FIRST_RETRAIN_DIR).is_dir():
        raise RunDirError(
            f"--init-from {source_dir}: it has no {checkpoint.FIRST_RETRAIN_DIR}/ folder (it has "
            f"not reached online step {cfg.online.retrain_every}, or an older edis-jax wrote "
            "it); resume it past that step, or use --init-at offline"
        )


# The settings a pretraining depends on (beside the code and the dataset's files): the offline
# data as the buffer holds it (dataset, seeds, the algorithm and its agent settings, which set
# the reward scaling), the generator and its training (diffusion.*), and the learning-rate
# horizon (the run's number of retrains).
PRETRAINING_FIELDS = ("dataset", "seeds", "seed", "algo", "diffusion", "online_steps",
                      "online.retrain_every", "online.schedule")  # fmt: skip


def check_generator_source(cfg: RunConfig) -> list[str]:
    """For --generator-from: check that the source run kept a pretrained generator; return the
    PRETRAINING_FIELDS in which its config differs from this run's ("name old -> new")."""
    source_dir = Path(cfg.generator_from)
    source = read_config(source_dir, "--generator-from")
    if not (source_dir / checkpoint.PRETRAINED_DIR).is_dir():
        raise RunDirError(
            f"--generator-from {source_dir}: it has no pretrained generator (no "
            f"{checkpoint.PRETRAINED_DIR}/ folder); give an EDIS run with "
            "--diffusion.initial-steps that has started its online phase"
        )
    return [
        f"{name} {theirs!r} -> {mine!r}"
        for name, theirs, mine in _config_diff(_as_json(source), _as_json(cfg))
        if any(name == f or name.startswith(f + ".") for f in (*PRETRAINING_FIELDS, cfg.algo))
    ]


def check_resumable(run_dir: Path) -> None:
    """Refuse, before any work, a run folder that resume could not write its records and
    checkpoints in (a read-only disk, no permission)."""
    fix = f"copy {run_dir} to a writable disk and resume the copy, or fix the permissions"
    for folder in (run_dir, run_dir / checkpoint.CHECKPOINT_DIR):
        if folder.is_dir():
            check_writable_folder(folder, f"resume {run_dir}", fix)


def check_checkpoints_match(run_dir: Path, cfg: RunConfig) -> None:
    """Refuse a run whose checkpoints are missing or were written under another config."""
    ckpt_dir = run_dir / checkpoint.CHECKPOINT_DIR
    if not ckpt_dir.is_dir():
        raise RunDirError(
            f"{run_dir} has no {checkpoint.CHECKPOINT_DIR}/ folder, so there is nothing to "
            f"resume from: restore the folder, or start the run again with `edis-jax train "
            f"--out {run_dir} --overwrite`"
        )
    written = ckpt_dir / "config.json"
    if not written.is_file():  # runs made before the checkpoints kept their config
        return
    # Read through from_dict, so that a field added since the checkpoints were written takes
    # its default there too: new fields default to the behaviour the older code had.
    try:
        saved = from_dict(with_older_defaults(json.loads(written.read_text())))
    except (json.JSONDecodeError, TypeError, AttributeError) as e:
        raise RunDirError(
            f"{written} is damaged ({e}): copy {run_dir}/config.json over it if the run's "
            "settings never changed, or start the run again with `edis-jax train --overwrite`"
        ) from None
    differ = [
        f"{name} {theirs!r} -> {mine!r}"
        for name, theirs, mine in _config_diff(_as_json(saved), _as_json(cfg))
        if name not in ("out", "overwrite")
    ]
    if differ:
        raise RunDirError(
            f"{run_dir}/config.json no longer matches the config its checkpoints were written "
            f"with ({', '.join(differ)}): put those values back (they are in "
            f"{written}), or start a new run with `edis-jax train`"
        )


def _as_json(cfg: RunConfig) -> dict:
    """The config as config.json holds it (tuples as lists), for comparing field by field."""
    return json.loads(json.dumps(to_dict(cfg)))


def _config_diff(old: dict, new: dict, prefix: str = ""):
    """(dotted name, old value, new value) for every field that differs."""
    for name in sorted(set(old) | set(new)):
        a, b = old.get(name), new.get(name)
        if isinstance(a, dict) and isinstance(b, dict):
            yield from _config_diff(a, b, f"{prefix}{name}.")
        elif a != b:
            yield f"{prefix}{name}", a, b


def locked(run_dir: Path):
    """Hold an exclusive lock on the run folder, or refuse with one line."""
    return file_locks.held(run_dir, _in_use(run_dir))


def _in_use(run_dir: Path) -> RunDirError:
    return RunDirError(
        f"{run_dir} is in use by another `edis-jax train` or `resume`: wait for it to end (or "
        "stop it) first; one run folder takes one writer"
    )


def read_config(run_dir: Path, flag: str = "") -> RunConfig:
    """The config.json of a run directory, or one line saying why it is not one (naming the
    `flag` that gave the directory, if one did)."""
    config_file = run_dir / "config.json"
    given = f"{flag} {run_dir}" if flag else str(run_dir)
    if not run_dir.is_dir():
        what = "a file" if run_dir.exists() else "no such folder"
        raise RunDirError(
            f"{given} is not a run directory ({what}): give the --out of an earlier "
            "`edis-jax train`"
        )
    if not config_file.is_file():
        raise RunDirError(
            f"{given} is not a run directory (no config.json): give the --out of an earlier "
            "`edis-jax train`"
        )
    try:
        data = json.loads(config_file.read_text())
    except json.JSONDecodeError as e:
        raise RunDirError(
            f"{config_file} is not valid JSON ({e}): restore it, or start the run again with "
            "--overwrite"
        ) from None
    if not (isinstance(data, dict) and data.keys() >= RUN_CONFIG_KEYS):
        raise RunDirError(
            f"{given} is not an edis-jax run directory (its config.json is not a run's config: "
            f"no {', '.join(sorted(RUN_CONFIG_KEYS))}): give the --out of an earlier "
            "`edis-jax train`"
        )
    return from_dict(with_older_defaults(data))


def with_older_defaults(data: dict) -> dict:
    """A config.json's values, with those of fields whose default is not what runs written
    before the field existed did: those runs stepped gymnasium's envs (--env-backend), and
    their checkpoints hold no env state."""
    if isinstance(data, dict):
        data.setdefault("env_backend", "gymnasium")
    return data


# Fields every run's config.json has held: a config.json without them is another program's.
RUN_CONFIG_KEYS = frozenset({"algo", "dataset", "seeds", "offline_steps", "online_steps"})


def is_run_dir(path: Path) -> bool:
    """Whether `path` is an edis-jax run directory: it holds the marker, or (runs made before
    the marker) config.json, metrics.jsonl and checkpoints/ together."""
    legacy = ("config.json", "metrics.jsonl")
    return (path / RUN_MARKER).is_file() or (
        all((path / name).is_file() for name in legacy)
        and (path / checkpoint.CHECKPOINT_DIR).is_dir()
    )


def check_out(cfg: RunConfig) -> Path:
    """The absolute --out path, after refusing one that train cannot build a run in or must not
    replace. Touches nothing."""
    if not cfg.out.strip():
        raise RunDirError("--out is empty: give a folder path for the run, e.g. --out runs/x")
    out, run_dir = cfg.out, Path(os.path.abspath(cfg.out))
    if run_dir.exists() and not run_dir.is_dir():
        raise RunDirError(f"--out {out} is a file: give a folder path for --out")
    if run_dir.is_dir() and any(run_dir.iterdir()):
        if not cfg.overwrite:
            raise RunDirError(
                f"run directory {out} already exists: pass --overwrite to replace it, "
                f"`edis-jax resume {out}` to continue it, or choose another --out"
            )
        if not is_run_dir(run_dir):
            raise RunDirError(
                f"{out} exists and is not an edis-jax run directory (no {RUN_MARKER}): refusing "
                "to delete it even with --overwrite; choose another --out"
            )
    if Path.cwd() == run_dir or run_dir in Path.cwd().parents:
        raise RunDirError(
            f"--out {out} holds the current directory, which a new run would replace: run "
            "from outside it"
        )
    # The staging folder goes beside run_dir: the nearest existing folder above must take it.
    above = next(p for p in run_dir.parents if p.exists())
    if not above.is_dir():
        raise RunDirError(f"--out {out} lies below {above}, a file: choose another --out")
    check_writable_folder(above, f"--out {out}", "choose a writable --out")
    return run_dir


@contextlib.contextmanager
def staged(run_dir: Path, existed: bool, locks: contextlib.ExitStack):
    """A new folder beside `run_dir` to build a run in, locked until `locks` closes (the lock
    moves with the folder). On success it takes run_dir's place (an old run_dir is renamed
    away, the new one renamed in, the old one deleted); on failure it is deleted, and run_dir
    and the folders above it are as they were."""
    created = [p for p in reversed(run_dir.parents) if not p.exists()]  # outermost first
    # One staging name per --out: whoever locks it owns the --out until its run is swapped in,
    # so two `train`s into the same new --out cannot both start. An unlocked folder of that
    # name is a leftover of a killed start, which this one takes over.
    staging = run_dir.with_name(f"{run_dir.name}.staging")
    old = run_dir.with_name(f"{run_dir.name}.replaced-{os.getpid()}")
    owned = moved_away = False
    try:
        for folder in created:
            folder.mkdir(exist_ok=True)  # another start into the same folders may make them
        locks.callback(os.close, _claim(staging, run_dir))
        owned = True
        if run_dir.is_dir() != existed:  # another start swapped its run in after our checks
            raise _in_use(run_dir)
        for leftover in staging.iterdir():
            if leftover.is_dir() and not leftover.is_symlink():
                shutil.rmtree(leftover)
            else:
                leftover.unlink()
        yield staging
        if run_dir.exists():
            shutil.rmtree(old, ignore_errors=True)
            run_dir.rename(old)
            moved_away = True
        staging.rename(run_dir)
    except BaseException:
        if moved_away and not run_dir.exists():
            old.rename(run_dir)
        if owned:
            shutil.rmtree(staging, ignore_errors=True)
        for folder in reversed(created):
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    shutil.rmtree(old, ignore_errors=True)


def _claim(staging: Path, run_dir: Path) -> int:
    """Make (or take over) the staging folder and lock it; the open descriptor holds the lock.
    Refused with one line while another start holds it."""
    for _ in range(3):
        with contextlib.suppress(FileExistsError):
            staging.mkdir()
        try:
            fd = os.open(staging, os.O_RDONLY)
        except FileNotFoundError:  # deleted by a failed start between mkdir and open
            continue
        if not file_locks.try_lock(fd):
            os.close(fd)
            raise _in_use(run_dir)
        # A failed start deletes its staging folder before unlocking it: ours must still be
        # the folder of that name.
        with contextlib.suppress(FileNotFoundError):
            if os.stat(staging).st_ino == os.fstat(fd).st_ino:
                return fd
        os.close(fd)
    raise _in_use(run_dir)

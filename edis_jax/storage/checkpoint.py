"""Orbax checkpoints of a whole run: the device state pytree plus a JSON record of host state.

Orbax writes each step into a temporary folder and renames it only once complete, so a process
killed during a save leaves the previous checkpoint as the latest usable one; `max_to_keep=2`
keeps that previous one around while the next is written. Once orbax is done, every file of the
step gets its sha256 in the step's `checksums.json`; a restore checks them first, so flipped or
truncated bytes make it fall back to the checkpoint before, with one line saying so.

A step without `checksums.json` is restored on orbax's word alone, with one line saying so. A
kill between orbax's commit and the checksums leaves the newest step so: its files are whole
(orbax renames the step in only after writing them all, and a killed process loses nothing it
wrote), and when it is the run's first checkpoint, refusing it would leave nothing to resume
from, breaking "kill anywhere, then resume". An older step can lack them too, legitimately: a
run resumed from such a step keeps it as its fallback, and runs written before checksums have
none. Orbax still refuses such a step when its files are missing or malformed; only flipped
bytes inside its arrays, damage on top of that kill window, would pass.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

CHECKPOINT_DIR = "checkpoints"
# The agent at the end of the offline phase, kept for the run's whole life: other runs start
# their online phase from it (`edis-jax train --init-from`).
OFFLINE_DIR = "offline_checkpoint"
# The warm-started generator after its pretraining on the offline data, kept for the run's
# whole life: other runs take it instead of pretraining again (`--generator-from`).
PRETRAINED_DIR = "pretrained_generator"
# A baseline's whole state at online step --online.retrain-every, kept for the run's whole life:
# EDIS arms with that schedule train exactly as the baseline until their first retrain there,
# and start from it (`--init-from RUN --init-at first-retrain`).
FIRST_RETRAIN_DIR = "first_retrain_checkpoint"
CHECKSUMS = "checksums.json"
# Orbax's name for a step folder being written (renamed to the step number once complete).
_TMP_MARK = ".orbax-checkpoint-tmp"


class CheckpointError(RuntimeError):
    """A run directory has no usable checkpoint; the message says what to do."""


class CheckpointSaveError(RuntimeError):
    """A checkpoint could not be written (disk full, permissions); earlier ones are intact."""


def _manager(run_dir: Path, folder: str = CHECKPOINT_DIR) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(max_to_keep=2, enable_async_checkpointing=False)
    return ocp.CheckpointManager(Path(run_dir).resolve() / folder, options=options)


def save(run_dir: Path, step: int, state: Any, host: dict, folder: str = CHECKPOINT_DIR) -> None:
    """Save `state` (a pytree of arrays) and `host` (JSON-serialisable) as checkpoint `step`,
    then its checksums. A failed save removes its partial files and raises CheckpointSaveError
    with one line; the checkpoints before it are untouched."""
    ckpt_dir = Path(run_dir).resolve() / folder
    with _quiet_orbax():
        threads = set(threading.enumerate())
        manager = _manager(run_dir, folder)
        try:
            if step in manager.all_steps():
                # Left by an earlier attempt that the run fell back from (damaged): replace it.
                manager.delete(step)
            manager.save(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardSave(_without_empty(state)),
                    host=ocp.args.JsonSave(host),
                ),
            )
            manager.wait_until_finished()
            manager.close()
            _write_checksums(ckpt_dir / str(step))
        except Exception as err:
            # Let orbax's writer threads end (quietly) before their folder goes.
            with contextlib.suppress(Exception):
                manager.close()
            for thread in set(threading.enumerate()) - threads:
                _join(thread)
            for partial in ckpt_dir.glob(f"*{_TMP_MARK}*"):
                shutil.rmtree(partial, ignore_errors=True)
            step_dir = ckpt_dir / str(step)
            if step_dir.is_dir() and not (step_dir / CHECKSUMS).is_file():
                shutil.rmtree(step_dir, ignore_errors=True)
            raise CheckpointSaveError(_save_failure(err, ckpt_dir, step, run_dir)) from err


def _join(thread: threading.Thread, timeout: float = 60.0) -> None:
    """Wait for one of orbax's writer threads to end. A thread orbax has started but that has
    not begun running yet refuses `join` ("cannot join thread before it is started"), which
    once replaced a full disk's one-line error with that message: wait for it to begin."""
    for _ in range(500):
        try:
            thread.join(timeout)
            return
        except RuntimeError:
            time.sleep(0.01)


def latest_step(run_dir: Path, folder: str = CHECKPOINT_DIR) -> int | None:
    """The step of the latest complete save in `folder`, or None."""
    if not (Path(run_dir) / folder).is_dir():
        return None
    with _quiet_orbax():
        manager = _manager(run_dir, folder)
        step = manager.latest_step()
        manager.close()
    return step


def restore(run_dir: Path, template: Any, folder: str = CHECKPOINT_DIR) -> tuple[Any, dict, int]:
    """The latest intact checkpoint as (state shaped like `template`, host dict, step).

    A newer checkpoint that fails its checksums or cannot be read is skipped, with one line on
    stderr saying which one and why.
    """
    ckpt_dir = Path(run_dir) / folder
    if not ckpt_dir.is_dir():
        raise CheckpointError(
            f"{run_dir} has no {folder}/ folder: start it again with "
            f"`edis-jax train --out {run_dir} --overwrite`"
        )
    with _quiet_orbax():
        manager = _manager(run_dir, folder)
        steps = sorted(manager.all_steps(), reverse=True)
        damaged = []
        for step in steps:
            problem = verify(ckpt_dir / str(step))
            if problem is None:
                try:
                    restored = manager.restore(
                        step,
                        args=ocp.args.Composite(
                            state=ocp.args.StandardRestore(_without_empty(template)),
                            host=ocp.args.JsonRestore(),
                        ),
                    )
                except Exception as err:  # unreadable: try the one before it
                    problem = f"{type(err).__name__}: {_first_line(err)}"
            if problem is not None:
                damaged.append(f"step {step}: {problem}")
                continue
            manager.close()
            if damaged:
                notice(
                    f"damaged checkpoint in {ckpt_dir} ({'; '.join(damaged)}): continuing "
                    f"from the intact step {step} instead"
                )
            if not (ckpt_dir / str(step) / CHECKSUMS).is_file():
                notice(
                    f"checkpoint {step} in {ckpt_dir} has no {CHECKSUMS} (its save was "
                    "stopped after orbax had written it, or it predates checksums): restored "
                    "unverified"
                )
            return _with_empty(restored["state"], template), dict(restored["host"]), step
        manager.close()
    detail = "; ".join(damaged) if damaged else "no complete checkpoint found"
    raise CheckpointError(
        f"no usable checkpoint in {ckpt_dir} ({detail}): start the run again with "
        f"`edis-jax train --out {run_dir} --overwrite`"
    )


def _without_empty(tree: Any) -> Any:
    """`tree` with its zero-size arrays as None: orbax refuses to save them, and MJX's state
    has some (e.g. the actuator activations of a model without any)."""
    return jax.tree.map(lambda x: None if np.prod(x.shape) == 0 else x, tree)


def _with_empty(restored: Any, template: Any) -> Any:
    """The zero-size arrays `_without_empty` left out, back from the template."""
    is_none = lambda x: x is None  # noqa: E731
    leaves, treedef = jax.tree.flatten(template, is_leaf=is_none)
    got = jax.tree.flatten(restored, is_leaf=is_none)[0]
    filled = [
        jax.numpy.zeros(t.shape, t.dtype) if r is None and t is not None else r
        for t, r in zip(leaves, got, strict=True)
    ]
    return treedef.unflatten(filled)


def verify(step_dir: Path) -> str | None:
    """None if every file of the step matches its checksum (or the step has none); else what
    is wrong, in a few words."""
    listing = step_dir / CHECKSUMS
    if not listing.is_file():
        return None
    try:
        expected = json.loads(listing.read_text())
    except (ValueError, UnicodeDecodeError):
        return f"{CHECKSUMS} is unreadable"
    if not isinstance(expected, dict):
        return f"{CHECKSUMS} is unreadable"
    actual = _checksums(step_dir)
    for name in sorted(set(expected) | set(actual)):
        if name not in actual:
            return f"{name} is missing"
        if expected.get(name) != actual[name]:
            return f"{name} fails its checksum"
    return None


def _write_checksums(step_dir: Path) -> None:
    tmp = step_dir / f"{CHECKSUMS}.tmp"
    tmp.write_text(json.dumps(_checksums(step_dir), indent=1, sort_keys=True))
    tmp.rename(step_dir / CHECKSUMS)


def _checksums(step_dir: Path) -> dict[str, str]:
    sums = {}
    for path in sorted(step_dir.rglob("*")):
        name = path.relative_to(step_dir).as_posix()
        if path.is_file() and not name.startswith(CHECKSUMS):
            sums[name] = hashlib.sha256(path.read_bytes()).hexdigest()
    return sums


def tree_sha256(tree: Any) -> str:
    """sha256 of a pytree's leaves (dtype, shape and bytes, in leaf order): equal digests mean
    equal arrays, whatever device or process they came from."""
    digest = hashlib.sha256()
    for leaf in jax.tree.leaves(jax.device_get(tree)):
        leaf = np.asarray(leaf)
        digest.update(f"{leaf.dtype}{leaf.shape}".encode())
        digest.update(np.ascontiguousarray(leaf).tobytes())
    return digest.hexdigest()


def _save_failure(err: BaseException, ckpt_dir: Path, step: int, run_dir: Path) -> str:
    """One line for a failed save: "no space left on device" however deep orbax wrapped it."""
    chain, seen = [], err
    while seen is not None and len(chain) < 20:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    full = any(
        (isinstance(e, OSError) and e.errno == errno.ENOSPC)
        or "RESOURCE_EXHAUSTED" in str(e)
        or "No space left" in str(e)
        for e in chain
    )
    what = "no space left on device" if full else f"{type(err).__name__}: {_first_line(err)}"
    return (
        f"{what} while saving checkpoint {step} in {ckpt_dir}; the partial checkpoint was "
        f"removed and the earlier ones are intact: free space (or fix the folder), then "
        f"`edis-jax resume {run_dir}`"
    )


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def notice(message: str) -> None:
    """One warning line on stderr (the progress bars keep stdout)."""
    print(f"edis-jax: warning: {message}", file=sys.stderr)


class _quiet_orbax:
    """Orbax logs every save at INFO/WARNING level, and every failed read with a traceback; keep
    the console for the progress bars and our own one-line messages (`--verbose` shows them)."""

    verbose = False  # set by the CLI's --verbose

    def __enter__(self):
        self._logger = logging.getLogger("absl")
        self._level, self._hook = self._logger.level, threading.excepthook
        if not self.verbose:
            self._logger.setLevel(logging.CRITICAL)
            # Orbax's writer threads re-raise what failed them; the caller reports it.
            threading.excepthook = lambda args: None

    def __exit__(self, *exc):
        self._logger.setLevel(self._level)
        threading.excepthook = self._hook

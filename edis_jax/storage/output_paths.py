"""Checks that a command can write where it will, made before any work starts (a refused output
path costs seconds, not the work done before it), and a file write that never leaves half a
file under the name asked for.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Callable
from pathlib import Path


class OutputPathError(ValueError):
    """An output path cannot be written; the message names it and what to do."""


def check_output_file(path: str | os.PathLike, flag: str, overwrite: bool | None = None) -> Path:
    """Refuse, touching nothing, a file path that cannot be written: empty, a folder, below a
    file, in a folder without write permission or on a read-only disk. overwrite=False also
    refuses an existing file (the flag that replaces it is --overwrite); None replaces it."""
    if not str(path).strip():
        raise OutputPathError(f"{flag} is empty: give a file path")
    path = Path(path)
    if path.is_dir():
        raise OutputPathError(f"{flag} {path} is a folder: give a file path")
    if path.exists() and overwrite is False:
        raise OutputPathError(
            f"{flag} {path} already exists: pass --overwrite to replace it, or choose another path"
        )
    check_writable_folder(nearest_existing(path.absolute().parent), f"{flag} {path}")
    if path.exists() and not os.access(path, os.W_OK):
        raise OutputPathError(
            f"{flag} {path}: the file is read-only (no permission): choose another path"
        )
    return path


def check_writable_folder(folder: Path, what: str, fix: str = "choose a writable path") -> None:
    """Refuse a folder this process cannot create files in (`what` names whose path it is).
    It tries: permission bits do not stop root, and only a write shows a read-only disk."""
    if not folder.is_dir():
        raise OutputPathError(f"{what} lies below {folder}, a file: choose another path")
    probe = folder / f".edis-jax-write-test-{os.getpid()}"
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        probe.unlink()
    except OSError as e:
        why = "a read-only disk" if e.errno == errno.EROFS else f"{e.strerror or e}"
        raise OutputPathError(f"{what}: cannot write in {folder} ({why}): {fix}") from None


def nearest_existing(path: Path) -> Path:
    """`path`, or the nearest folder above it that exists."""
    return next(p for p in (path, *path.parents) if p.exists())


def write_whole(path: Path, write: Callable[[object], None]) -> None:
    """Write a file through `write(binary file)` into a temporary file beside `path`, renamed
    over it only once complete: an interrupted or failed write leaves `path` as it was."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        with open(partial, "wb") as f:
            write(f)
        os.replace(partial, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()

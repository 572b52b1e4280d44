"""One writer at a time: an exclusive flock on a folder or a lock file, refused at once (not
waited for) while another process holds it. The kernel drops the lock when the process ends,
however it ends, so a killed writer never leaves a stale lock behind. Run folders
(train/directory.py) and the dataset store (data/minari_store.py) both take theirs here.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path


def try_lock(fd: int, wait: bool = False) -> bool:
    """Take the exclusive lock on an open descriptor; False while another process holds it
    (with `wait`, wait for it instead)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except BlockingIOError:
        return False
    return True


@contextlib.contextmanager
def held(path: Path, refusal: Exception, wait: bool = False):
    """Hold the exclusive lock on `path` (a folder, or a lock file made if missing) for the
    block, or raise `refusal` at once (with `wait`, wait for the other writer instead)."""
    flags = os.O_RDONLY if path.is_dir() else os.O_RDWR | os.O_CREAT
    fd = os.open(path, flags, 0o644)
    try:
        if not try_lock(fd, wait):
            raise refusal
        yield
    finally:
        os.close(fd)

"""Ctrl-C and SIGTERM: at any moment, one line and exit status 130 (SIGINT) or 143 (SIGTERM).

While a command works, a signal raises `Interrupted` (a KeyboardInterrupt, so every cleanup
that already handles Ctrl-C runs: a half-built run folder or dataset is removed, a swapped-away
run is put back). Once its line is printed the process ends with `os._exit`, skipping the
interpreter's teardown: a signal that lands during a checkpoint save leaves orbax's writer
threads (and tensorstore's native ones under them) running, and the interpreter was torn down
under them after the clean line: tracebacks from those threads, or a crash (exit -11). Ending
at once is as safe as a kill -9, which every writer here already survives (staging folders,
checksummed checkpoints, records rewritten from the checkpoint on resume); for the same reason
a second signal while the first unwinds ends the process at once, with its line. A signal whose
exception Python drops (raised inside a garbage-collector callback, which JAX installs, or a
finaliser) is sent again a moment later, so the command still stops. A signal after the command
has finished (its output is complete) gets its line and status too, instead of the raw signal.

This module imports nothing heavy: `main` installs the handlers before it imports JAX.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """A SIGINT or SIGTERM arrived while the command worked."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def status(self) -> int:
        return 128 + self.signum


_state = {"phase": "working", "signum": 0}  # phase: working -> unwinding (a signal) -> finished


def install() -> None:
    """Handle SIGINT and SIGTERM for the rest of the process (the command-line entry only)."""
    for signum in SIGNALS:
        signal.signal(signum, _on_signal)
    sys.unraisablehook = _on_unraisable


def _on_unraisable(unraisable) -> None:
    """A signal's exception raised inside a garbage-collector callback or a finaliser (JAX runs
    one at every collection) is printed and dropped by Python, and the command would go on:
    send the signal again, a moment later, from a thread, so that it lands in the command."""
    e = unraisable.exc_value
    if isinstance(e, Interrupted) and _state["phase"] == "unwinding":
        _state["phase"] = "working"
        threading.Timer(0.05, os.kill, (os.getpid(), e.signum)).start()
        return
    sys.__unraisablehook__(unraisable)


def received() -> Interrupted | None:
    """The signal that arrived while the command worked (if a library swallowed its exception,
    the command may have gone on to finish)."""
    return Interrupted(_state["signum"]) if _state["signum"] else None


def finished() -> None:
    """The command has printed its last line: a signal now only ends the process."""
    _state["phase"] = "finished"


def exit_now(status: int) -> None:
    """End the process without the interpreter's teardown (see the module docstring)."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe: nothing more to say
            stream.flush()
    os._exit(status)


def line(e: KeyboardInterrupt) -> str:
    """The one line an interrupted command ends with."""
    name = "SIGTERM" if getattr(e, "signum", signal.SIGINT) == signal.SIGTERM else "Ctrl-C"
    return f"interrupted ({name}): nothing half-written was kept; a run continues with `edis-jax resume`"


def _on_signal(signum: int, frame) -> None:
    phase = _state["phase"]
    if phase == "working":
        _state.update(phase="unwinding", signum=signum)
        raise Interrupted(signum)
    if phase == "finished":
        name = signal.Signals(signum).name
        text = f"{name} after the command finished (its output is complete)"
    else:
        text = line(Interrupted(signum))
    print(f"edis-jax: error: {text}", file=sys.stderr)
    exit_now(128 + signum)

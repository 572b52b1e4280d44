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

import logging
import os
import sys
from collections.abc import Sequence

from edis_jax.cli import interrupts


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: `edis-jax COMMAND ...`; returns the exit status. From the command line
    (argv None) SIGINT and SIGTERM are handled first (cli/interrupts.py), before the commands'
    imports, and an interrupted command ends the process with 130 or 143."""
    if argv is None:
        interrupts.install()
    try:
        status = _run(argv)
    except BrokenPipeError:
        # The reader left early (`edis-jax tasks | head`): stop quietly, as Unix tools do. Point
        # stdout at devnull so that Python's flush at exit does not raise a second time.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        status = 1
    except interrupts.Interrupted as e:  # arrived while another failure's line was printed
        print(f"edis-jax: error: {interrupts.line(e)}", file=sys.stderr)
        status = e.status
    if argv is None:
        interrupts.finished()  # from here a signal only ends the process, with its line
        swallowed = interrupts.received()
        if swallowed is not None and status not in (130, 143):
            print(f"edis-jax: error: {interrupts.line(swallowed)}", file=sys.stderr)
            status = swallowed.status
        if status in (130, 143):
            interrupts.exit_now(status)
    return status


def _run(argv: Sequence[str] | None) -> int:
    from edis_jax.cli.commands import (
        diagnose_command,
        report_command,
        resume_command,
        tasks_command,
        train_command,
    )
    from edis_jax.cli.data import data_command
    from edis_jax.cli.parsing import fail, first_line, os_error_line, usage
    from edis_jax.config.validation import ConfigError

    commands = {
        "data": data_command,
        "train": train_command,
        "resume": resume_command,
        "report": report_command,
        "diagnose": diagnose_command,
        "tasks": tasks_command,
    }
    args = list(sys.argv[1:] if argv is None else argv)
    verbose = "--verbose" in args
    args = [a for a in args if a != "--verbose"]
    _quiet_libraries(verbose)
    if not args or args[0] in ("-h", "--help"):
        print(usage(commands))
        return 0 if args else 2
    handler = commands.get(args[0])
    if handler is None:
        return fail(f"unknown command {args[0]!r}: choose one of {', '.join(commands)}")
    try:
        return handler(args[1:])
    except (ValueError, ConfigError) as e:  # DatasetNotFoundError, ReferenceScoreError, ...
        return fail(first_line(e))
    except KeyboardInterrupt as e:  # Ctrl-C, or cli/interrupts.py's SIGINT / SIGTERM
        return fail(interrupts.line(e), status=getattr(e, "status", 130))
    except BrokenPipeError:
        raise  # main's: not an error of the command
    except Exception as e:
        if verbose:
            raise
        if isinstance(e, OSError):  # a full disk, permissions, a read-only file system
            return fail(os_error_line(e), status=1)
        if type(e).__module__.startswith("edis_jax"):
            # CheckpointError, CheckpointSaveError, DivergedError
            return fail(first_line(e), status=1)
        return fail(
            f"internal error ({type(e).__name__}: {first_line(e)}); run again with --verbose "
            "for the traceback and report it",
            status=1,
        )


def _quiet_libraries(verbose: bool) -> None:
    """Without --verbose: no orbax / absl log lines and no MuJoCo deprecation notices (HalfCheetah
    prints one per env made); other MuJoCo warnings (NaN in the physics) still show."""
    if verbose:
        from edis_jax.storage import checkpoint

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

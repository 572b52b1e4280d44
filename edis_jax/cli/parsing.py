"""What every subcommand shares: tyro parsing with one-line errors, the one-line failure, usage
text and plain tables."""

from __future__ import annotations

import contextlib
import errno
import io
import re
import sys
from collections.abc import Callable

import tyro
from tqdm.auto import tqdm

from edis_jax.config.validation import ConfigError

Handler = Callable[[list[str]], int]


def parse(cls, args: list[str], prog: str, **kwargs):
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


def fail(message: str, status: int = 2) -> int:
    # A progress bar left open by the failure would share the line: close it first.
    for bar in list(getattr(tqdm, "_instances", ())):
        bar.close()
    print(f"edis-jax: error: {message}", file=sys.stderr)
    return status


# What to do about an OS error, by errno; the message names the path the error names.
_OS_FIXES = {
    errno.EROFS: "the file system is read-only: copy the folder to a writable disk, or choose "
    "a writable path",
    errno.EACCES: "no permission: fix the permissions, or choose a path you can write",
    errno.EPERM: "not permitted: fix the permissions, or choose a path you can write",
    errno.ENOSPC: "the disk is full: free space (a run continues with `edis-jax resume`)",
    errno.EDQUOT: "the disk quota is exhausted: free space (a run continues with `edis-jax resume`)",
    errno.EISDIR: "it is a folder: give a file path",
    errno.ENOTDIR: "a part of the path is a file, not a folder: choose another path",
    errno.ENOENT: "it does not exist: check the path",
}


def os_error_line(e: OSError) -> str:
    """One line for an OS error: the path, the problem and the fix (not a raw `[Errno N] ...`)."""
    path = e.filename if e.filename is not None else ""
    fix = _OS_FIXES.get(e.errno)
    if fix is None:
        return f"{path}: {e.strerror or first_line(e)}" if path else first_line(e)
    return f"{path}: {fix}" if path else f"{e.strerror}: {fix}"


def first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def usage(commands: dict[str, Handler], prefix: str = "edis-jax") -> str:
    lines = [f"usage: {prefix} COMMAND [ARGS...]", "", "commands:"]
    for name, handler in commands.items():
        doc = (handler.__doc__ or "").strip().splitlines()
        lines.append(f"  {name:10s} {doc[0] if doc else ''}")
    lines.append(f"\nrun `{prefix} COMMAND --help` for a command's flags")
    return "\n".join(lines)


def cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def format_table(rows: list[tuple]) -> str:
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows
    )

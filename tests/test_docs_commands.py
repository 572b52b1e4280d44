"""Every fenced `edis-jax ...` command in README.md and docs/*.md parses as written: the CLI's
own parsing (tyro, and the config's validation at construction) accepts it. Nothing runs: the
subcommand is stopped right after its arguments are parsed. A `...` token in a command stands
for flags shown elsewhere and is dropped; the rest must parse."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from edis_jax import cli
from edis_jax.cli import commands, data, parsing

ROOT = Path(__file__).resolve().parent.parent
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^\s*```")


def fenced_commands(path: Path) -> list[tuple[str, str]]:
    """(file:line, command) of every line in a fenced block that starts with `edis-jax `, with
    backslash continuations joined."""
    found, inside, pending, start = [], False, "", 0
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if FENCE.match(line):
            inside, pending = not inside, ""
            continue
        if not inside:
            continue
        text = line.strip()
        if not pending:
            if not text.startswith("edis-jax "):
                continue
            start = number
        if text.endswith("\\"):
            pending += text[:-1] + " "
            continue
        found.append((f"{path.relative_to(ROOT)}:{start}", pending + text))
        pending = ""
    return found


def all_commands() -> list[tuple[str, str]]:
    return [c for path in DOC_FILES for c in fenced_commands(path)]


class Parsed(BaseException):
    """Raised in place of running the command (a BaseException, so the CLI's own handlers,
    which turn exceptions into one-line errors, let it through)."""


@pytest.fixture
def parse_only(monkeypatch):
    def parse_and_stop(cls, args, prog, **kwargs):
        raise Parsed(parsing.parse(cls, args, prog, **kwargs))

    monkeypatch.setattr(commands, "parse", parse_and_stop)
    monkeypatch.setattr(data, "parse", parse_and_stop)


def parses(command: str) -> tuple[bool, str]:
    """Whether `command` got through parsing, and the CLI's error line if it did not."""
    argv = [a for a in shlex.split(command, comments=True) if a != "..."]
    assert argv[0] == "edis-jax"
    try:
        status = cli.main(argv[1:])
    except Parsed:
        return True, ""
    return False, f"exit status {status}"


def test_the_docs_hold_commands():
    found = all_commands()
    # README's command line alone has a dozen; a broken extraction finds none.
    assert len(found) >= 20, found
    assert any(where.startswith("README.md") for where, _ in found)
    assert any(where.startswith("docs/") for where, _ in found)


def test_the_readme_stays_short():
    # A user's page: the research log lives in docs/ (under 250 lines is the target).
    assert len((ROOT / "README.md").read_text().splitlines()) < 250


def test_a_wrong_flag_is_caught(parse_only, capsys):
    assert parses("edis-jax train --preset cpu --seeds 2")[0]
    ok, _ = parses("edis-jax train --preset cpu --no-such-flag 2")
    assert not ok and "--no-such-flag" in capsys.readouterr().err
    assert not parses("edis-jax data make --env Hopper-v5 --kind average --steps 1 --id a/b-v0")[0]


@pytest.mark.parametrize(("where", "command"), all_commands(), ids=lambda x: x)
def test_documented_command_parses(where, command, parse_only, capsys):
    ok, status = parses(command)
    assert ok, f"{where}: `{command}` was refused ({status}): {capsys.readouterr().err.strip()}"

"""Configuration errors and the checks that raise them: one line naming the flag and the fix."""

from __future__ import annotations


class ConfigError(Exception):
    """An invalid configuration value; the message names the field and the fix.

    Not a ValueError: tyro catches ValueErrors raised while it builds a config and prints them
    in a multi-line box, while this one reaches the CLI's one-line error (edis_jax/cli/)."""


def check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def flag(obj, name: str) -> str:
    """The command-line flag of a field, e.g. --diffusion.train-steps: what a user would fix."""
    part = FLAG_PREFIX.get(type(obj).__name__, "")
    return f"--{part}{name.replace('_', '-')}"


FLAG_PREFIX = {
    "IQLConfig": "iql.",
    "SACConfig": "sac.",
    "CalQLConfig": "calql.",
    "DiffusionConfig": "diffusion.",
    "EnergyConfig": "energy.",
    "OnlineConfig": "online.",
}


def positive(obj, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        check(value > 0, f"{flag(obj, name)} must be > 0, got {value}")


def non_negative(obj, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        check(value >= 0, f"{flag(obj, name)} must be >= 0, got {value}")


def unit_interval(obj, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        check(0.0 <= value <= 1.0, f"{flag(obj, name)} must be in [0, 1], got {value}")


def layer_widths(widths: tuple[int, ...], flag: str) -> None:
    # An empty tuple would train a linear model without a word, a width of 0 fails inside JAX.
    check(
        len(widths) > 0 and all(w >= 1 for w in widths),
        f"{flag} must list one or more layer widths >= 1 (e.g. {flag} 256 256), got {tuple(widths)}",
    )

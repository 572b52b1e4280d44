"""Orbax checkpoints of a whole run: the device state pytree plus a JSON record of host state.

Orbax writes each step into a temporary folder and renames it only once complete, so a process
killed during a save leaves the previous checkpoint as the latest usable one; `max_to_keep=2`
keeps that previous one around while the next is written.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import orbax.checkpoint as ocp

CHECKPOINT_DIR = "checkpoints"
# The agent at the end of the offline phase, kept for the run's whole life: other runs start
# their online phase from it (`edis-jax train --init-from`).
OFFLINE_DIR = "offline_checkpoint"


class CheckpointError(RuntimeError):
    """A run directory has no usable checkpoint; the message says what to do."""


def _manager(run_dir: Path, folder: str = CHECKPOINT_DIR) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(max_to_keep=2, enable_async_checkpointing=False)
    return ocp.CheckpointManager(Path(run_dir).resolve() / folder, options=options)


def save(run_dir: Path, step: int, state: Any, host: dict, folder: str = CHECKPOINT_DIR) -> None:
    """Save `state` (a pytree of arrays) and `host` (JSON-serialisable) as checkpoint `step`."""
    with _quiet_orbax():
        manager = _manager(run_dir, folder)
        if step in manager.all_steps():
            # Left by an earlier attempt that the run fell back from (damaged): replace it.
            manager.delete(step)
        manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), host=ocp.args.JsonSave(host)
            ),
        )
        manager.wait_until_finished()
        manager.close()


def latest_step(run_dir: Path) -> int | None:
    if not (Path(run_dir) / CHECKPOINT_DIR).is_dir():
        return None
    with _quiet_orbax():
        manager = _manager(run_dir)
        step = manager.latest_step()
        manager.close()
    return step


def restore(run_dir: Path, template: Any, folder: str = CHECKPOINT_DIR) -> tuple[Any, dict, int]:
    """The latest complete checkpoint as (state shaped like `template`, host dict, step).

    Falls back to the previous checkpoint if the newest one cannot be read.
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
        errors = []
        for step in steps:
            try:
                restored = manager.restore(
                    step,
                    args=ocp.args.Composite(
                        state=ocp.args.StandardRestore(template), host=ocp.args.JsonRestore()
                    ),
                )
                manager.close()
                return restored["state"], dict(restored["host"]), step
            except Exception as err:  # a damaged checkpoint: try the one before it
                errors.append(f"step {step}: {type(err).__name__}: {str(err).splitlines()[0]}")
        manager.close()
    detail = "; ".join(errors) if errors else "no complete checkpoint found"
    raise CheckpointError(
        f"no usable checkpoint in {ckpt_dir} ({detail}): start the run again with "
        f"`edis-jax train --out {run_dir} --overwrite`"
    )


class _quiet_orbax:
    """Orbax logs every save at INFO/WARNING level; keep the console for the progress bars."""

    def __enter__(self):
        self._logger = logging.getLogger("absl")
        self._level = self._logger.level
        self._logger.setLevel(logging.ERROR)

    def __exit__(self, *exc):
        self._logger.setLevel(self._level)

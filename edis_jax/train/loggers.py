"""Standard loggers beside metrics.jsonl: `--log tensorboard` and `--log wandb`.

They receive exactly the records the run writes to metrics.jsonl, which stays the source of
truth (a resumed run rewrites metrics.jsonl from its checkpoint; these loggers only append, so
after a resume they may hold a record twice). Both are optional extras (`pip install -e
".[tensorboard]"`, `".[wandb]"`): a logger whose package is not installed is skipped with one
line and the run goes on. Both open lazily at the first record, inside the run folder, and
close when the run ends or stops:
  tensorboard  <run>/tensorboard/seed_<i>/, one event file per seed (tensorboardX), tags
               `<phase>/<metric>` (`<phase>/<event>/<metric>` for retrain records) at the phase's
               step, and the resolved config as text;
  wandb        one wandb run in <run>/wandb/ with the resolved config attached, keys
               `seed_<i>/<phase>/<metric>` against `global_step` (offline step, then offline
               steps + online step). WANDB_MODE=offline works without network.
"""

from __future__ import annotations

import importlib.util
import json
import time
from collections.abc import Callable
from pathlib import Path

PACKAGES = {"tensorboard": "tensorboardX", "wandb": "wandb"}


class Loggers:
    """The loggers named in `names`, fed the records of metrics.jsonl (`write`)."""

    def __init__(self, names, config: dict, say: Callable[[str], None] = print):
        self.config, self.offline_steps = config, int(config.get("offline_steps", 0))
        self.say, self.names = say, []
        for name in names:
            package = PACKAGES[name]
            if importlib.util.find_spec(package) is None:
                say(
                    f'--log {name}: {package} is not installed (pip install -e ".[{name}]"); skipped'
                )
            else:
                self.names.append(name)
        self._open: dict[str, object] = {}

    def write(self, run_dir: Path, records: list[dict]) -> None:
        for name in self.names:
            if name not in self._open:
                self._open[name] = _OPEN[name](Path(run_dir), self.config)
            getattr(self, f"_write_{name}")(self._open[name], records)

    def close(self, finished: bool) -> None:
        """End every open logger: wandb's run is marked finished (exit code 0) or stopped (1),
        so that a notebook or script that goes on to another run leaves none open.

        It runs in the run's `finally`, often while an error or Ctrl-C is on its way out: a
        logger that fails to close is one line, not a new exception in place of that one, and
        the others still close. Its records are in metrics.jsonl either way."""
        opened, self._open = self._open, {}
        for name, handle in opened.items():
            try:
                getattr(self, f"_close_{name}")(handle, finished)
            except Exception as error:  # any failure of a logger package: one line
                self.say(
                    f"--log {name}: closing failed ({type(error).__name__}: {error}); the run's "
                    "records are in metrics.jsonl"
                )

    def _close_tensorboard(self, writers: dict, finished: bool) -> None:
        for key, writer in writers.items():
            if key != "open":
                writer.close()

    def _close_wandb(self, run, finished: bool) -> None:
        run.finish(exit_code=0 if finished else 1)

    def _write_tensorboard(self, writers: dict, records: list[dict]) -> None:
        from tensorboardX.proto.event_pb2 import Event
        from tensorboardX.proto.summary_pb2 import Summary

        for record in records:
            seed = record["seed"]
            if seed not in writers:
                writers[seed] = writers["open"](seed)
            values = [Summary.Value(tag=t, simple_value=v) for t, v in _scalars(record)]
            event = Event(wall_time=time.time(), step=record["step"], summary=Summary(value=values))
            writers[seed].write_event(event)
        for key, writer in writers.items():
            if key != "open":
                writer.flush()

    def _write_wandb(self, run, records: list[dict]) -> None:
        by_step: dict[int, dict] = {}
        for record in records:
            step = record["step"] + (self.offline_steps if record["phase"] == "online" else 0)
            row = by_step.setdefault(step, {"global_step": step})
            row.update({f"seed_{record['seed']}/{tag}": v for tag, v in _scalars(record)})
        for _, row in sorted(by_step.items()):
            run.log(row)


def _scalars(record: dict):
    """(tag, value) of every numeric metric of a record: `<phase>/<metric>`, or
    `<phase>/<event>/<metric>` for event records (retrains)."""
    prefix = record["phase"] + (f"/{record['event']}" if "event" in record else "")
    for key, value in record.items():
        if key in ("phase", "step", "seed", "event") or isinstance(value, bool):
            continue
        if isinstance(value, (int, float)):
            yield f"{prefix}/{key}", value


def _open_tensorboard(run_dir: Path, config: dict) -> dict:
    # tensorboardX's synchronous event writer: SummaryWriter queues events for a thread that
    # its flush() does not wait for, so a run's last records could be lost at exit.
    from tensorboardX.event_file_writer import EventsWriter
    from tensorboardX.proto.event_pb2 import Event
    from tensorboardX.summary import text

    def open_seed(seed: int):
        folder = run_dir / "tensorboard" / f"seed_{seed}"
        folder.mkdir(parents=True, exist_ok=True)
        writer = EventsWriter(str(folder / "events"))
        config_text = f"```\n{json.dumps(config, indent=2)}\n```"
        writer.write_event(
            Event(wall_time=time.time(), step=0, summary=text("config", config_text))
        )
        return writer

    return {"open": open_seed}


def _open_wandb(run_dir: Path, config: dict):
    import wandb

    run = wandb.init(
        project="edis-jax",
        name=run_dir.name,
        dir=str(run_dir),
        config=config,
        reinit="finish_previous",  # several runs in one process: one wandb run each
    )
    run.define_metric("*", step_metric="global_step")
    return run


_OPEN = {"tensorboard": _open_tensorboard, "wandb": _open_wandb}

"""`--log tensorboard` and `--log wandb`: a tiny run's records and config read back from each
logger equal metrics.jsonl's and config.json's; a logger whose package is missing is one line and
no failure. The `dev` extra installs both packages, so CI runs these tests (it fails them if a
package is missing); elsewhere a logger's test is skipped when its extra is not installed."""

import importlib
import json
import os
import struct
import time
from pathlib import Path

import pytest

from edis_jax import config
from edis_jax.config import presets, validation
from edis_jax.train import loggers, loop


def tiny_run(tmp_path: Path, log: tuple[str, ...]) -> tuple[Path, list[dict]]:
    cfg = presets.preset("tiny").replace(
        out=str(tmp_path / "run"), edis=False, offline_steps=40, online_steps=20,
        log_every=20, eval_every=40, checkpoint_every=20, log=log,
    )  # fmt: skip
    loop.train(cfg, progress=False)
    lines = (Path(cfg.out) / "metrics.jsonl").read_text().splitlines()
    return Path(cfg.out), [json.loads(line) for line in lines]


def require(package: str, extra: str):
    """The module, or a skip naming the extra; in CI (CI set) a missing package fails the test."""
    try:
        return importlib.import_module(package)
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail(f"{package} is missing in CI: the dev extra installs it")
        pytest.skip(f"{package} not installed (the {extra} extra)")


def saved_config(run_dir: Path) -> dict:
    return json.loads((run_dir / "config.json").read_text())


def expected(records: list[dict], seed: int) -> dict[tuple[str, int], float]:
    """(tag, step) -> value of every numeric metric of one seed's records."""
    return {
        (tag, r["step"]): value
        for r in records
        if r["seed"] == seed
        for tag, value in loggers._scalars(r)
    }


def test_missing_package_is_one_line_and_skipped(monkeypatch, tmp_path):
    monkeypatch.setitem(loggers.PACKAGES, "wandb", "no_such_package_edis")
    lines = []
    out = loggers.Loggers(("wandb",), {}, say=lines.append)
    assert lines == [
        '--log wandb: no_such_package_edis is not installed (pip install -e ".[wandb]"); skipped'
    ]
    out.write(tmp_path, [{"phase": "offline", "step": 1, "seed": 0, "loss": 1.0}])
    assert list(tmp_path.iterdir()) == []


def test_a_logger_that_fails_to_close_is_one_line_and_the_others_close(monkeypatch, tmp_path):
    """close() runs in the run's `finally`, often while Ctrl-C is on its way out: an exception
    from one logger must not replace that one, nor keep the next logger open."""
    closed = []

    class Broken:
        def close(self):
            raise OSError("disk full")

    class Run:
        def finish(self, exit_code):
            closed.append(exit_code)

    for name in ("tensorboard", "wandb"):
        monkeypatch.setitem(loggers.PACKAGES, name, "json")  # any importable package
    monkeypatch.setitem(loggers._OPEN, "tensorboard", lambda run_dir, config: {0: Broken()})
    monkeypatch.setitem(loggers._OPEN, "wandb", lambda run_dir, config: Run())
    monkeypatch.setattr(loggers.Loggers, "_write_tensorboard", lambda self, handle, records: None)
    monkeypatch.setattr(loggers.Loggers, "_write_wandb", lambda self, handle, records: None)
    lines = []
    out = loggers.Loggers(("tensorboard", "wandb"), {}, say=lines.append)
    out.write(tmp_path, [{"phase": "offline", "step": 1, "seed": 0, "loss": 1.0}])
    out.close(finished=False)
    assert lines == [
        "--log tensorboard: closing failed (OSError: disk full); the run's records are in "
        "metrics.jsonl"
    ]
    assert closed == [1]  # wandb's run closed as stopped
    out.close(finished=True)  # nothing is left open to close twice
    assert closed == [1] and len(lines) == 1


def test_config_refuses_unknown_loggers():
    with pytest.raises(validation.ConfigError, match="--log takes tensorboard and/or wandb"):
        config.RunConfig(log=("mlflow",))


def test_tensorboard_holds_the_records_of_metrics_jsonl(tmp_path):
    require("tensorboardX", "tensorboard")
    run_dir, records = tiny_run(tmp_path, ("tensorboard",))
    for seed in (0, 1):
        scalars, texts = read_events(run_dir / "tensorboard" / f"seed_{seed}")
        want = expected(records, seed)
        assert set(scalars) == set(want) and len(want) > 10
        for key, value in want.items():
            assert scalars[key] == pytest.approx(value, rel=1e-6, abs=1e-6), key
        # The resolved config, as a fenced JSON block in a text summary at step 0.
        (config_text,) = texts[("config/text_summary", 0)]
        assert config_text.startswith("```\n") and config_text.endswith("\n```")
        config = json.loads(config_text[4:-4])
        assert config == saved_config(run_dir)
        assert config["preset"] == "tiny" and config["log"] == ["tensorboard"]


def test_wandb_offline_holds_the_config_and_the_records(tmp_path, monkeypatch):
    wandb = require("wandb", "wandb")
    from wandb.proto import wandb_internal_pb2

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run_dir, records = tiny_run(tmp_path, ("wandb",))
    # The run finished its wandb run (no wandb.finish() here): the file gets its exit record,
    # with exit code 0, and no wandb run is left open in this process.
    assert wandb.run is None
    (path,) = (run_dir / "wandb").glob("offline-run-*/run-*.wandb")
    logged, config = {}, {}
    for record in finished_records(path, wandb_internal_pb2.Record):
        kind = record.WhichOneof("record_type")
        if kind == "exit":
            assert record.exit.exit_code == 0
        if kind == "history":
            row = {
                item.key or "/".join(item.nested_key): json.loads(item.value_json)
                for item in record.history.item
            }
            logged.update(
                {(k, row["global_step"]): v for k, v in row.items() if k.startswith("seed_")}
            )
        elif kind == "run":  # the config is attached to the run record
            config.update({u.key: json.loads(u.value_json) for u in record.run.config.update})
    offline_steps = 40
    want = {
        (f"seed_{r['seed']}/{tag}", r["step"] + (offline_steps if r["phase"] == "online" else 0)): v
        for r in records
        for tag, v in loggers._scalars(r)
    }
    assert set(logged) == set(want) and len(want) > 20
    for key, value in want.items():
        assert logged[key] == pytest.approx(value, rel=1e-6, abs=1e-6), key
    assert config["preset"] == "tiny" and config["log"] == ["wandb"]
    config.pop("_wandb")  # wandb's own entry
    assert config == saved_config(run_dir)


def finished_records(path: Path, record_type, timeout_s: float = 60.0) -> list:
    """The records of a .wandb file once it holds the run's exit record: finishing a run can
    return before wandb's service has written the file (seen under load: the history records
    arrived after it returned)."""
    deadline = time.monotonic() + timeout_s
    while True:
        records = [record_type.FromString(d) for d in read_wandb_records(path.read_bytes())]
        if any(r.WhichOneof("record_type") == "exit" for r in records):
            return records
        if time.monotonic() > deadline:
            pytest.fail(f"{path} has no exit record {timeout_s:.0f} s after wandb.finish()")
        time.sleep(0.2)


def read_wandb_records(data: bytes):
    """The records of a .wandb file: a 7-byte header, then LevelDB's log format (32 KiB blocks
    of records with a 7-byte header: CRC, length, type; a record may be split over blocks)."""
    block, i, parts = 32768, 7, []
    while i + 7 <= len(data):
        if block - i % block < 7:  # the block's tail is padding
            i += block - i % block
            continue
        size, kind = struct.unpack("<HB", data[i + 4 : i + 7])
        parts.append(data[i + 7 : i + 7 + size])
        i += 7 + size
        if kind in (1, 4):  # a full record, or the last part of one
            yield b"".join(parts)
            parts = []
        elif kind == 0:
            return


def read_events(folder: Path):
    """The scalars, (tag, step) -> value, and the texts, (tag, step) -> [str], of a folder's
    event files (TFRecord framing: length, its CRC, the Event proto, its CRC)."""
    from tensorboardX.proto import event_pb2

    scalars, texts = {}, {}
    for path in folder.glob("events.out.tfevents.*"):
        data, i = path.read_bytes(), 0
        while i < len(data):
            (size,) = struct.unpack("<Q", data[i : i + 8])
            event = event_pb2.Event.FromString(data[i + 12 : i + 12 + size])
            i += 12 + size + 4
            for value in event.summary.value:
                if value.HasField("simple_value"):
                    scalars[(value.tag, event.step)] = value.simple_value
                elif value.metadata.plugin_data.plugin_name == "text":
                    strings = [b.decode() for b in value.tensor.string_val]
                    texts.setdefault((value.tag, event.step), []).extend(strings)
    return scalars, texts

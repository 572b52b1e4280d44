"""The run directory (train/directory.py): an existing run or a foreign folder is refused, an
--init-from source must share the offline phase, a refused start changes nothing on disk, and
--overwrite replaces a run only once the new one has started."""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from tiny_runs import tiny, tree_hashes

from edis_jax import config
from edis_jax.data import datasets, minari_store, scores
from edis_jax.storage import checkpoint
from edis_jax.train import directory, loop


def test_existing_run_dir_is_refused_without_overwrite(datasets_env, tmp_path):
    cfg = tiny(tmp_path, "exists", offline_steps=30, online_steps=0)
    loop.train(cfg, progress=False)
    marker = (Path(cfg.out) / "metrics.jsonl").read_text()
    with pytest.raises(directory.RunDirError, match="already exists: pass --overwrite"):
        loop.train(cfg, progress=False)
    assert (Path(cfg.out) / "metrics.jsonl").read_text() == marker
    loop.train(cfg.replace(overwrite=True), progress=False)  # allowed with --overwrite


def test_overwrite_never_deletes_a_foreign_directory(datasets_env, tmp_path):
    foreign = tmp_path / "precious"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("do not delete")
    cfg = tiny(tmp_path, "precious", overwrite=True)
    with pytest.raises(directory.RunDirError, match="not an edis-jax run directory"):
        loop.train(cfg, progress=False)
    assert (foreign / "thesis.tex").read_text() == "do not delete"


@pytest.mark.parametrize(
    "change, field",
    [({"algo": "calql"}, "algo"), ({"seeds": 3}, "seeds"), ({"dataset": "x/y/z-v0"}, "dataset")],
)
def test_init_from_refuses_another_offline_phase(datasets_env, tmp_path, change, field):
    source = tiny(tmp_path, "source", algo="iql", edis=False)
    (tmp_path / "source").mkdir()
    (tmp_path / "source" / "config.json").write_text(json.dumps(config.to_dict(source)))
    arm = source.replace(out=str(tmp_path / "arm"), init_from=source.out, **change)
    with pytest.raises(directory.RunDirError, match=f"its {field} is"):
        loop.train(arm, progress=False)
    assert not (tmp_path / "arm").exists()  # refused before touching the disk


def test_init_at_first_retrain_refuses_a_source_it_would_not_repeat(datasets_env, tmp_path):
    """--init-at first-retrain starts from a baseline that kept its state at this run's first
    retrain and matches it in everything that acts before that retrain; anything else is one
    line, before the disk is touched."""
    baseline = tiny(tmp_path, "baseline", algo="iql", edis=False)
    arm = baseline.replace(
        out=str(tmp_path / "arm"), edis=True, init_from=baseline.out, init_at="first-retrain"
    )

    def source(**changes) -> None:
        folder = Path(baseline.out)
        shutil.rmtree(folder, ignore_errors=True)
        (folder / checkpoint.OFFLINE_DIR).mkdir(parents=True)
        folder.joinpath("config.json").write_text(
            json.dumps(config.to_dict(baseline.replace(**changes)))
        )

    half = config.dataclasses.replace(baseline.online, baseline_online_ratio=0.5)
    refused = [
        ({"edis": True}, "is an EDIS run: --init-at first-retrain starts from a baseline"),
        ({"online": half}, r"act before the first retrain \(online.baseline_online_ratio 0.5"),
        ({"online_steps": 240}, "online_steps 240 -> 120"),
        ({}, "no first_retrain_checkpoint/ folder .* not reached online step 60"),
    ]
    for changes, line in refused:
        source(**changes)
        with pytest.raises(directory.RunDirError, match=line):
            loop.train(arm, progress=False)
        assert not (tmp_path / "arm").exists()
    # The arm's own settings are checked when it is made.
    published = config.dataclasses.replace(arm.online, schedule="published")
    for changes, line in [
        ({"init_from": None}, "give that baseline run with --init-from"),
        ({"edis": False}, "needs an EDIS run that retrains inside its online phase"),
        ({"online_steps": 60}, "needs an EDIS run that retrains inside its online phase"),
        ({"algo": "calql", "online": published}, "retrains after online step 1"),
    ]:
        with pytest.raises(config.ConfigError, match=line):
            arm.replace(**changes)


def test_init_from_takes_a_source_written_before_a_setting_existed(datasets_env, tmp_path):
    """A baseline written by an older edis-jax lacks settings added since: it reads back with
    their defaults (what the older code did), so an arm keeping the defaults starts from it at
    either point, and an arm changing one of them is refused, naming it."""
    baseline = tiny(tmp_path, "older", algo="iql", edis=False)
    folder = Path(baseline.out)
    for kept in (checkpoint.OFFLINE_DIR, checkpoint.FIRST_RETRAIN_DIR):
        (folder / kept).mkdir(parents=True)
    written = config.to_dict(baseline)
    del written["init_at"], written["online"]["baseline_online_ratio"]  # added in later versions
    folder.joinpath("config.json").write_text(json.dumps(written))
    arm = baseline.replace(out=str(tmp_path / "arm"), init_from=baseline.out)
    assert directory.check_offline_source(arm) == baseline
    first_retrain = arm.replace(edis=True, init_at="first-retrain")
    directory.check_first_retrain_source(first_retrain)  # accepted: raises nothing
    half = config.dataclasses.replace(arm.online, baseline_online_ratio=0.5)
    with pytest.raises(directory.RunDirError, match=r"online.baseline_online_ratio 0.0 -> 0.5"):
        directory.check_first_retrain_source(first_retrain.replace(online=half))


def test_refused_overwrite_leaves_the_old_run_byte_identical(datasets_env, tmp_path):
    old = tiny(tmp_path, "old", offline_steps=30, online_steps=0)
    loop.train(old, progress=False)
    assert (Path(old.out) / directory.RUN_MARKER).read_text().startswith("edis-jax ")
    no_scores = "test/hopper/noscores-v0"
    if not minari_store.dataset_path(no_scores).exists():
        minari_store.write_dataset(no_scores, "Hopper-v5", [_hand_episode(5), _hand_episode(4)])
    nan_data = "test/hopper/nanreward-v0"
    if not minari_store.dataset_path(nan_data).exists():
        bad = _hand_episode(5)
        bad["rewards"][2] = np.nan
        minari_store.write_dataset(
            nan_data, "Hopper-v5", [bad], ref_min_score=0.0, ref_max_score=1.0
        )
    # An --init-from source whose offline checkpoint is unreadable: the new run fails while
    # it is being built in its staging folder, after every check before it passed.
    broken = tmp_path / "broken"
    shutil.copytree(old.out, broken)
    for step in (broken / checkpoint.OFFLINE_DIR).iterdir():
        shutil.rmtree(step)
    before = tree_hashes(tmp_path)
    refused = [
        ({"dataset": "test/hopper/nowhere-v0"}, datasets.DatasetNotFoundError, "is not in"),
        ({"dataset": no_scores}, scores.ReferenceScoreError, "has no reference scores"),
        ({"dataset": nan_data}, datasets.InvalidDatasetError, "1 rows of rewards hold NaN"),
        ({"init_from": old.out, "seeds": 3}, directory.RunDirError, "its seeds is 2"),
        ({"init_from": str(broken)}, checkpoint.CheckpointError, "no usable checkpoint"),
        # A source that is no run at all: the line names the flag that gave it.
        ({"init_from": str(tmp_path / "nowhere")}, directory.RunDirError,
         "--init-from .*nowhere is not a run directory"),
        # The folders above --out made for the staging folder are removed again.
        ({"init_from": str(broken), "out": str(tmp_path / "a" / "b" / "run")},
         checkpoint.CheckpointError, "no usable checkpoint"),
    ]  # fmt: skip
    for changes, error, match in refused:
        with pytest.raises(error, match=match):
            loop.train(old.replace(overwrite=True, **changes), progress=False)
        assert tree_hashes(tmp_path) == before, changes


def _hand_episode(n_steps: int) -> dict:
    rng = np.random.default_rng(n_steps)
    return {
        "observations": rng.normal(size=(n_steps + 1, 11)),
        "actions": rng.uniform(-1, 1, size=(n_steps, 3)).astype(np.float32),
        "rewards": rng.normal(size=n_steps),
        "terminations": np.zeros(n_steps, bool),
        "truncations": np.arange(n_steps) == n_steps - 1,
    }


def test_overwrite_refuses_folders_that_are_not_runs(datasets_env, tmp_path, monkeypatch):
    project = tmp_path / "project"
    (project / "src").mkdir(parents=True)
    (project / "README.md").write_text("my project")
    (project / "src" / "main.py").write_text("print(1)")
    (project / "config.json").write_text("{}")  # a config.json alone does not make a run
    (tmp_path / "notes.txt").write_text("a file")
    before = tree_hashes(tmp_path)
    cases = [
        (str(project), "not an edis-jax run directory \\(no .edis-jax-run\\)"),
        (str(tmp_path / "notes.txt"), "is a file: give a folder path"),
        (str(tmp_path / "notes.txt" / "run"), "lies below .*notes.txt, a file"),
    ]
    for out, match in cases:
        with pytest.raises(directory.RunDirError, match=match):
            loop.train(tiny(tmp_path, "x", out=out, overwrite=True), progress=False)
    monkeypatch.chdir(project)  # `--out .` inside a project folder
    with pytest.raises(directory.RunDirError, match="not an edis-jax run directory"):
        loop.train(tiny(tmp_path, "x", out=".", overwrite=True), progress=False)
    assert tree_hashes(tmp_path) == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_out_is_refused(datasets_env, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(directory.RunDirError, match="cannot write in"):
            loop.train(tiny(tmp_path, "locked/run"), progress=False)
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o700)


def test_overwrite_replaces_a_run_only_once_the_new_one_starts(datasets_env, tmp_path):
    first = tiny(tmp_path, "run", offline_steps=30, online_steps=0)
    loop.train(first, progress=False)
    run_dir = Path(first.out)
    # A run made before the marker existed: config.json, metrics.jsonl and checkpoints/.
    (run_dir / directory.RUN_MARKER).unlink()
    (run_dir / "stale.txt").write_text("from the old run")
    second = first.replace(seed=1, overwrite=True)
    loop.train(second, progress=False)
    assert config.from_dict(json.loads((run_dir / "config.json").read_text())).seed == 1
    assert (run_dir / directory.RUN_MARKER).is_file() and not (run_dir / "stale.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no staging folder left

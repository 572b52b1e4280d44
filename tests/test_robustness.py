"""Nothing lost, nothing silent (issue 11): every failure ends in one line with the right exit
status and leaves what was on disk byte-identical; checkpoints are verified; a run killed at
any point resumes to the metrics of a run never stopped."""

import errno
import fcntl
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from orbax.checkpoint._src.handlers import json_checkpoint_handler
from tiny_runs import tree_hashes

from edis_jax import cli, config, envs
from edis_jax.config import presets
from edis_jax.storage import checkpoint
from edis_jax.train import directory, generator_phases, loop, records, synthetic
from edis_jax.train.records import DivergedError

DATASET = "test/hopper/random-v0"  # conftest.HOPPER
OTHER_ENV = "test/pendulum/random-v0"  # conftest.PENDULUM
# A run small enough to finish in seconds: checkpoints at global steps 40 (offline end), 60, 80.
FLAGS = dict(
    offline_steps=40, online_steps=40, log_every=20, eval_every=20, checkpoint_every=20, edis=False
)


def tiny(out: Path, **changes) -> config.RunConfig:
    base = presets.preset("tiny").replace(dataset=DATASET, out=str(out), **FLAGS)
    return base.replace(**changes)


def cli_flags(out: Path) -> list[str]:
    flags = ["--preset", "tiny", "--dataset", DATASET, "--out", str(out), "--no-edis"]
    for name, value in FLAGS.items():
        if name != "edis":
            flags += [f"--{name.replace('_', '-')}", str(value)]
    return flags


@pytest.fixture(scope="module")
def finished_run(dataset_path, tmp_path_factory):
    """One uninterrupted run, shared (copy it before changing it)."""
    out = tmp_path_factory.mktemp("runs") / "straight"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MINARI_DATASETS_PATH", str(dataset_path))
        loop.train(tiny(out), progress=False)
    return out


@pytest.fixture
def run_copy(finished_run, datasets_env, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(finished_run, copy)
    return copy


def one_error_line(capsys) -> str:
    """The one `edis-jax: error:` line on stderr (progress bars aside), and no traceback."""
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.replace("\r", "\n").splitlines() if line.startswith("edis-jax")]
    assert len(lines) == 1 and lines[0].startswith("edis-jax: error: "), lines
    return lines[0]


def steps_of(run_dir: Path) -> list[int]:
    ckpt = run_dir / checkpoint.CHECKPOINT_DIR
    return sorted(int(p.name) for p in ckpt.iterdir() if p.name.isdigit())


# ----------------------------------------------------------------------------------- flags

TRAIN = ["train", "--preset", "tiny", "--out", "{out}"]
BAD_FLAGS = [
    (TRAIN + ["--seed", "-1"], "--seed must be >= 0 (gymnasium seeds its envs with it), got -1"),
    (TRAIN + ["--offline-steps", "0", "--online-steps", "0"], "are both 0: give at least one"),
    (TRAIN + ["--iql.hidden-dims", "0"], "--iql.hidden-dims must list one or more layer widths"),
    (TRAIN + ["--iql.hidden-dims"], "--iql.hidden-dims must list one or more layer widths"),
    (TRAIN + ["--sac.hidden-dims"], "--sac.hidden-dims must list one or more layer widths"),
    (TRAIN + ["--calql.critic-hidden-dims", "0"], "--calql.critic-hidden-dims must list"),
    (TRAIN + ["--energy.hidden-dims", "8", "0"], "--energy.hidden-dims must list"),
    (TRAIN + ["--diffusion.width", "0"], "--diffusion.width must be > 0, got 0"),
    (TRAIN + ["--diffusion.depth", "0"], "--diffusion.depth must be > 0, got 0"),
    (TRAIN + ["--seed", "abc"], "--seed: invalid literal for int()"),
    (TRAIN + ["--sed", "1"], "Unrecognized options: --sed, 1 (did you mean --seed or --seeds?)"),
    (TRAIN + ["--algo", "td3"], "invalid choice 'td3' for argument '--algo'"),
    (["resume"], "Missing from edis-jax resume"),
    (["resume", "{out}", "--force"], "Unrecognized options: --force"),
    (["data", "make", "--env", "Hopper-v5", "--kind", "medium", "--steps", "x", "--id", "a/b-v0"],
     "--steps: invalid literal for int()"),
    (["diagnose", "--dataset", DATASET, "--target", DATASET, "--n", "1"], "--n must be >= 2"),
    (["report", "{out}", "--baseline"], "Missing value for argument '--baseline'"),
]  # fmt: skip


@pytest.mark.parametrize(
    "args, message",
    BAD_FLAGS,
    ids=[" ".join(a).replace(" ".join(TRAIN), "train") for a, _ in BAD_FLAGS],
)
def test_a_bad_flag_is_one_line_naming_it_and_writes_nothing(args, message, tmp_path, capsys):
    out = tmp_path / "run"
    t0 = time.process_time()  # CPU time: load stretches wall time, not work
    assert cli.main([a.format(out=out) for a in args]) == 2
    assert time.process_time() - t0 < 5
    captured = capsys.readouterr()
    lines = [line for line in (captured.out + captured.err).splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("edis-jax: error: "), lines
    assert message in lines[0]
    assert list(tmp_path.iterdir()) == []  # no --out folder, nothing else


def test_a_bad_flag_from_the_shell_is_one_line_within_seconds(tmp_path):
    out = tmp_path / "run"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(
        [sys.executable, "-m", "edis_jax.cli", "train", "--preset", "tiny", "--seed", "-1",
         "--out", str(out)],
        capture_output=True, text=True, env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )  # fmt: skip
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    # CPU time, which a loaded machine does not stretch as it does wall time: the interpreter's
    # start and the imports (jax among them) take about 5 s; loading data or compiling would
    # add tens.
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    assert cpu < 10, cpu
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        "edis-jax: error: --seed must be >= 0 (gymnasium seeds its envs with it), got -1"
    ]
    assert not out.exists()


# ----------------------------------------------------------------------------- checkpoints


def test_a_flipped_byte_in_any_file_falls_back_with_one_line(tmp_path, capsys):
    state = {"a": jnp.arange(6.0), "b": {"c": jnp.ones((3, 4))}}
    checkpoint.save(tmp_path, 1, state, {"x": 1})
    checkpoint.save(tmp_path, 2, jax_tree_plus(state, 1.0), {"x": 2})
    newest = tmp_path / checkpoint.CHECKPOINT_DIR / "2"
    files = sorted(p for p in newest.rglob("*") if p.is_file())
    assert len(files) > 10 and any(p.name == checkpoint.CHECKSUMS for p in files)
    for path in files:
        original = path.read_bytes()
        flipped = bytearray(original)
        flipped[len(flipped) // 2] ^= 0x01
        path.write_bytes(bytes(flipped))
        restored, host, step = checkpoint.restore(tmp_path, state)
        assert (step, host) == (1, {"x": 1}), path
        np.testing.assert_array_equal(restored["a"], state["a"])
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "damaged checkpoint" in err[0] and "step 1" in err[0], err
        path.write_bytes(original)
    assert checkpoint.restore(tmp_path, state)[2] == 2  # all restored: the newest again

    for step in ("1", "2"):  # both damaged: one line that says what to do
        data = next((tmp_path / checkpoint.CHECKPOINT_DIR / step / "state").rglob("d/*"))
        data.write_bytes(data.read_bytes()[:-1])
    with pytest.raises(checkpoint.CheckpointError, match="no usable checkpoint.*--overwrite"):
        checkpoint.restore(tmp_path, state)


def test_zero_size_arrays_survive_a_save_and_restore(tmp_path):
    # MJX's state holds some (the --env-backend jax run state's env); orbax refuses to save them.
    state = {"a": jnp.arange(3.0), "empty": jnp.zeros((2, 0)), "none": None}
    checkpoint.save(tmp_path, 1, state, {})
    restored, _, _ = checkpoint.restore(tmp_path, state)
    assert restored["empty"].shape == (2, 0) and restored["none"] is None
    np.testing.assert_array_equal(restored["a"], state["a"])


def test_a_step_without_checksums_is_restored_with_one_line(tmp_path, capsys):
    # What a kill between orbax's commit and the checksum write leaves: the newest step whole
    # but without checksums.json. Refusing it would leave nothing to resume from at step 1.
    state = {"a": jnp.arange(6.0)}
    checkpoint.save(tmp_path, 1, state, {"x": 1})
    (tmp_path / checkpoint.CHECKPOINT_DIR / "1" / checkpoint.CHECKSUMS).unlink()
    restored, host, step = checkpoint.restore(tmp_path, state)
    assert (step, host) == (1, {"x": 1})
    np.testing.assert_array_equal(restored["a"], state["a"])
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "checkpoint 1" in err[0] and "restored unverified" in err[0], err
    checkpoint.save(tmp_path, 2, {"a": state["a"] + 1.0}, {"x": 2})  # verified: no line
    assert checkpoint.restore(tmp_path, state)[2] == 2 and capsys.readouterr().err == ""


def jax_tree_plus(tree, value):
    return {"a": tree["a"] + value, "b": {"c": tree["b"]["c"] + value}}


def test_disk_full_during_a_save_leaves_earlier_checkpoints_and_no_partial_one(
    tmp_path, monkeypatch
):
    state = {"a": jnp.arange(6.0)}
    checkpoint.save(tmp_path, 1, state, {"x": 1})
    before = tree_hashes(tmp_path)

    async def full(self, item, directory):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(json_checkpoint_handler.JsonCheckpointHandler, "_save_fn", full)
    with pytest.raises(checkpoint.CheckpointSaveError, match="^no space left on device") as err:
        checkpoint.save(tmp_path, 2, state, {"x": 2})
    assert len(str(err.value).splitlines()) == 1 and "edis-jax resume" in str(err.value)
    assert tree_hashes(tmp_path) == before  # no temporary folder, step 1 untouched


def test_disk_full_in_a_run_is_one_line_and_resume_continues_once_freed(run_copy, capsys):
    shutil.rmtree(run_copy / checkpoint.CHECKPOINT_DIR / "80")  # as if stopped before it
    kept = {k: v for k, v in tree_hashes(run_copy).items() if k.startswith("checkpoints/")}

    async def full(self, item, directory):
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(json_checkpoint_handler.JsonCheckpointHandler, "_save_fn", full)
        assert cli.main(["resume", str(run_copy)]) == 1
    line = one_error_line(capsys)
    assert "no space left on device while saving checkpoint 80" in line
    after = {k: v for k, v in tree_hashes(run_copy).items() if k.startswith("checkpoints/")}
    assert after == kept
    assert loop.resume(run_copy, progress=False) is not None  # the disk freed: it finishes
    assert steps_of(run_copy) == [60, 80]


# ---------------------------------------------------------------------------------- resume


@pytest.mark.parametrize(
    "edits, named",
    [
        ({"algo": "calql"}, "algo 'iql' -> 'calql'"),
        ({"seeds": 3, "online_steps": 80}, "online_steps 40 -> 80, seeds 2 -> 3"),
        ({"online": {"utd": 2}}, "online.utd 1 -> 2"),
    ],
)
def test_resume_refuses_an_edited_config_naming_the_fields(run_copy, capsys, edits, named):
    path = run_copy / "config.json"
    data = json.loads(path.read_text())
    for key, value in edits.items():
        if isinstance(value, dict):
            data[key].update(value)
        else:
            data[key] = value
    path.write_text(json.dumps(data, indent=2))
    before = tree_hashes(run_copy)
    assert cli.main(["resume", str(run_copy)]) == 2
    line = one_error_line(capsys)
    assert "no longer matches the config its checkpoints were written with" in line
    assert named in line
    assert tree_hashes(run_copy) == before


def test_resume_accepts_a_run_written_before_a_field_was_added(run_copy):
    # A run written by an older version has no diffusion.inpainting in either config file; the
    # field's default is what that version did, so the checkpoints still match.
    files = [run_copy / "config.json", run_copy / checkpoint.CHECKPOINT_DIR / "config.json"]
    for path in files:
        data = json.loads(path.read_text())
        del data["diffusion"]["inpainting"]
        path.write_text(json.dumps(data, indent=2))
    cfg = config.from_dict(json.loads(files[0].read_text()))
    directory.check_checkpoints_match(run_copy, cfg)  # no refusal
    # A value that differs from the default is still a mismatch, named.
    data = json.loads(files[1].read_text())
    data["diffusion"]["inpainting"] = "noised"
    files[1].write_text(json.dumps(data, indent=2))
    with pytest.raises(directory.RunDirError, match="diffusion.inpainting 'noised' -> 'clean'"):
        directory.check_checkpoints_match(run_copy, cfg)


def test_resume_without_checkpoints_folder_is_one_line(run_copy, capsys):
    shutil.rmtree(run_copy / checkpoint.CHECKPOINT_DIR)
    before = tree_hashes(run_copy)
    assert cli.main(["resume", str(run_copy)]) == 2
    assert "has no checkpoints/ folder" in one_error_line(capsys)
    assert tree_hashes(run_copy) == before


def test_all_checkpoints_damaged_is_one_line(run_copy, capsys):
    for step in steps_of(run_copy):
        data = next((run_copy / checkpoint.CHECKPOINT_DIR / str(step) / "state").rglob("d/*"))
        data.write_bytes(data.read_bytes()[:-1])
    before = tree_hashes(run_copy)
    assert cli.main(["resume", str(run_copy)]) == 1
    assert "no usable checkpoint" in one_error_line(capsys)
    assert tree_hashes(run_copy) == before


def test_a_run_stopped_before_its_first_checkpoint_resumes_from_its_start(
    run_copy, finished_run, capsys
):
    # What a kill during start-up or during the first save leaves.
    for step in steps_of(run_copy):
        shutil.rmtree(run_copy / checkpoint.CHECKPOINT_DIR / str(step))
    shutil.rmtree(run_copy / checkpoint.OFFLINE_DIR)
    (run_copy / "summary.json").unlink()
    lines = (run_copy / "metrics.jsonl").read_text().splitlines()
    (run_copy / "metrics.jsonl").write_text("\n".join(lines[:2]) + "\n")
    summary = loop.resume(run_copy, progress=False)
    assert "stopped before its first checkpoint" in capsys.readouterr().err
    for name in ("metrics.jsonl", "summary.json"):
        if name == "summary.json":
            mine, theirs = (json.loads((d / name).read_text()) for d in (run_copy, finished_run))
            for key in records.MEASURED:
                mine.pop(key), theirs.pop(key)
            assert mine == theirs
        else:
            assert (run_copy / name).read_text() == (finished_run / name).read_text()
    assert summary is not None


# ------------------------------------------------------------------------------ one writer


def test_a_second_writer_is_refused(run_copy, capsys):
    before = tree_hashes(run_copy)
    with directory.locked(run_copy):
        assert cli.main(["resume", str(run_copy)]) == 2
        assert "is in use by another" in one_error_line(capsys)
        assert cli.main(["train", *cli_flags(run_copy), "--overwrite"]) == 2
        assert "is in use by another" in one_error_line(capsys)
    assert tree_hashes(run_copy) == before


def test_two_trains_into_one_new_out_start_one_run(datasets_env, tmp_path, capsys, monkeypatch):
    out, staging = tmp_path / "new", tmp_path / "new.staging"
    # Another start is building its run in the staging folder, holding its lock.
    staging.mkdir()
    (staging / "theirs").write_text("x")
    fd = os.open(staging, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        assert cli.main(["train", *cli_flags(out)]) == 2
        assert "is in use by another" in one_error_line(capsys)
        assert (staging / "theirs").is_file() and not out.exists()
    finally:
        os.close(fd)

    # Unlocked, it is a killed start's leftover: the next start takes it over.
    monkeypatch.setattr(loop._Run, "execute", lambda self, stop_at: None)  # start, no training
    assert cli.main(["train", *cli_flags(out)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new"]
    assert directory.is_run_dir(out) and not (out / "theirs").exists()

    # The other start swapped its run in after this one's checks passed.
    other = tmp_path / "other"
    real_load = loop._load_dataset

    def load_while_another_swaps_in(cfg):
        other.mkdir()
        (other / "theirs").write_text("x")
        return real_load(cfg)

    monkeypatch.setattr(loop, "_load_dataset", load_while_another_swaps_in)
    assert cli.main(["train", *cli_flags(other)]) == 2
    assert "is in use by another" in one_error_line(capsys)
    assert sorted(p.name for p in other.iterdir()) == ["theirs"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new", "other"]


# ------------------------------------------------------------------------------ divergence


def test_nan_in_training_stops_before_saving_it(datasets_env, tmp_path, monkeypatch):
    real_chunk, calls = loop.S.update_chunk, []

    def diverging(*args, **kwargs):
        state, metrics = real_chunk(*args, **kwargs)
        calls.append(1)
        if len(calls) == 2:  # the second chunk (offline steps 20 to 40) blows up
            metrics = {k: v * jnp.nan for k, v in metrics.items()}
        return state, metrics

    monkeypatch.setattr(loop.S, "update_chunk", diverging)
    cfg = tiny(tmp_path / "nan")
    with pytest.raises(DivergedError, match="offline step 40") as err:
        loop.train(cfg, progress=False)
    message = str(err.value)
    assert "NaN or inf" in message and "last checkpoint (step 20) is intact" in message
    run_dir = Path(cfg.out)
    assert steps_of(run_dir) == [20]
    assert checkpoint.verify(run_dir / checkpoint.CHECKPOINT_DIR / "20") is None
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert max(r["step"] for r in records) == 20  # nothing of the diverged chunk was logged


def test_nan_in_generated_data_stops_the_retrain_and_keeps_the_last_checkpoint(
    datasets_env, tmp_path, monkeypatch, capsys
):
    # tests/test_train.py's tiny EDIS run (its compiled programs come from the cache): offline
    # checkpoints, then the first retrain at online step 60, before that step's checkpoint.
    out = tmp_path / "edis"
    flags = ["--preset", "tiny", "--dataset", DATASET, "--out", str(out), "--offline-steps",
             "100", "--online-steps", "120", "--eval-every", "60", "--log-every", "30",
             "--checkpoint-every", "60", "--online.retrain-every", "60",
             "--online.num-samples", "256"]  # fmt: skip
    real_retrain, real_generate, before = synthetic.retrain, generator_phases.generate, {}

    def retrain(run):
        before.update(tree_hashes(out))
        real_retrain(run)

    def generate(*args, **kwargs):  # seed 1's first row becomes NaN
        samples, metrics = real_generate(*args, **kwargs)
        return jax.tree.map(lambda x: x.at[1, 0].set(jnp.nan), samples), metrics

    monkeypatch.setattr(synthetic, "retrain", retrain)
    monkeypatch.setattr(generator_phases, "generate", generate)
    assert cli.main(["train", *flags]) == 1
    line = one_error_line(capsys)
    assert "the retrain's generated (synthetic) data became NaN or inf for seed(s) [1]" in line
    assert "at online step 60" in line and "last checkpoint (step 100) is intact" in line
    assert before and tree_hashes(out) == before  # nothing written since the retrain began
    assert steps_of(out)[-1] == 100
    assert checkpoint.verify(out / checkpoint.CHECKPOINT_DIR / "100") is None
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert not any("event" in r for r in records)  # no retrain record


# ------------------------------------------------------------------- paths and other envs


def test_unwritable_out_paths_are_one_line_within_seconds(datasets_env, tmp_path, capsys):
    (tmp_path / "a_file").write_text("x")
    cases = [(tmp_path / "a_file" / "run", "a file")]
    if os.geteuid() != 0:  # root writes into read-only folders
        (tmp_path / "locked").mkdir(mode=0o500)
        cases.append((tmp_path / "locked" / "run", "cannot write in"))
    before = tree_hashes(tmp_path)
    for out, match in cases:
        t0 = time.process_time()  # CPU time: load stretches wall time, not work
        assert cli.main(["train", *cli_flags(out)]) == 2
        assert match in one_error_line(capsys)
        assert time.process_time() - t0 < 5
    assert tree_hashes(tmp_path) == before


def test_report_out_that_cannot_be_written_is_one_line(run_copy, capsys):
    (run_copy.parent / "a_file").write_text("x")
    before = tree_hashes(run_copy.parent)
    assert cli.main(["report", str(run_copy), "--out", str(run_copy.parent / "a_file/r.png")]) == 2
    assert "a file" in one_error_line(capsys)
    assert tree_hashes(run_copy.parent) == before


def test_diagnose_refuses_another_envs_policy_and_a_folder_that_is_not_a_run(
    datasets_env, tmp_path, capsys
):
    other = tmp_path / "pendulum_run"
    other.mkdir()
    cfg = tiny(other, dataset=OTHER_ENV)
    (other / "config.json").write_text(json.dumps(config.to_dict(cfg)))
    base = ["diagnose", "--dataset", DATASET, "--target", DATASET, "--preset", "tiny"]
    assert cli.main([*base, "--policy", str(other)]) == 2
    line = one_error_line(capsys)
    assert "acts in Pendulum-v1 (observations 3, actions 1)" in line
    assert "Hopper-v5 data (observations 11, actions 3)" in line

    folder = tmp_path / "not_a_run"
    folder.mkdir()
    args = ["diagnose", "--dataset", DATASET, "--target", str(folder), "--preset", "tiny"]
    assert cli.main(args) == 2
    assert "is a folder but not an edis-jax run" in one_error_line(capsys)


def test_an_env_from_a_missing_package_names_the_package(minari_path, capsys, monkeypatch):
    # As if gymnasium-robotics were not installed (it is in `.[dev]`): its import fails.
    monkeypatch.setitem(sys.modules, "gymnasium_robotics", None)
    with pytest.raises(ValueError, match="gymnasium-robotics package.*pip install"):
        envs.make_env("AdroitHandDoor-v1")
    args = ["data", "make", "--env", "AdroitHandDoor-v1", "--kind", "random", "--steps", "10"]
    assert cli.main([*args, "--id", "t/door/random-v0"]) == 2
    assert "pip install gymnasium-robotics" in one_error_line(capsys)
    assert list(minari_path.iterdir()) == []


# ----------------------------------------------------------------------- help and warnings


def test_every_train_flag_has_its_own_help(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    with pytest.raises(SystemExit):
        cli.main(["train", "--preset", "tiny", "--help"])
    helps: dict[str, str] = {}
    flag = None
    for line in capsys.readouterr().out.splitlines():
        text = line.strip("│ ").strip()
        if text.startswith("--"):
            flag = text.split()[0]
            helps[flag] = ""
        elif flag is not None and text and not text.startswith(("╭", "╰", "─")):
            helps[flag] += " " + text
    texts = {}
    for flag, text in helps.items():
        text = text.split("(default:")[0].strip()
        if text:
            texts.setdefault(text, []).append(flag)
    # The three published Cal-QL option pairs share one explanation by design.
    shared = {t: f for t, f in texts.items() if len(f) > 1 and not f[0].startswith("--calql.")}
    assert shared == {}
    assert "every level_stride-th step" in " ".join(texts)


def test_mujoco_deprecation_notices_are_quiet(capfd):
    cli._quiet_libraries(verbose=False)
    envs.make_env("HalfCheetah-v5").close()
    assert "deprecated" not in capfd.readouterr().err


# -------------------------------------------------------------------------- kill anywhere


def test_kill_9_at_several_points_then_resume_equals_a_straight_run(
    finished_run, dataset_path, tmp_path
):
    """A real `edis-jax train` process killed with SIGKILL after its first checkpoint, then its
    `resume` killed during a later save; a last `resume` finishes it (about 40 s)."""
    out = tmp_path / "killed"
    # A compilation cache of their own: JAX writes cache entries in place, so a process killed
    # mid-write could leave a damaged entry in the suite's shared cache.
    env = {
        **os.environ,
        "MINARI_DATASETS_PATH": str(dataset_path),
        "JAX_PLATFORMS": "cpu",
        "JAX_COMPILATION_CACHE_DIR": str(tmp_path / "jax_cache"),
    }
    command = [sys.executable, "-m", "edis_jax.cli"]

    def run_until(args, ready) -> None:
        proc = subprocess.Popen([*command, *args], env=env, stderr=subprocess.DEVNULL)
        try:
            # Wall time: a loaded machine takes several times longer.
            deadline = time.monotonic() + 900
            while not ready() and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.02)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        assert proc.returncode == -signal.SIGKILL  # killed, not finished

    ckpt = out / checkpoint.CHECKPOINT_DIR
    run_until(["train", *cli_flags(out)], lambda: (ckpt / "40" / checkpoint.CHECKSUMS).exists())
    # During the save of a later checkpoint (or, if that is missed, right after it).
    later = (ckpt / "60" / checkpoint.CHECKSUMS).exists
    run_until(["resume", str(out)], lambda: any(ckpt.glob("*orbax-checkpoint-tmp*")) or later())
    assert subprocess.run([*command, "resume", str(out)], env=env).returncode == 0
    assert (out / "metrics.jsonl").read_text() == (finished_run / "metrics.jsonl").read_text()
    mine, theirs = (json.loads((d / "summary.json").read_text()) for d in (out, finished_run))
    for key in records.MEASURED:
        mine.pop(key), theirs.pop(key)
    assert mine == theirs


def test_a_reader_that_leaves_early_gets_no_traceback(datasets_env):
    # `edis-jax tasks | head -1`: the pipe's read end closes before the command writes; Python's
    # default is a BrokenPipeError traceback (and a second one at exit).
    proc = subprocess.Popen(
        [sys.executable, "-m", "edis_jax.cli", "tasks"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait() == 1
    assert "Traceback" not in err and "Exception ignored" not in err and "error" not in err, err

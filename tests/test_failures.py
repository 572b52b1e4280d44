"""Reliability, round two (issue 33): one test per class of failure, each parametrised over its
cases. 1: the dataset store takes one writer per id and refuses damaged data; 2: a SIGINT or
SIGTERM at any moment ends with one line and 130 / 143, and the run resumes to identical
records; 3: a command that cannot finish fails before its work, in seconds; 4: messages name
the problem; 5: contradictions are refused or said."""

import builtins
import errno
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tiny_runs import tree_hashes

from edis_jax import cli
from edis_jax.config import presets
from edis_jax.data import minari_store
from edis_jax.storage import checkpoint
from edis_jax.train import directory, loop

HOPPER, PENDULUM = "test/hopper/random-v0", "test/pendulum/random-v0"  # conftest's
TINY = dict(
    offline_steps=40, online_steps=40, log_every=20, eval_every=20, checkpoint_every=20, edis=False
)
TINY_FLAGS = ["--preset", "tiny", "--no-edis", "--offline-steps", "40", "--online-steps", "40",
              "--log-every", "20", "--eval-every", "20", "--checkpoint-every", "20"]  # fmt: skip


@pytest.fixture(scope="module")
def finished_run(dataset_path, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "straight"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MINARI_DATASETS_PATH", str(dataset_path))
        cfg = presets.preset("tiny").replace(dataset=HOPPER, out=str(out), **TINY)
        loop.train(cfg, progress=False)
    return out


@pytest.fixture
def store(dataset_path, minari_path):
    """A store of its own (MINARI_DATASETS_PATH) holding copies of conftest's two datasets."""
    for dataset_id in (HOPPER, PENDULUM):
        shutil.copytree(dataset_path / dataset_id, minari_path / dataset_id)
    return minari_path


def one_line(capsys, prefix="edis-jax: error: ") -> str:
    """The one line on stderr that starts with `prefix` (progress bars aside); no traceback."""
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.replace("\r", "\n").splitlines() if line.startswith("edis-jax")]
    assert len(lines) == 1 and lines[0].startswith(prefix), lines
    return lines[0]


def copy_dataset(store: Path, new_id: str) -> Path:
    shutil.copytree(store / HOPPER, store / new_id)
    meta_file = store / new_id / "data" / "metadata.json"
    meta_file.write_text(meta_file.read_text().replace(HOPPER, new_id))
    return store / new_id / "data"


# ------------------------------------------------------------------ 1. the dataset store


def hold_writer_lock(store: Path, dataset_id: str) -> int:
    """Another process's writer lock on dataset_id (flock is per open file: the same here)."""
    lock = store / minari_store.LOCKS_DIR / f"{dataset_id}.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def delete_episode(data: Path) -> None:
    (data / "3" / "part-0.arrow").unlink()


def delete_episode_unchecked(data: Path) -> None:
    """As in a dataset without edis-jax's checksums (one Minari downloads)."""
    meta = json.loads((data / "metadata.json").read_text())
    del meta[minari_store.CHECKSUMS_KEY]
    (data / "metadata.json").write_text(json.dumps(meta))
    delete_episode(data)


def change_byte(data: Path) -> None:
    arrow = data / "5" / "part-0.arrow"
    raw = bytearray(arrow.read_bytes())
    raw[len(raw) // 2] ^= 1
    arrow.write_bytes(bytes(raw))


def lose_metadata(data: Path) -> None:
    (data / "metadata.json").write_text('{"dataset_id": ')


STORE_CASES = {
    "a second writer of one id": (None, ["data", "make", "--env", "Pendulum-v1", "--kind",
                                         "random", "--steps", "50", "--id", "t/busy/x-v0"],
                                  "is being written by another edis-jax command"),
    "an episode file deleted: info": (delete_episode, ["data", "info", "t/bad/x-v0"],
                                      "3/part-0.arrow is missing"),
    "an episode file deleted, no checksums": (delete_episode_unchecked, ["data", "info",
                                              "t/bad/x-v0"], "counts 75 episodes and 1500 "
                                              "steps, its files hold 74"),
    "an episode file deleted: train": (delete_episode, ["train", *TINY_FLAGS, "--dataset",
                                       "t/bad/x-v0", "--out", "{tmp}/run"], "is damaged"),
    "an episode file changed": (change_byte, ["data", "info", "t/bad/x-v0"],
                                "has changed since it was written (checksum)"),
    "metadata.json cut short": (lose_metadata, ["data", "export", "t/bad/x-v0", "{tmp}/x.npz"],
                                "metadata.json is unreadable"),
}  # fmt: skip


@pytest.mark.parametrize("case", STORE_CASES)
def test_the_store_takes_one_writer_per_id_and_refuses_damaged_data(case, store, tmp_path, capsys):
    damage, args, message = STORE_CASES[case]
    fd = None
    if damage is None:
        fd = hold_writer_lock(store, "t/busy/x-v0")
    else:
        damage(copy_dataset(store, "t/bad/x-v0"))
    before = tree_hashes(store)
    try:
        assert cli.main([a.format(tmp=tmp_path) for a in args]) == 2
    finally:
        if fd is not None:
            os.close(fd)
    line = one_line(capsys)
    assert message in line
    if damage is not None:  # names the dataset and the way to a good copy
        assert "'t/bad/x-v0'" in line and ("--overwrite" in line or "build or download" in line)
    assert tree_hashes(store) == before
    assert not (tmp_path / "run").exists() and not (tmp_path / "x.npz").exists()


def test_data_list_names_the_folders_it_cannot_read(store, capsys):
    (store / "t" / "broken" / "x-v0" / "data").mkdir(parents=True)  # no metadata.json
    (store / "t" / "broken-v0" / "data").mkdir(parents=True)  # not an id Minari accepts
    assert cli.main(["data", "list"]) == 0
    out, err = capsys.readouterr()
    assert HOPPER in out and PENDULUM in out  # the readable ones are listed still
    [line] = err.splitlines()
    assert line.startswith("edis-jax: warning: 2 folders")
    assert f"{store}/t/broken/x-v0 (no readable data/metadata.json)" in line
    assert f"{store}/t/broken-v0 (its path is not a dataset id" in line


def test_two_data_makes_of_one_new_id_leave_one_dataset(store):
    """Two real `data make` processes into one new id, started together: one builds it, the
    other is refused in one line (by the writer lock, or, if it came late, as existing)."""
    make = [sys.executable, "-m", "edis_jax.cli", "data", "make", "--env", "Hopper-v5", "--kind",
            "random", "--steps", "5000", "--id", "t/same/x-v0"]  # fmt: skip
    env = {**os.environ, "MINARI_DATASETS_PATH": str(store)}
    procs = [
        subprocess.Popen(make, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [p.communicate() for p in procs]
    done = sorted((p.returncode, *out) for p, out in zip(procs, outputs, strict=True))
    assert [status for status, _, _ in done] == [0, 2], done
    (_, built, _), (_, _, refused) = done
    assert refused.strip().splitlines()[-1].startswith("edis-jax: error: dataset 't/same/x-v0' ")
    assert "is being written by another" in refused or "already exists" in refused
    assert "built t/same/x-v0" in built
    info = subprocess.run([*make[:3], "data", "info", "t/same/x-v0", "--json"], env=env,
                          capture_output=True, text=True, check=True)  # fmt: skip
    assert json.loads(info.stdout)["checks"] == "ok"
    assert [p.name for p in (store / "t" / "same").iterdir() if p.is_dir()] == ["x-v0"]


# ------------------------------------------------------------------------- 2. interrupts


def test_sigint_and_sigterm_anywhere_end_in_one_line_and_the_run_resumes_identically(
    finished_run, dataset_path, tmp_path
):
    """Real processes: SIGINT during start-up, SIGINT mid offline phase, SIGTERM during a later
    checkpoint's save, SIGINT after the summary line; each ends in one line with 130 / 143 (or
    had already ended, the last), and the resumed run's records equal a straight run's."""
    env = {
        **os.environ,
        "MINARI_DATASETS_PATH": str(dataset_path),
        "JAX_PLATFORMS": "cpu",
        # A cache of their own: a process killed mid-write could damage the suite's entries.
        "JAX_COMPILATION_CACHE_DIR": str(tmp_path / "jax_cache"),
    }
    out = tmp_path / "run"
    ckpt = out / checkpoint.CHECKPOINT_DIR

    def interrupt(args, signum, ready):
        proc = subprocess.Popen(
            [sys.executable, "-m", "edis_jax.cli", *args], env=env, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )  # fmt: skip
        # Wall time: a loaded machine takes several times longer.
        deadline = time.monotonic() + 900
        while not ready() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        proc.send_signal(signum)
        stdout, stderr = proc.communicate()
        return proc.returncode, stdout, stderr

    def assert_interrupted(result, status):
        returncode, _, stderr = result
        assert returncode == status, stderr[-2000:]
        errors = [line for line in stderr.splitlines() if "error" in line or "Traceback" in line]
        assert len(errors) == 1 and errors[0].startswith("edis-jax: error: interrupted ("), errors

    train = ["train", *TINY_FLAGS, "--dataset", HOPPER, "--out", str(out)]
    started = time.monotonic()
    result = interrupt(train, signal.SIGINT, lambda: time.monotonic() > started + 2.0)
    assert_interrupted(result, 130)  # during start-up: importing, loading, compiling
    assert not out.exists() or directory.is_run_dir(out)
    assert not (tmp_path / "run.staging").exists()
    if not out.exists():
        result = interrupt(train, signal.SIGINT, (ckpt / "20" / checkpoint.CHECKSUMS).exists)
        assert_interrupted(result, 130)
    # During the save of a later checkpoint (or, if that is missed, right after it).
    later = (ckpt / "60" / checkpoint.CHECKSUMS).exists
    saving = lambda: any(ckpt.glob("*orbax-checkpoint-tmp*")) or later()  # noqa: E731
    assert_interrupted(interrupt(["resume", str(out)], signal.SIGTERM, saving), 143)
    result = interrupt(["resume", str(out)], signal.SIGINT, (out / "summary.json").exists)
    if result[0] != 0:  # the signal came before the process had ended
        last = result[2].strip().splitlines()[-1]
        assert result[0] == 130 and "Traceback" not in result[2]
        assert last.startswith(("edis-jax: error: SIGINT after the command finished",
                                "edis-jax: error: interrupted (Ctrl-C)")), last  # fmt: skip
    assert (out / "metrics.jsonl").read_text() == (finished_run / "metrics.jsonl").read_text()


# ------------------------------------------------------------------ 3. fail before the work


def read_only_under(monkeypatch, folder: Path) -> None:
    """As if `folder` were on a read-only disk: creating or writing a file in it fails."""
    real_os_open, real_open = os.open, builtins.open

    def refuse(path, writes: bool):
        if writes and Path(path).absolute().is_relative_to(folder):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))

    def os_open(path, flags, *args, **kwargs):
        refuse(path, bool(flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)))
        return real_os_open(path, flags, *args, **kwargs)

    def open_(file, mode="r", *args, **kwargs):
        if isinstance(file, str | os.PathLike):
            refuse(file, any(c in mode for c in "wax+"))
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(os, "open", os_open)
    monkeypatch.setattr(builtins, "open", open_)


EARLY_CASES = {
    "diagnose --json a folder": (["diagnose", "--dataset", HOPPER, "--target", HOPPER,
                                  "--preset", "tiny", "--json", "{tmp}"], "is a folder"),
    "--seeds beyond memory": (["train", "--preset", "tiny", "--dataset", HOPPER, "--seeds",
                               "100000000", "--out", "{tmp}/run"], "--seeds 100000000 needs"),
    "resume on a read-only disk": (["resume", "{run}"], "(a read-only disk): copy"),
    "--generator-from missing": (["train", "--preset", "tiny", "--dataset", HOPPER, "--out",
                                  "{tmp}/run", "--diffusion.warm-start", "--diffusion.initial-steps", "10",
                                  "--generator-from", "{tmp}/nowhere"], "(no such folder)"),
    "--init-from missing": (["train", *TINY_FLAGS, "--dataset", HOPPER, "--out", "{tmp}/run",
                             "--init-from", "{tmp}/nowhere"], "(no such folder)"),
    "diagnose --policy missing": (["diagnose", "--dataset", HOPPER, "--target", HOPPER,
                                   "--preset", "tiny", "--policy", "{tmp}/nowhere"],
                                  "(no such folder)"),
    "data make beyond memory": (["data", "make", "--env", "Pendulum-v1", "--kind", "random",
                                 "--steps", "100000000000", "--id", "t/huge/x-v0"],
                                "GiB of RAM, which holds the dataset while it is built"),
    "data export into a folder": (["data", "export", HOPPER, "{tmp}"], "is a folder"),
    "data make into a store below a file": (["data", "make", "--env", "Pendulum-v1", "--kind",
                                             "random", "--steps", "50", "--id", "t/p/x-v0"],
                                            "a file: choose another path"),
}  # fmt: skip


@pytest.mark.parametrize("case", EARLY_CASES)
def test_a_command_that_cannot_finish_fails_before_its_work(
    case, finished_run, store, tmp_path, capsys, monkeypatch
):
    args, message = EARLY_CASES[case]
    run = tmp_path / "run_copy"
    shutil.copytree(finished_run, run)
    (run / "summary.json").unlink()  # as if stopped before its end
    if case == "resume on a read-only disk":
        read_only_under(monkeypatch, run)
    if "below a file" in case:
        (tmp_path / "a_file").write_text("x")
        monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "a_file" / "minari"))
    before = tree_hashes(tmp_path)
    t0 = time.process_time()  # CPU time: load stretches wall time, not work
    status = cli.main([a.format(tmp=tmp_path, run=run) for a in args])
    seconds = time.process_time() - t0
    monkeypatch.undo()
    assert status == 2
    assert message in one_line(capsys)
    assert seconds < 5, seconds
    assert tree_hashes(tmp_path) == before


# ----------------------------------------------------------- 4. messages name the problem


def mislabel(store: Path) -> None:
    """A Hopper dataset whose metadata says HalfCheetah-v5."""
    meta_file = copy_dataset(store, "t/mislabelled/x-v0") / "metadata.json"
    meta = json.loads(meta_file.read_text())
    spec = json.loads(meta["env_spec"])
    spec.update(
        id="HalfCheetah-v5", entry_point="gymnasium.envs.mujoco.half_cheetah_v5:HalfCheetahEnv"
    )
    meta["env_spec"], meta["edis_jax"]["env_id"] = json.dumps(spec), "HalfCheetah-v5"
    meta_file.write_text(json.dumps(meta))


def not_a_run(tmp_path: Path) -> None:
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "config.json").write_text('{"name": "something else"}')


MESSAGE_CASES = {
    "metadata names another env": (mislabel, ["train", *TINY_FLAGS, "--dataset",
                                   "t/mislabelled/x-v0", "--out", "{tmp}/run"],
                                   "names the env HalfCheetah-v5 (observations 17, actions 6), "
                                   "but its data has observations 11, actions 3"),
    "--out empty": (None, ["train", *TINY_FLAGS, "--dataset", HOPPER, "--out", ""],
                    "--out is empty"),
    "diagnose --target a missing run": (None, ["diagnose", "--dataset", HOPPER, "--target",
                                        "{tmp}/no_run", "--preset", "tiny"],
                                        "is neither a run directory (no such folder) nor"),
    "--init-from a folder that is not a run": (not_a_run, ["train", *TINY_FLAGS, "--dataset",
                                               HOPPER, "--out", "{tmp}/run", "--init-from",
                                               "{tmp}/folder"], "is not an edis-jax run directory (its "
                                               "config.json is not a run's config"),
}  # fmt: skip


@pytest.mark.parametrize("case", MESSAGE_CASES)
def test_a_message_names_the_problem(case, store, tmp_path, capsys):
    make, args, message = MESSAGE_CASES[case]
    if make is mislabel:
        mislabel(store)
    elif make is not None:
        make(tmp_path)
    assert cli.main([a.format(tmp=tmp_path) for a in args]) == 2
    assert message in one_line(capsys)
    assert not (tmp_path / "run").exists()


def test_data_export_writes_the_file_it_names(store, tmp_path, capsys):
    assert cli.main(["data", "export", HOPPER, str(tmp_path / "exported")]) == 0
    assert f"-> {tmp_path / 'exported'} " in capsys.readouterr().out
    assert [p.name for p in tmp_path.glob("exported*")] == ["exported"]


# ------------------------------------------------------------------ 5. contradictions


def damaged_metrics(run: Path) -> None:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    lines[2] = lines[2][: len(lines[2]) // 2]
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")


CONTRADICTIONS = {
    "--task of another env": (["train", "--task", "iql_edis/hopper-medium", "--preset", "tiny",
                               "--dataset", PENDULUM, "--out", "{tmp}/new"], 2,
                              "is tuned for Hopper-v5, but --dataset"),
    "--task with another --algo": (["train", "--task", "iql_edis/hopper-medium", "--preset",
                                    "tiny", "--dataset", HOPPER, "--algo", "calql", "--out",
                                    "{tmp}/new"], 2, "is tuned for --algo iql, but --algo is calql"),
    "--guide with --no-edis": (["train", *TINY_FLAGS, "--dataset", HOPPER, "--out", "{tmp}/new",
                                "--guide", "state", "--energy.steps", "3"], 0,
                               "--energy.steps, --guide (--no-edis: a baseline has no generator)"),
    "--init-at without --init-from": (["train", *TINY_FLAGS, "--dataset", HOPPER, "--out",
                                       "{tmp}/new", "--init-at", "offline"], 0,
                                      "--init-at (it chooses where an --init-from run starts"),
    "data export onto a file": (["data", "export", HOPPER, "{run}/config.json"], 2,
                                "already exists: pass --overwrite"),
    "report of damaged records": (["report", "{run}", "--out", "{tmp}/r.png"], 0,
                                  "damaged (1 unreadable lines in metrics.jsonl skipped)"),
}  # fmt: skip


@pytest.mark.parametrize("case", CONTRADICTIONS)
def test_a_contradiction_is_refused_or_said(
    case, finished_run, store, tmp_path, capsys, monkeypatch
):
    args, status, message = CONTRADICTIONS[case]
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    damaged_metrics(run)
    before = tree_hashes(run)
    if status == 0 and args[0] == "train":
        monkeypatch.setattr(loop, "train", lambda cfg: None)  # the warning, not the run
    assert cli.main([a.format(tmp=tmp_path, run=run) for a in args]) == status
    if status == 2:
        assert message in one_line(capsys)
    else:
        captured = capsys.readouterr()
        assert message in captured.out + captured.err
        assert "Traceback" not in captured.err
    assert tree_hashes(run) == before

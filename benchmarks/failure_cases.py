"""The failure cases of issue 33, run as a user runs them: each an `edis-jax` process against
the code in --code (default: this checkout), with its exit status, seconds and last line.

    python -m benchmarks.failure_cases [--code DIR] [--work DIR] [--only NAME...]

prints a markdown table. Run it once with --code pointing at a checkout of an older commit
(`git worktree add /tmp/before <commit>`) and once without, for a before/after table. The
read-only case needs root (a read-only bind mount through `unshare -m`); it is skipped
otherwise. Every case runs on tiny data in a fresh --work folder (about 4 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

HOPPER, PENDULUM = "t/hopper/random-v0", "t/pendulum/random-v0"
TINY = ["--preset", "tiny", "--no-edis", "--offline-steps", "40", "--online-steps", "40",
        "--log-every", "20", "--eval-every", "20", "--checkpoint-every", "20"]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--code", default=str(Path(__file__).resolve().parents[1]))
    parser.add_argument("--work", default="/tmp/edis_failure_cases")
    parser.add_argument("--only", nargs="*", default=None)
    args = parser.parse_args()
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    env = {
        **os.environ,
        "PYTHONPATH": args.code,  # the commands run in --work, so that it comes first
        "MINARI_DATASETS_PATH": str(work / "minari"),
        "JAX_PLATFORMS": "cpu",
        "JAX_COMPILATION_CACHE_DIR": str(work / "jax_cache"),
    }
    cases = Cases(work, env)
    cases.fixtures()
    print("| class | case | command | exit | s | last line |")
    print("|---|---|---|---|---|---|")
    for klass, name, case in CASES:
        if args.only and name not in args.only:
            continue
        command, status, seconds, last = case(cases)
        last = last.replace("|", "\\|")[:200]
        print(f"| {klass} | {name} | `{command}` | {status} | {seconds:.1f} | {last} |", flush=True)


class Cases:
    def __init__(self, work: Path, env: dict):
        self.work, self.env = work, env

    def cli(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "edis_jax.cli", *args]

    def run(self, *args: str, wrap: list[str] | None = None):
        t0 = time.perf_counter()
        done = subprocess.run(
            [*(wrap or []), *self.cli(*args)],
            env=self.env,
            capture_output=True,
            text=True,
            cwd=self.work,
        )
        return done.returncode, time.perf_counter() - t0, last_line(done.stdout + done.stderr)

    def fixtures(self) -> None:
        for env_id, steps, dataset in (("Hopper-v5", 1500, HOPPER), ("Pendulum-v1", 400, PENDULUM)):
            make = ["data", "make", "--env", env_id, "--kind", "random", "--steps", str(steps)]
            assert self.run(*make, "--id", dataset)[0] == 0
        assert (
            self.run("train", *TINY, "--dataset", HOPPER, "--out", str(self.work / "run"))[0] == 0
        )

    def dataset_copy(self, new_id: str) -> Path:
        root = Path(self.env["MINARI_DATASETS_PATH"])
        shutil.copytree(root / HOPPER, root / new_id)
        meta_file = root / new_id / "data" / "metadata.json"
        meta = json.loads(meta_file.read_text())
        meta["dataset_id"] = new_id
        meta_file.write_text(json.dumps(meta))
        return root / new_id

    def run_copy(self, name: str) -> Path:
        copy = self.work / name
        shutil.copytree(self.work / "run", copy)
        return copy


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.replace("\r", "\n").splitlines() if line.strip()]
    return lines[-1] if lines else ""


def shown(args) -> str:
    return " ".join(str(a) if str(a) else "''" for a in args)


# ------------------------------------------------------------------------------------ cases


def concurrent_make(c: Cases):
    make = ["data", "make", "--env", "Hopper-v5", "--kind", "random", "--steps", "20000",
            "--id", "t/hopper/same-v0"]  # fmt: skip
    t0 = time.perf_counter()
    procs = [
        subprocess.Popen(
            c.cli(*make),
            env=c.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=c.work,
        )  # fmt: skip
        for _ in range(2)
    ]
    outs = [p.communicate()[0] for p in procs]
    seconds = time.perf_counter() - t0
    statuses = "/".join(str(p.returncode) for p in procs)
    lines = " ‖ ".join(last_line(o) for o in outs)
    return "2 x " + shown(make), statuses, seconds, lines


def episode_deleted(c: Cases, command: str):
    path = c.dataset_copy(f"t/hopper/{command}-deleted-v0")
    (path / "data" / "3" / "part-0.arrow").unlink()
    args = ["data", "info", f"t/hopper/{command}-deleted-v0"] if command == "info" else [
        "train", *TINY, "--dataset", f"t/hopper/{command}-deleted-v0", "--out",
        str(c.work / "deleted_run")]  # fmt: skip
    return shown(args), *c.run(*args)


def file_changed(c: Cases):
    path = c.dataset_copy("t/hopper/changed-v0")
    arrow = path / "data" / "5" / "part-0.arrow"
    data = bytearray(arrow.read_bytes())
    data[len(data) // 2] ^= 0x01
    arrow.write_bytes(bytes(data))
    args = ["data", "info", "t/hopper/changed-v0"]
    return shown(args) + " (one byte flipped)", *c.run(*args)


def list_unreadable(c: Cases):
    root = Path(c.env["MINARI_DATASETS_PATH"])
    (root / "t" / "broken" / "x-v0" / "data").mkdir(parents=True)
    return "data list (a dataset folder without metadata.json)", *c.run("data", "list")


def interrupt(c: Cases, signum: int, ready: str):
    out = c.work / f"interrupted_{signum}_{ready}"
    args = ["train", *TINY, "--dataset", HOPPER, "--out", str(out)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        c.cli(*args), env=c.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        cwd=c.work, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    checkpoint = out / "checkpoints" / "60" / "checksums.json"
    while proc.poll() is None and not (checkpoint.exists() if ready == "mid" else False):
        if ready == "after" and (out / "summary.json").exists():
            break
        time.sleep(0.01)
    if ready == "after":
        time.sleep(0.05)
    proc.send_signal(signum)
    stdout, stderr = proc.communicate()
    name = signal.Signals(signum).name
    return (f"{name} {'mid-run' if ready == 'mid' else 'after the summary'}: " + shown(args),
            proc.returncode, time.perf_counter() - t0, last_line(stdout + stderr))  # fmt: skip


def diagnose_json_folder(c: Cases):
    (c.work / "a_folder").mkdir(exist_ok=True)
    args = ["diagnose", "--dataset", HOPPER, "--target", HOPPER, "--preset", "tiny",
            "--json", str(c.work / "a_folder")]  # fmt: skip
    return shown(args), *c.run(*args)


def huge_seeds(c: Cases):
    args = ["train", "--preset", "tiny", "--dataset", HOPPER, "--seeds", "100000000",
            "--out", str(c.work / "huge")]  # fmt: skip
    return shown(args), *c.run(*args)


def resume_read_only(c: Cases):
    run = c.run_copy("read_only")
    (run / "summary.json").unlink()  # as if it had been stopped
    args = ["resume", str(run)]
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return shown(args) + " (skipped: needs root)", "-", 0.0, ""
    wrap = ["unshare", "-m", "sh", "-c", f'mount --bind -o ro "{run}" "{run}" && exec "$@"', "-"]
    return shown(args) + " (read-only mount)", *c.run(*args, wrap=wrap)


def missing_generator(c: Cases):
    args = ["train", "--preset", "tiny", "--dataset", HOPPER, "--out", str(c.work / "g"),
            "--diffusion.warm-start", "--diffusion.initial-steps", "10", "--generator-from",
            str(c.work / "nowhere")]  # fmt: skip
    return shown(args), *c.run(*args)


def export_to_folder(c: Cases):
    (c.work / "a_folder").mkdir(exist_ok=True)
    args = ["data", "export", HOPPER, str(c.work / "a_folder")]
    return shown(args), *c.run(*args)


def store_unwritable(c: Cases):
    (c.work / "a_file").write_text("x")
    env = {**c.env, "MINARI_DATASETS_PATH": str(c.work / "a_file" / "minari")}
    args = ["data", "make", "--env", "Pendulum-v1", "--kind", "random", "--steps", "400",
            "--id", "t/p/random-v0"]  # fmt: skip
    t0 = time.perf_counter()
    done = subprocess.run(c.cli(*args), env=env, capture_output=True, text=True, cwd=c.work)
    return ("MINARI_DATASETS_PATH=a_file/minari " + shown(args), done.returncode,
            time.perf_counter() - t0, last_line(done.stdout + done.stderr))  # fmt: skip


def env_mismatch(c: Cases):
    path = c.dataset_copy("t/hopper/mislabelled-v0")
    meta_file = path / "data" / "metadata.json"
    meta = json.loads(meta_file.read_text())
    spec = json.loads(meta["env_spec"])
    spec.update(
        id="HalfCheetah-v5", entry_point="gymnasium.envs.mujoco.half_cheetah_v5:HalfCheetahEnv"
    )
    meta["env_spec"] = json.dumps(spec)
    meta["edis_jax"]["env_id"] = "HalfCheetah-v5"
    meta_file.write_text(json.dumps(meta))
    args = ["train", *TINY, "--dataset", "t/hopper/mislabelled-v0", "--out", str(c.work / "m")]
    return shown(args) + " (metadata says HalfCheetah-v5)", *c.run(*args)


def empty_out(c: Cases):
    args = ["train", *TINY, "--dataset", HOPPER, "--out", ""]
    return shown(args), *c.run(*args)


def diagnose_missing_run(c: Cases):
    args = ["diagnose", "--dataset", HOPPER, "--target", str(c.work / "no_such_run"),
            "--preset", "tiny"]  # fmt: skip
    return shown(args), *c.run(*args)


def init_from_not_a_run(c: Cases):
    folder = c.work / "not_a_run"
    folder.mkdir(exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"name": "something else"}))
    args = ["train", *TINY, "--dataset", HOPPER, "--out", str(c.work / "i"),
            "--init-from", str(folder)]  # fmt: skip
    return shown(args) + " (a folder with another config.json)", *c.run(*args)


def export_name(c: Cases):
    target = c.work / "exported"
    args = ["data", "export", HOPPER, str(target)]
    status, seconds, last = c.run(*args)
    written = sorted(p.name for p in c.work.glob("exported*"))
    return shown(args), status, seconds, f"{last} [files written: {', '.join(written)}]"


def task_other_env(c: Cases):
    args = ["train", "--task", "iql/hopper-medium", "--preset", "tiny", "--dataset", PENDULUM,
            "--ref-min-score", "-1500", "--ref-max-score", "0", "--out", str(c.work / "t"),
            *TINY[3:]]  # fmt: skip
    return shown(args), *c.run(*args)


def guide_without_edis(c: Cases):
    args = ["train", *TINY, "--dataset", HOPPER, "--out", str(c.work / "guide"),
            "--guide", "state"]  # fmt: skip
    t0 = time.perf_counter()
    done = subprocess.run(c.cli(*args), env=c.env, capture_output=True, text=True, cwd=c.work)
    warned = [line for line in done.stderr.splitlines() if "warning" in line]
    return (shown(args), done.returncode, time.perf_counter() - t0,
            warned[0] if warned else "(no warning) " + last_line(done.stdout))  # fmt: skip


def export_existing(c: Cases):
    target = c.work / "existing.npz"
    target.write_text("keep me")
    args = ["data", "export", HOPPER, str(target)]
    status, seconds, last = c.run(*args)
    kept = target.read_text(errors="replace") == "keep me"
    return shown(args), status, seconds, f"{last} [old file kept: {kept}]"


def report_damaged(c: Cases):
    run = c.run_copy("damaged_metrics")
    lines = (run / "metrics.jsonl").read_text().splitlines()
    lines[2] = lines[2][: len(lines[2]) // 2]
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    args = ["report", str(run), "--out", str(c.work / "r.png")]
    t0 = time.perf_counter()
    done = subprocess.run(c.cli(*args), env=c.env, capture_output=True, text=True, cwd=c.work)
    said = [line for line in (done.stdout + done.stderr).splitlines() if "damaged" in line
            or "skipped" in line or str(run) in line]  # fmt: skip
    return (shown(args) + " (one line cut short)", done.returncode,
            time.perf_counter() - t0, said[0].strip() if said else "")  # fmt: skip


CASES = [
    (1, "concurrent data make", concurrent_make),
    (1, "episode file deleted: info", lambda c: episode_deleted(c, "info")),
    (1, "episode file deleted: train", lambda c: episode_deleted(c, "train")),
    (1, "episode file changed", file_changed),
    (1, "data list, unreadable folder", list_unreadable),
    (2, "SIGINT mid-run", lambda c: interrupt(c, signal.SIGINT, "mid")),
    (2, "SIGTERM mid-run", lambda c: interrupt(c, signal.SIGTERM, "mid")),
    (2, "SIGINT after summary", lambda c: interrupt(c, signal.SIGINT, "after")),
    (3, "diagnose --json folder", diagnose_json_folder),
    (3, "--seeds 100000000", huge_seeds),
    (3, "resume read-only", resume_read_only),
    (3, "--generator-from missing", missing_generator),
    (3, "export into a folder", export_to_folder),
    (3, "store below a file", store_unwritable),
    (4, "metadata env != data", env_mismatch),
    (4, "--out ''", empty_out),
    (4, "diagnose --target missing run", diagnose_missing_run),
    (4, "--init-from not a run", init_from_not_a_run),
    (4, "export name", export_name),
    (5, "--task other env", task_other_env),
    (5, "--guide with --no-edis", guide_without_edis),
    (5, "export onto existing", export_existing),
    (5, "report damaged metrics", report_damaged),
]


if __name__ == "__main__":
    main()

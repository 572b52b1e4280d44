"""`python -m benchmarks.gpu [--size paper|tiny] [--budget-s 480]`: the GPU run in one command.

Six parts, each in a process of its own under a time limit, so that the whole run ends within
the budget (default 8 minutes) whatever a part does:

  smoke    a short paper-preset run through train/loop.train: offline phase, online phase
           with EDIS and one generator retrain, evaluations, checkpoints (the path end to end)
  backends the online phase and the evaluations on both env backends, gymnasium and jax, at
           1 / 8 / 32 seeds and U = 1 / 20 (benchmarks/env_backends.py), and the projected
           wall time of the paper's IQL-EDIS schedule for 8 and 32 seeds from those rates and
           the smoke run's retrain
  calql    the Cal-QL comparison's five arms (benchmarks/comparison.py --algo calql) at the
           preset's size, one after the other; the table of the arms finished so far is kept
           after each, so a part stopped by the budget keeps them
  memory   peak device memory of a 32-seed paper-size run state (benchmarks/memory.run_state)
  scaling  1 / 8 / 32 vmapped seeds: IQL updates/s and guided-sampler samples/s at paper size
  rows     the benchmark rows of benchmarks/run.py at paper size, against the PyTorch eager
           reference where PyTorch is installed (null columns otherwise)

Before each part the remaining budget is compared with the part's estimate (ESTIMATES_S, from
one H200 run): a part that does not fit is skipped with one line.
A part may run past its estimate only into time the later parts' estimates leave free, then it
is stopped; rows measured before the stop are kept. The parent process never initialises JAX
(on a GPU that would hold most of its memory): a first probe process names the device.

Writes benchmarks/results/gpu_<device>.json and .md (<device> from the device kind, e.g.
`nvidia-h100-80gb-hbm3`; `cpu-2threads` on a CPU), and prints the markdown. `--size tiny` runs
the same code at the tiny preset's sizes, in about a minute on a CPU, into gpu_<device>-tiny.*.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parents[1]
PARTS = ("smoke", "backends", "calql", "memory", "scaling", "rows")
SIZES = ("paper", "tiny")

# Seconds each part is expected to take, compile included. Paper size: one NVIDIA H200 under
# JAX 0.11.2 with a cold compilation cache took 3 / 113 / 79 / 103 s for probe, smoke, memory and
# scaling, and 161 s for the rows before the online-step ones, which took 81 s at five rounds
# (benchmarks/results/gpu_nvidia-h200-971f357*.md), plus margin; together they need more than the
# default 8 minutes, so the rows part runs last and keeps the rows it measured (MIN_START_S).
# Tiny: 2 CPU cores at load 4-5 took 26 / 22 / 53 / 48 s with a warm compilation cache (3-7
# times that cold), plus margin.
# backends: not yet run on a GPU; a guess (six MJX chunk compiles and four evaluation ones);
# tiny on this CPU: about 4 minutes at load 2-4, mostly MJX's compiles.
# calql: not yet run on a GPU; a guess from the H200 rows (0.3 ms per Cal-QL update, 0.45 s
# per 1000 paper-size diffusion steps, 0.29 s per 10k guided samples) for 8 seeds: the 13
# retrains at 2k steps and 20k samples, 95k online and 20k offline steps, compiles. Tiny on
# this CPU: 5 minutes at load 3 (the @slow test).
ESTIMATES_S = {
    "paper": {"probe": 30, "smoke": 140, "backends": 240, "calql": 300, "memory": 105,
              "scaling": 145, "rows": 230},
    "tiny": {"probe": 15, "smoke": 60, "backends": 300, "calql": 360, "memory": 40, "scaling": 80,
             "rows": 80},
}  # fmt: skip

# A part that keeps what it measured before it is stopped (the rows, one by one) starts with
# this many seconds left even when its estimate does not fit; the others need their estimate.
MIN_START_S = {"rows": 45, "backends": 60, "calql": 60}

# The smoke run: the named preset with these values (config.with_values). Paper: paper-size
# networks and the published IQL-EDIS schedule, with fewer steps, seeds and samples so that it
# takes about a minute; one retrain at online step `retrain_every`.
SMOKE = {
    "paper": {
        "seeds": 2, "offline_steps": 1000, "online_steps": 2000, "online.retrain_every": 1000,
        "online.num_samples": 20_000, "diffusion.train_steps": 2000, "eval_every": 1000,
        "eval_episodes": 2, "log_every": 250, "checkpoint_every": 1000,
    },
    "tiny": {
        "seeds": 2, "offline_steps": 100, "online_steps": 100, "online.retrain_every": 50,
        "eval_every": 50, "eval_episodes": 1, "log_every": 25, "checkpoint_every": 50,
    },
}  # fmt: skip

# Seconds of the budget kept for starting, writing the results and ending.
RESERVE_S = 10

# Seeds and offline rows of the run state whose memory is measured.
MEMORY = {"paper": (32, 1_000_000), "tiny": (32, 1000)}


def sizes(size: str):
    """benchmarks/run.py's Sizes for the rows and the scaling: the paper-size model only, seeds
    1 / 8 / 32 with the paper-size sampler; tiny: the same shapes at the tiny preset."""
    from benchmarks.run import Sizes

    seeds = (1, 8, 32)
    if size == "paper":
        # Three rounds of 10 steps at U = 20: the reference takes ~230 ms a step there, and five
        # rounds of 20 (the CPU default) took 81 s of the budget for the two online-step rows.
        return Sizes(
            models=(("paper", 16, 0),), online_steps=((1, 200), (20, 10)), online_rounds=3,
            scaling_seeds=seeds, scaling_preset="paper",
        )  # fmt: skip
    return Sizes(
        models=(("tiny", 2, 0),), samples=64, small_batch=16, sampler_steps=4, train_chunk=4,
        ref_train_steps=2, agent_preset="tiny", agent_batch=16, agent_updates=4,
        ref_updates=(("iql", 2), ("sac", 2), ("calql", 2)), cep_chunk=2, online_steps=((2, 2),),
        scaling_seeds=seeds, scaling_updates=3, scaling_preset="tiny", scaling_rows=8,
        repeats=1, peak_n=256,
    )  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=SIZES, default="paper")
    parser.add_argument(
        "--quick", dest="size", action="store_const", const="tiny", help="--size tiny"
    )
    parser.add_argument("--budget-s", type=float, default=480.0, help="wall-clock budget (s)")
    parser.add_argument("--parts", default=",".join(PARTS), help="comma list of parts to run")
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch reference")
    parser.add_argument(
        "--only", default="", help="rows whose names contain one of these '|'-separated words"
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    # Internal: run one part in this process and write its result there.
    parser.add_argument("--part", choices=("probe", *PARTS), help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.part is not None:
        value = _run_part(args.part, args.size, not args.no_torch, args.result, args.only)
        _write_json(args.result, value)
        return
    parts = tuple(p.strip() for p in args.parts.split(",") if p.strip())
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        parser.error(f"unknown parts {unknown}: choose from {', '.join(PARTS)}")
    record, markdown = run(
        args.size, args.budget_s, args.out, parts, torch=not args.no_torch, only=args.only
    )
    print(markdown)
    print(f"wrote {record['json_path']} and {record['md_path']} in {record['wall_s']:.0f} s")


def run(
    size: str,
    budget_s: float,
    out_dir: Path,
    parts: tuple[str, ...] = PARTS,
    *,
    torch: bool = True,
    only: str = "",
    log=print,
) -> tuple[dict, str]:
    """Run the parts in child processes within `budget_s`; write and return (record, markdown).
    `only` keeps the rows whose names contain one of its '|'-separated words (all: empty)."""
    start = time.monotonic()
    deadline = start + budget_s - RESERVE_S
    estimates = ESTIMATES_S[size]
    statuses, results = [], {}
    with tempfile.TemporaryDirectory(prefix="edis-gpu-bench-") as tmp:
        args = ["--size", size, "--only", only] + ([] if torch else ["--no-torch"])
        probe = _child("probe", args, Path(tmp), None, estimates["probe"], log)
        if probe["result"] is None:
            raise RuntimeError(f"the device probe failed: {probe['status']}")
        info = probe["result"]
        log(f"device: {info['description']} (JAX {info['jax_version']}); budget {budget_s:.0f} s")
        if info["platform"] == "cpu" and size == "paper":
            log("no GPU: JAX sees only the CPU; paper size will not fit the budget here")
        for i, part in enumerate(parts):
            later = sum(estimates[p] for p in parts[i + 1 :])
            outcome = _child(part, args, Path(tmp), deadline, estimates[part], log, later)
            statuses.append({"part": part, **{k: v for k, v in outcome.items() if k != "result"}})
            results[part] = outcome["result"]
    return _write(size, budget_s, out_dir, info, statuses, results, start)


def _child(part, args, tmp: Path, deadline, estimate, log, later: float = 0.0) -> dict:
    """Run one part in a child process (`args`: the run's command-line options). Skipped when
    less than `estimate` seconds remain (MIN_START_S for a part that keeps partial results);
    stopped once it would eat into the `later` seconds the parts after it need. Without a
    deadline (the probe) it always runs, stopped after `estimate` seconds."""
    left = estimate if deadline is None else deadline - time.monotonic()
    status = {"estimate_s": estimate, "seconds": None, "result": None}
    if left < MIN_START_S.get(part, estimate):
        line = f"skipped: {left:.0f} s of the budget left, the estimate is {estimate} s"
        log(f"== {part}: {line}")
        return {**status, "status": line}
    limit = max(min(estimate, left), left - later)
    log(f"== {part} (estimate {estimate} s, stopped after {limit:.0f} s)")
    result = tmp / f"{part}.json"
    command = [sys.executable, "-m", "benchmarks.gpu", "--part", part, "--result", str(result)]
    command += args
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}  # fmt: skip
    start = time.monotonic()
    try:
        done = subprocess.run(command, cwd=ROOT, env=env, timeout=limit)
        line = "ran" if done.returncode == 0 else f"failed (exit status {done.returncode})"
    except subprocess.TimeoutExpired:
        line = f"stopped after {limit:.0f} s (the budget left no more)"
    seconds = time.monotonic() - start
    value = json.loads(result.read_text()) if result.exists() else None
    if value is not None and line != "ran" and part in MIN_START_S:
        line += "; what it measured before is kept"
    log(f"== {part}: {line} in {seconds:.0f} s")
    return {**status, "status": line, "seconds": seconds, "result": value}


def _run_part(part: str, size: str, torch: bool, result: Path, only: str = ""):
    if part == "probe":
        return _probe()
    if part == "smoke":
        return _smoke(size)
    if part == "backends":
        return _backends(size, result)
    if part == "calql":
        return _calql(size, result)
    if part == "memory":
        from benchmarks import memory

        seeds, offline_rows = MEMORY[size]
        return memory.run_state(size, seeds, offline_rows)
    from benchmarks import harness
    from benchmarks.run import Suite, load_reference

    s = sizes(size)
    if part == "scaling":
        return Suite(s, None, 0.0, "", print).scaling()
    # rows: saved after every row, so that a stopped part keeps what it measured.
    import jax

    ref = load_reference(torch, print)
    on_gpu = jax.devices()[0].platform == "gpu"
    peak = harness.peak_matmul_gflops(s.peak_n * (2 if on_gpu else 1))
    print(f"peak float32 matmul {peak:.1f} GFLOP/s")
    value = {
        "peak_matmul_gflops": peak,
        "torch_version": None if ref is None else ref.torch.__version__,
        "reference_device": None if ref is None else ref.device_label(),
        "sizes": dataclasses.asdict(s),
        "rows": [],
    }

    def save(row) -> None:
        value["rows"].append(dataclasses.asdict(row))
        _write_json(result, value)

    Suite(s, ref, peak, only, print, on_row=save).rows()
    return value


def _backends(size: str, result: Path) -> dict:
    """benchmarks/env_backends.py's rows (paper: its full sizes; tiny: its quick ones), saved
    after every row so that a stopped part keeps what it measured."""
    from benchmarks import env_backends

    sizes = env_backends.Sizes() if size == "paper" else env_backends.Sizes().quick()
    value = {"sizes": dataclasses.asdict(sizes), "online": [], "evaluation": [], "offline": []}

    def save(kind, row) -> None:
        value.setdefault(kind, []).append(row)
        _write_json(result, value)

    env_backends.measure(sizes, print, on_row=save)
    return value


def _calql(size: str, result: Path) -> dict:
    """The Cal-QL comparison at the `size` preset (comparison.SIZES) in a temporary folder, arm
    after arm; after each finished arm its wall time and the report of the finished arms are
    saved, so that a stopped part keeps them."""
    from benchmarks import comparison
    from edis_jax import make_run

    arms = list(comparison.ARMS["calql"])
    size_ = comparison.SIZES["calql", size]
    value = {"preset": size, "size": size_._asdict(), "arms": [], "report": None}
    with tempfile.TemporaryDirectory(prefix="edis-gpu-calql-") as tmp:
        out = Path(tmp)
        configs = comparison.arm_configs(out, arms, "calql", preset=size)
        value["values"] = comparison.SIZE_VALUES.get(("calql", size), {})
        for cfg in configs:
            start = time.perf_counter()
            make_run.run_or_continue(cfg)
            run_dir = Path(cfg.out)
            summary = json.loads((run_dir / "summary.json").read_text())
            value["arms"].append({
                "arm": run_dir.name, "wall_s": time.perf_counter() - start,
                "env_backend": json.loads((run_dir / "config.json").read_text())["env_backend"],
                "final_score": summary["final_score"]["mean"],
            })  # fmt: skip
            finished = [c.out for c in configs[: len(value["arms"])]]
            text = comparison.report_text(out, finished, configs[0].out, "calql")
            value["report"] = text.replace(f"{out}/", "")  # the temporary folder is gone after
            _write_json(result, value)
    return value


def _retrain_s(smoke: dict | None, size: str) -> dict | None:
    """One retrain of the `size` preset's generator, in seconds per seed count, from the smoke
    run's single retrain (its diffusion training, CEP, sampling and health), scaled to the
    preset's diffusion steps and samples and, for want of a measurement, linearly in seeds
    (vmapped seeds usually cost less on a GPU: an upper bound)."""
    if not smoke:
        return None
    from edis_jax.config.presets import preset

    cfg = preset(size)
    values = SMOKE[size]
    train = values.get("diffusion.train_steps", cfg.diffusion.train_steps)
    samples = values.get("online.num_samples", cfg.online.num_samples)
    fixed = sum(smoke.get(f"{k}_s", 0.0) for k in ("cep_negatives", "cep", "cep_heldout", "health"))
    per_run = (
        smoke.get("diffusion_s", 0.0) * cfg.diffusion.train_steps / train
        + smoke.get("generate_s", 0.0) * cfg.online.num_samples / samples
        + fixed
    )
    seeds = values["seeds"]
    return {n: per_run * n / seeds for n in (1, 2, 8, 32)}


def _probe() -> dict:
    import jax

    from benchmarks import harness

    device = jax.devices()[0]
    return {
        "device": harness.device_name(),
        "device_kind": device.device_kind,
        "platform": device.platform,
        "device_count": len(jax.devices()),
        "description": harness.device_description(),
        "jax_version": jax.__version__,
    }


def _smoke(size: str) -> dict:
    """A short run of the `size` preset with SMOKE's values, through loop.train, in a
    temporary folder; returns its summary's numbers and the count of metrics.jsonl records."""
    from edis_jax.config import with_values
    from edis_jax.config.presets import preset
    from edis_jax.train import loop

    with tempfile.TemporaryDirectory(prefix="edis-gpu-smoke-") as tmp:
        cfg = with_values(preset(size), {**SMOKE[size], "out": str(Path(tmp) / "run")})
        start = time.perf_counter()
        summary = loop.train(cfg, progress=False)
        wall = time.perf_counter() - start
        lines = (Path(cfg.out) / "metrics.jsonl").read_text().splitlines()
        checkpoints = sorted(p.name for p in (Path(cfg.out) / "checkpoints").iterdir())
    out = {
        "preset": size,
        "overrides": " ".join(f"{k}={v}" for k, v in SMOKE[size].items()),
        "retrains": summary["retrains"],
        "synthetic_updates": summary["synthetic_updates"],
        "final_score": summary["final_score"]["mean"],
        "metrics_records": len(lines),
        "checkpoints": len(checkpoints),
        "env_steps_per_s": summary["env_steps_per_s"],
        "updates_per_s": summary["updates_per_s"],
        "wall_s": wall,
    }
    out.update({f"{k}_s": v for k, v in summary["wall_time_s"].items()})
    return out


def _write(size, budget_s, out_dir, info, statuses, results, start) -> tuple[dict, str]:
    from benchmarks import harness
    from benchmarks.harness import Row

    rows_part = results.get("rows") or {}
    rows = [Row(**r) for r in rows_part.get("rows", [])]
    peak = rows_part.get("peak_matmul_gflops")
    extra = {
        "device_kind": info["device_kind"],
        "platform": info["platform"],
        "device_count": info["device_count"],
        "jax_version": info["jax_version"],
        "torch_version": rows_part.get("torch_version"),
        "reference_device": rows_part.get("reference_device"),
        "size": size,
        "budget_s": budget_s,
        "wall_s": time.monotonic() - start,
        "parts": statuses,
        "scaling": results.get("scaling"),
        "memory": results.get("memory"),
        "smoke": results.get("smoke"),
        "calql": results.get("calql"),
        "sizes": rows_part.get("sizes"),
        "backends": _backends_record(results.get("backends"), results.get("smoke"), size, info),
    }
    label = info["device"].removeprefix("gpu-") + ("-tiny" if size == "tiny" else "")
    device_line = f"{info['device_kind']} ({info['description']})"
    json_path, md_path, body = harness.write_results(
        out_dir, f"gpu_{label}", info["device"], peak, rows, extra
    )
    head = [
        f"# `benchmarks.gpu` on {device_line}",
        "",
        f"Size {size}, budget {budget_s:.0f} s, took {extra['wall_s']:.0f} s. JAX {info['jax_version']}.",
        "",
        *harness.dict_table(statuses),
        "",
    ]
    tail = ["", "### Paper-preset smoke run" if size == "paper" else "### Smoke run", ""]
    tail += harness.dict_table(extra["smoke"]) if extra["smoke"] else ["not run"]
    if extra["backends"] is not None:
        from benchmarks import env_backends

        tail += ["", env_backends.markdown(extra["backends"]).replace("## Env", "### Env")]
    calql = extra["calql"]
    if calql is not None:
        tail += ["", "### The Cal-QL comparison", "", *harness.dict_table(calql["arms"]), ""]
        tail += [f"Size: {calql['size']}, with {calql['values']}.", "", calql["report"] or ""]
    markdown = "\n".join(head) + body + "\n".join(tail) + "\n"
    md_path.write_text(markdown)
    return {**extra, "json_path": str(json_path), "md_path": str(md_path)}, markdown


def _backends_record(backends, smoke, size: str, info: dict) -> dict | None:
    """The backends part's rows with the projection, computed here from them and the smoke
    run's retrain."""
    if backends is None:
        return None
    from benchmarks import env_backends

    sizes = env_backends.Sizes(**{
        k: tuple(tuple(x) if isinstance(x, list) else x for x in v) if isinstance(v, list) else v
        for k, v in backends["sizes"].items()
    })  # fmt: skip
    return {
        **backends, "device": info["device"], "jax_version": info["jax_version"],
        "quick": size == "tiny",
        "agent_preset": sizes.agent_preset,
        "projection": env_backends.projection(backends, sizes, _retrain_s(smoke, size)),
    }  # fmt: skip


def _write_json(path: Path, value) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(value, indent=2) + "\n")
    tmp.replace(path)


if __name__ == "__main__":
    main()

"""What a run records on the host: its Progress (saved as JSON with every checkpoint), the
metrics.jsonl file, the check that stops a diverged run before it is saved, and summary.json."""

from __future__ import annotations

import json
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path

import jax
import mujoco
import numpy as np

from edis_jax.config import RunConfig
from edis_jax.storage import checkpoint


class DivergedError(RuntimeError):
    """Training produced NaN or inf; the run stopped before checkpointing it."""


@dataclass
class Progress:
    """Host-side record of a run, saved as JSON with every checkpoint."""

    phase: str = "offline"  # offline -> online -> done
    offline_step: int = 0
    online_step: int = 0
    retrains: int = 0
    synthetic_updates: int = 0  # agent updates whose batches held synthetic rows (per seed)
    evals: list = field(default_factory=list)  # {"phase", "step", "returns", "scores"} per eval
    records: list = field(default_factory=list)  # the metrics.jsonl records so far
    wall: dict = field(default_factory=lambda: {"offline": 0.0, "online": 0.0})


def check_finite(run_dir: Path, phase: str, step: int, metrics, what: str = "") -> None:
    """Stop, before anything is logged or checkpointed, when a training metric (losses,
    values: host copies of a log point's metrics) or generated data is NaN or inf. Costs
    nothing extra: only metrics fetched for logging or saving are checked."""
    bad = sorted(
        (name, i)
        for name, value in (metrics or {}).items()
        for i in np.flatnonzero(~np.isfinite(np.asarray(value, np.float64).reshape(-1)))
    )
    if not bad:
        return
    names = ", ".join(dict.fromkeys(name for name, _ in bad))
    seeds = sorted({int(i) for _, i in bad})
    last = checkpoint.latest_step(run_dir)
    kept = "no checkpoint yet" if last is None else f"the last checkpoint (step {last})"
    raise DivergedError(
        f"training diverged: {what or names} became NaN or inf for seed(s) {seeds} at "
        f"{phase} step {step}; stopped before saving, {kept} is intact: lower the learning "
        "rates (or check the data and reward scale), then start again with --overwrite"
    )


def write_records_file(run_dir: Path, records: list) -> None:
    """Rewrite metrics.jsonl with `records`."""
    # Written aside and renamed in: a full disk leaves the old file whole.
    path = run_dir / "metrics.jsonl"
    tmp = path.with_name(f"{path.name}.tmp")
    try:
        with open(tmp, "w") as f:
            for record in records:
                f.write(json.dumps(record) + "\n")
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


# summary.json's keys that the machine and its load decide: the rest is the same bits for the
# same run, straight or resumed, on one machine.
MEASURED = ("wall_time_s", "env_steps_per_s", "updates_per_s", "machine")


def summary(cfg: RunConfig, p: Progress, env_id: str, use_edis: bool) -> dict:
    """summary.json: scores (mean, std, per seed), wall-clock times and rates, retrain counts,
    and the machine."""
    offline = [e for e in p.evals if e["phase"] == "offline"]
    offline_eval = offline[-1] if offline else p.evals[0]
    all_scores = np.array([e["scores"] for e in p.evals])  # (evals, seeds)
    online_scores = np.array([e["scores"] for e in p.evals if e["phase"] == "online"])
    env_steps = cfg.online_steps * cfg.seeds
    updates = (cfg.offline_steps + cfg.online_steps * cfg.online.utd) * cfg.seeds
    # Generator phases (pretraining, and inside the online time, each retrain phase) are
    # broken out beside offline / online / total.
    total = p.wall["offline"] + p.wall["online"] + p.wall.get("generator_pretrain", 0.0)
    wall = {**p.wall, "total": total}
    return {
        "algo": cfg.algo,
        "edis": bool(use_edis),
        "guide": list(cfg.guide) if use_edis else [],
        "dataset": cfg.dataset,
        "env_id": env_id,
        "seeds": cfg.seeds,
        "preset": cfg.preset,
        "offline_steps": cfg.offline_steps,
        "online_steps": cfg.online_steps,
        "offline_score": stats(offline_eval["scores"]),
        "final_score": stats(p.evals[-1]["scores"]),
        # Area under the online learning curve: the score averaged over online evaluations.
        "auc_score": stats(online_scores.mean(axis=0)) if len(online_scores) else None,
        "best_score": stats(all_scores.max(axis=0)),
        "wall_time_s": wall,
        # all seeds together; the online phase's time includes generator retrains
        "env_steps_per_s": env_steps / p.wall["online"] if p.wall["online"] > 0 else None,
        "updates_per_s": updates / wall["total"] if wall["total"] > 0 else None,
        "retrains": p.retrains,
        "synthetic_updates": p.synthetic_updates,
        # What the wall times were measured on: the process that finished the run (a resumed
        # run's earlier processes may have had another), and its load averages then.
        "machine": {**environment(), "load_average": list(os.getloadavg())},
    }


def environment() -> dict[str, str]:
    """What a result depends on besides the code: versions, device and CPU of this process.
    summary.json keeps it because wall times mean nothing without the machine, and
    `benchmarks.bitwise_check` its reference because XLA compiles CPU code for the host's
    vector instructions: the same code and versions give other bits on another CPU (the
    generator's hashes moved between an AVX-512 and an AVX2 AMD EPYC; the agents' did not)."""
    return {
        "jax": jax.__version__,
        "numpy": np.__version__,
        "mujoco": mujoco.__version__,
        "device": jax.devices()[0].device_kind,
        "platform": jax.devices()[0].platform,
        "machine": platform.machine(),
        "cpu": _cpu(),
        "XLA_FLAGS": os.environ.get("XLA_FLAGS", ""),
    }


def _cpu() -> str:
    """The CPU's model name and the widest x86 vector extension it has (Linux; else '')."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""
    first = info.split("\n\n")[0]  # the first processor's block
    fields = {k.strip(): v.strip() for k, _, v in (ln.partition(":") for ln in first.splitlines())}
    flags = set(fields.get("flags", "").split())
    widest = next((f for f in ("avx512f", "avx2", "avx") if f in flags), "")
    return f"{fields.get('model name', '')}; {widest}".strip("; ")


def json_float(value) -> float | None:
    """A float for metrics.jsonl; NaN and inf become null (strict JSON has neither)."""
    value = float(value)
    return value if np.isfinite(value) else None


def stats(values) -> dict:
    """Mean, std and per-seed values for summary.json; NaN and inf become null (strict JSON)."""
    v = np.asarray(values, np.float64)
    return {
        "mean": json_float(v.mean()),
        "std": json_float(v.std()),
        "per_seed": [json_float(x) for x in v],
    }


def as_dict(progress: Progress) -> dict:
    return {k: getattr(progress, k) for k in Progress.__dataclass_fields__}

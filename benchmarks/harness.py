"""Timing, the matmul peak, and the JSON / markdown result writers."""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import re
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

from benchmarks.flops import matmul_flops


@dataclasses.dataclass
class Row:
    """One line of the results table; a field that does not apply is None (null in JSON)."""

    name: str
    jax_ms: float | None = None
    ref_ms: float | None = None
    speedup: float | None = None  # ref_ms / jax_ms
    gflops: float | None = None  # achieved matmul GFLOP/s of the JAX side
    peak_fraction: float | None = None  # gflops / measured peak matmul GFLOP/s
    note: str | None = None

    @classmethod
    def make(
        cls,
        name: str,
        jax_ms: float | None,
        ref_ms: float | None = None,
        *,
        flops: float | None = None,
        peak_gflops: float | None = None,
        note: str | None = None,
    ) -> Row:
        speedup = ref_ms / jax_ms if jax_ms and ref_ms else None
        gflops = flops / (jax_ms * 1e6) if flops and jax_ms else None
        fraction = gflops / peak_gflops if gflops and peak_gflops else None
        return cls(name, jax_ms, ref_ms, speedup, gflops, fraction, note)


def time_ms(
    fn: Callable[[], Any],
    *,
    warmup: int = 1,
    repeats: int = 3,
    reduce: str = "min",
    budget_s: float = 20.0,
) -> float:
    """Wall time of fn() in milliseconds: `warmup` untimed calls (compilation), then the best
    (min) or median of up to `repeats` timed calls, stopping early once the timed calls have
    taken `budget_s` (a 50 s row runs once). JAX outputs are waited for with
    block_until_ready, so asynchronous dispatch is not mistaken for speed."""
    for _ in range(warmup):
        jax.block_until_ready(fn())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append((time.perf_counter() - start) * 1e3)
        if sum(times) > budget_s * 1e3:
            break
    return min(times) if reduce == "min" else statistics.median(times)


def peak_matmul_gflops(n: int = 4096, repeats: int = 5) -> float:
    """Best-of-`repeats` float32 n x n matmul throughput of JAX on the default device: the
    ceiling the sampler and training rows are compared against."""
    key_a, key_b = jax.random.split(jax.random.key(0))
    a = jax.random.normal(key_a, (n, n), jnp.float32)
    b = jax.random.normal(key_b, (n, n), jnp.float32)
    matmul = jax.jit(lambda x, y: x @ y)
    ms = time_ms(lambda: matmul(a, b), warmup=1, repeats=repeats, reduce="min")
    return matmul_flops(n) / (ms * 1e6)


def cpu_threads() -> int:
    """Cores this process may use: XLA's CPU thread pool uses this many, and the PyTorch
    reference is set to the same count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def device_name() -> str:
    """A file-name-safe label of the default device, e.g. `cpu-2threads` or
    `gpu-nvidia-h100-80gb-hbm3`."""
    device = jax.devices()[0]
    if device.platform == "cpu":
        return f"cpu-{cpu_threads()}threads"
    kind = re.sub(r"[^a-z0-9]+", "-", device.device_kind.lower()).strip("-")
    return f"{device.platform}-{kind}"


def device_description() -> str:
    device = jax.devices()[0]
    if device.platform == "cpu":
        return f"{platform.processor() or platform.machine()} CPU, {cpu_threads()} threads"
    return f"{device.device_kind} ({len(jax.devices())} device(s))"


def write_results(
    out_dir: Path,
    stem: str,
    device: str,
    peak_gflops: float | None,
    rows: list[Row],
    extra: dict[str, Any],
) -> tuple[Path, Path, str]:
    """Write `<stem>.json` (the agreed schema plus `extra` keys) and `<stem>.md`; return both
    paths and the markdown text. Files are written to a temporary name and renamed, so an
    interrupted run never leaves a half-written result."""
    out_dir.mkdir(parents=True, exist_ok=True)
    record = {
        "device": device,
        "peak_matmul_gflops": peak_gflops,
        "rows": [dataclasses.asdict(r) for r in rows],
        **extra,
    }
    markdown = markdown_report(device, peak_gflops, rows, extra)
    json_path, md_path = out_dir / f"{stem}.json", out_dir / f"{stem}.md"
    _write_atomic(json_path, json.dumps(record, indent=2) + "\n")
    _write_atomic(md_path, markdown)
    return json_path, md_path, markdown


def markdown_report(device: str, peak_gflops: float | None, rows: list[Row], extra: dict) -> str:
    lines = [
        f"## Benchmarks on {device}",
        "",
        f"Peak float32 matmul (JAX, best of 5): {_fmt(peak_gflops, ' GFLOP/s')}. Speedup = PyTorch "
        "ms / JAX ms; GFLOP/s counts matmul FLOPs analytically (benchmarks/flops.py).",
        "",
        f"JAX {extra.get('jax_version')}; PyTorch {extra.get('torch_version')} eager on "
        f"{extra.get('reference_device')}.",
        "",
        "| benchmark | JAX ms | PyTorch ms | speedup | GFLOP/s | % of peak | note |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in rows:
        pct = None if r.peak_fraction is None else 100 * r.peak_fraction
        cells = [
            r.name,
            _fmt(r.jax_ms),
            _fmt(r.ref_ms),
            _fmt(r.speedup, "x"),
            _fmt(r.gflops),
            _fmt(pct, "%"),
            r.note or "",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    for title, key in (("Multi-seed scaling", "scaling"), ("Memory", "memory")):
        if extra.get(key):
            lines += ["", f"### {title}", "", *dict_table(extra[key])]
    return "\n".join(lines) + "\n"


def dict_table(items: list[dict] | dict) -> list[str]:
    if isinstance(items, dict):
        items = [items]
    keys = list(dict.fromkeys(k for item in items for k in item))  # union, in order
    lines = ["| " + " | ".join(keys) + " |", "| " + " | ".join("---" for _ in keys) + " |"]
    for item in items:
        lines.append("| " + " | ".join(_fmt(item.get(k)) for k in keys) + " |")
    return lines


def _fmt(value, suffix: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        digits = 3 if abs(value) < 10 else (1 if abs(value) < 1000 else 0)
        return f"{value:,.{digits}f}{suffix}"
    return f"{value}{suffix}"


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)

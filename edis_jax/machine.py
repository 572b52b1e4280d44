"""What a result depends on besides the code: the stack's versions, the device and the CPU.

Runs record it in summary.json, because wall times mean nothing without the machine, and
`benchmarks.bitwise_check` in its reference, because XLA compiles CPU code for the host's
vector instructions: the same code and versions give other bits on another CPU (the
generator's hashes moved between an AVX-512 and an AVX2 AMD EPYC; the agents' did not).
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

import jax
import mujoco
import numpy as np


def environment() -> dict[str, str]:
    """Versions, device and CPU of this process, as strings (JSON as they are)."""
    return {
        "jax": jax.__version__,
        "numpy": np.__version__,
        "mujoco": mujoco.__version__,
        "device": jax.devices()[0].device_kind,
        "platform": jax.devices()[0].platform,
        "machine": platform.machine(),
        "cpu": cpu(),
        "XLA_FLAGS": os.environ.get("XLA_FLAGS", ""),
    }


def cpu() -> str:
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


def label(env: dict | None) -> str:
    """One short line for a report: the device (the CPU's name on a CPU) and the jax version."""
    if not env:
        return "unrecorded"
    where = env.get("cpu") if env.get("platform") == "cpu" else env.get("device")
    return f"{where or '?'}, jax {env.get('jax', '?')}"

"""Peak memory of a paper-size generator: one retrain and one 10k-row generation, in a fresh
process so that the peak RSS is the generator's alone (not the benchmark run's).

`python -m benchmarks.memory [--quick]` prints one JSON line. The sampler and the diffusion
training are lax.scans whose carries do not grow with the number of steps, so they run here with
few steps (2 sampler steps, 10 training steps): the memory is that of the full-length runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import sys
from pathlib import Path

import jax

from edis_jax import edis
from edis_jax.agents import policy as agent_policy
from edis_jax.config import preset
from edis_jax.data import buffer

OBS_DIM, ACT_DIM = 11, 3  # Hopper: D = 26


def measure(quick: bool = False, preset_name: str = "paper") -> dict:
    """Peak RSS (MB) of this process around a retrain and a generation; device peak on GPUs."""
    from benchmarks.jax_side import make_agent, random_transitions

    paper = preset(preset_name)
    rows = min(1024, paper.diffusion.sample_batch) if quick else paper.diffusion.sample_batch
    dcfg = dataclasses.replace(
        paper.diffusion, num_steps=2, train_steps=10, train_chunk=10, sample_batch=rows
    )
    ecfg = dataclasses.replace(paper.energy, steps=2)
    base_mb = _rss_mb()
    gen = edis.create(jax.random.key(0), OBS_DIM, ACT_DIM, dcfg, ecfg)
    real = buffer.from_transitions(random_transitions(jax.random.key(1), 100_000, OBS_DIM, ACT_DIM))
    online = buffer.from_transitions(
        random_transitions(jax.random.key(2), 10_000, OBS_DIM, ACT_DIM)
    )
    policy = agent_policy("iql", make_agent("iql", OBS_DIM, ACT_DIM))
    gen, _ = jax.jit(edis.retrain)(gen, real, online, policy, jax.random.key(3))
    jax.block_until_ready(gen)
    after_retrain_mb = _rss_mb()
    samples = jax.jit(lambda g, k: edis.generate(g, k, rows))(gen, jax.random.key(4))
    jax.block_until_ready(samples)
    out = {
        "what": f"{preset_name}-size generator ({dcfg.width}x{dcfg.depth} denoiser, 3 energies): "
        f"retrain + generate {rows} rows",
        "baseline_rss_mb": base_mb,
        "peak_rss_after_retrain_mb": after_retrain_mb,
        "peak_rss_mb": max(after_retrain_mb, _rss_mb()),
        "device_peak_mb": None,
    }
    stats = jax.devices()[0].memory_stats() if jax.devices()[0].platform != "cpu" else None
    if stats and "peak_bytes_in_use" in stats:
        out["device_peak_mb"] = stats["peak_bytes_in_use"] / 2**20
    return out


def _rss_mb() -> float:
    """Peak resident memory of this process so far, in MB.

    Linux: VmHWM of /proc/self/status. getrusage's ru_maxrss is not used there because Linux
    carries it over fork and exec, so a child of a large benchmark process would report its
    parent's peak. Elsewhere: ru_maxrss (kilobytes, bytes on macOS).
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    print(json.dumps(measure(parser.parse_args().quick)))


if __name__ == "__main__":
    main()

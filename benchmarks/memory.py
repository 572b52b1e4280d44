"""Peak memory of a paper-size generator: one retrain and one 10k-row generation, in a fresh
process so that the peak RSS is the generator's alone (not the benchmark run's).

`python -m benchmarks.memory [--quick]` prints one JSON line. The sampler and the diffusion
training are lax.scans whose carries do not grow with the number of steps, so they run here with
few steps (2 sampler steps, 10 training steps): the memory is that of the full-length runs.
`run_state` measures a whole multi-seed run state the same way (benchmarks/gpu.py calls it).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import sys
from pathlib import Path

import jax
import jax.numpy as jnp

from edis_jax import agents, generator
from edis_jax.config.presets import preset
from edis_jax.data import buffer
from edis_jax.train import generator_phases

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
    gen = generator.create(jax.random.key(0), OBS_DIM, ACT_DIM, dcfg, ecfg)
    real = buffer.from_transitions(random_transitions(jax.random.key(1), 100_000, OBS_DIM, ACT_DIM))
    online = buffer.from_transitions(
        random_transitions(jax.random.key(2), 10_000, OBS_DIM, ACT_DIM)
    )
    policy = agents.policy(make_agent("iql", OBS_DIM, ACT_DIM))
    gen, _ = jax.jit(generator.retrain)(gen, real, online, policy, jax.random.key(3))
    jax.block_until_ready(gen)
    after_retrain_mb = _rss_mb()
    samples = jax.jit(lambda g, k: generator.generate(g, k, rows))(gen, jax.random.key(4))
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


def run_state(preset_name: str = "paper", seeds: int = 32, offline_rows: int = 1_000_000) -> dict:
    """Device memory of a `seeds`-seed IQL-EDIS run state of `preset_name` (Hopper shapes: the
    real buffer holds `offline_rows` offline rows, D4RL hopper-medium's 1M at paper size, plus
    the preset's online steps, per seed) through what a run does to it: one agent update
    chunk, one generator retrain and one generation of a sample batch per seed. The retrain and
    the sampler run shortened (10 training steps, 2 CEP steps, 16 sampler steps with CEP levels
    every 2nd step: the paper's 8 levels), since their scans' carries do not grow with the
    number of steps. Call it in a fresh process: the device peak is the process's peak.
    `state_mb` counts the state's arrays exactly; `device_peak_mb` is the allocator's
    peak_bytes_in_use, "not available" where the device does not report it (CPU)."""
    from benchmarks.jax_side import random_transitions
    from edis_jax.config import with_values
    from edis_jax.train import state as S

    cfg = with_values(preset(preset_name), {
        "seeds": seeds, "diffusion.train_steps": 10, "diffusion.train_chunk": 10,
        "diffusion.num_steps": 16, "energy.level_stride": 2, "energy.steps": 2,
        "energy.bank_refreshes": 1,
    })  # fmt: skip
    offline = random_transitions(jax.random.key(0), offline_rows, OBS_DIM, ACT_DIM)
    state = S.init_state(cfg, offline, 1.0)
    # Online rows for CEP's positives: the online buffer at its full capacity, 10% filled.
    online = random_transitions(
        jax.random.key(1), max(cfg.online_steps // 10, 1000), OBS_DIM, ACT_DIM
    )
    online = buffer.from_transitions(online, max(cfg.online_steps, len(online)))
    state = state.replace(
        online=jax.tree.map(lambda x: jnp.broadcast_to(x, (seeds, *x.shape)), online)
    )
    state_mb = {
        part: sum(x.nbytes for x in jax.tree.leaves(getattr(state, part))) / 2**20
        for part in ("agent", "generator", "real", "online", "synthetic")
    }
    keys = S.seed_keys(cfg)
    state, _ = S.update_chunk(state, keys, num_updates=10, batch_size=cfg.batch_size)
    policy = agents.policy(state.agent)
    gen, _ = generator_phases.retrain(
        state.generator, state.real, state.online, policy, keys, progress=False
    )
    samples, _ = generator_phases.generate(gen, keys, cfg.diffusion.sample_batch, progress=False)
    jax.block_until_ready(samples)
    stats = jax.devices()[0].memory_stats() or {}
    peak = stats.get("peak_bytes_in_use")
    return {
        "what": f"{seeds}-seed {preset_name}-size IQL-EDIS run state ({offline_rows} offline + "
        f"{cfg.online_steps} online rows per seed, {cfg.diffusion.width}x{cfg.diffusion.depth} "
        f"denoiser): update chunk + retrain + generate {cfg.diffusion.sample_batch} rows per seed",
        "state_mb": sum(state_mb.values()),
        **{f"{part}_mb": mb for part, mb in state_mb.items()},
        "device_peak_mb": "not available" if peak is None else peak / 2**20,
        "peak_rss_mb": _rss_mb(),
    }


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

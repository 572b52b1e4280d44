"""`python -m benchmarks.run [--quick]`: edis-jax against the PyTorch eager reference.

Writes benchmarks/results/<device>.json ({"device", "peak_matmul_gflops", "rows": [{"name",
"jax_ms", "ref_ms", "speedup", "gflops", "peak_fraction", "note"}...], plus "scaling",
"memory" and run details) and <device>.md, and prints the markdown. `--quick` shrinks every
size so the whole run takes a couple of minutes, and writes <device>-quick.* instead.

Shapes are Hopper's (ds = 11, da = 3, D = 26). PyTorch runs with as many threads as XLA uses
(every core this process may use); without PyTorch the reference columns are null.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import jax

from benchmarks import flops, harness
from benchmarks.harness import Row
from edis_jax.config import preset

OBS_DIM, ACT_DIM = 11, 3  # Hopper
DATA_DIM = 2 * OBS_DIM + ACT_DIM + 1
ENV_ID = "Hopper-v5"
RESULTS = Path(__file__).resolve().parent / "results"


@dataclasses.dataclass(frozen=True)
class Sizes:
    """What is measured. The defaults are the full benchmark (~15 min on 2 CPU cores)."""

    samples: int = 10_000  # rows of the large sampler rows
    small_batch: int = 256  # rows of the small sampler rows
    sampler_steps: int = 128  # Heun steps (JAX always runs all of them)
    # The PyTorch sampler on `samples` rows is timed at this many steps and scaled by the
    # ratio of denoiser calls (paper size: ~5 min at 128 steps on 2 cores).
    ref_steps_paper: int = 16
    ref_steps_cpu: int = 32
    train_chunk: int = 1000
    ref_train_steps: int = 30  # PyTorch training steps timed (mean per step)
    agent_updates: int = 1000
    ref_updates: tuple[tuple[str, int], ...] = (("iql", 200), ("sac", 200), ("calql", 40))
    cep_chunk: int = 20  # CEP steps per retrain (EnergyConfig.steps)
    online_steps: tuple[tuple[int, int], ...] = ((1, 200), (20, 20))  # (U, steps timed)
    scaling_seeds: tuple[int, ...] = (1, 2, 4, 8)
    scaling_updates: int = 1000
    scaling_rows: int = 2048  # rows per seed of the scaling sampler (cpu preset's sample_batch)
    repeats: int = 3  # best of, for rows shorter than a few seconds

    def quick(self) -> Sizes:
        return dataclasses.replace(
            self, samples=1024, sampler_steps=16, ref_steps_paper=4, ref_steps_cpu=4,
            train_chunk=50, ref_train_steps=5, agent_updates=100,
            ref_updates=(("iql", 20), ("sac", 20), ("calql", 5)), online_steps=((1, 20), (20, 3)),
            scaling_updates=50, scaling_rows=256, repeats=1,
        )  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="edis-jax benchmarks against PyTorch eager")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, a couple of minutes")
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch reference")
    parser.add_argument("--only", default="", help="run only rows whose name contains this")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    args = parser.parse_args(argv)
    sizes = Sizes().quick() if args.quick else Sizes()
    record, markdown = run(
        sizes, args.out, quick=args.quick, torch=not args.no_torch, only=args.only
    )
    print(markdown)
    print(f"wrote {record['json_path']} and {record['md_path']} in {record['wall_s']:.0f} s")


def run(
    sizes: Sizes,
    out_dir: Path,
    *,
    quick: bool,
    torch: bool = True,
    only: str = "",
    memory: bool = True,
    log: Callable[[str], None] = print,
) -> tuple[dict, str]:
    """Measure everything in `sizes`, write the JSON and markdown files; return (record, md)."""
    start = time.perf_counter()
    ref = _torch_reference(torch, log)
    device = harness.device_name()
    peak = harness.peak_matmul_gflops(8192 if jax.devices()[0].platform == "gpu" else 4096)
    log(f"{harness.device_description()}: peak float32 matmul {peak:.1f} GFLOP/s")
    suite = _Suite(sizes, ref, peak, only, log)
    rows = suite.rows()
    extra = {
        "threads": harness.cpu_threads(),
        "jax_version": jax.__version__,
        "torch_version": None if ref is None else ref.torch.__version__,
        "quick": quick,
        "sizes": dataclasses.asdict(sizes),
        "scaling": suite.scaling() if not only or "seeds" in only else [],
        "memory": _memory(quick, log) if memory and not only else None,
    }
    extra["wall_s"] = time.perf_counter() - start
    stem = device + ("-quick" if quick else "")
    json_path, md_path, markdown = harness.write_results(out_dir, stem, device, peak, rows, extra)
    return {**extra, "json_path": str(json_path), "md_path": str(md_path), "rows": rows}, markdown


class _Suite:
    def __init__(self, sizes: Sizes, ref, peak: float, only: str, log):
        self.s, self.ref, self.peak, self.only, self.log = sizes, ref, peak, only, log
        paper, cpu = preset("paper"), preset("cpu")
        steps = sizes.sampler_steps
        self.paper = dataclasses.replace(paper.diffusion, num_steps=steps)
        self.cpu = dataclasses.replace(cpu.diffusion, num_steps=steps)
        self.energy = paper.energy
        self.cpu_energy = cpu.energy

    def rows(self) -> list[Row]:
        from benchmarks import jax_side as J

        s, out = self.s, []
        for size, dcfg, ref_steps in (
            ("paper", self.paper, s.ref_steps_paper),
            ("cpu", self.cpu, s.ref_steps_cpu),
        ):
            for n in (s.samples, s.small_batch):
                for guided in (True, False):
                    if n == s.small_batch and not guided:
                        continue
                    name = (
                        f"{'guided' if guided else 'unguided'} sampler, {size} size "
                        f"({dcfg.width}x{dcfg.depth}), {n} rows, {dcfg.num_steps} steps"
                    )
                    out.append(self._row(
                        name,
                        lambda dcfg=dcfg, n=n, g=guided: J.sampler_timing(OBS_DIM, ACT_DIM, dcfg, self.energy, n, g, 1 if n > 1000 else s.repeats),
                        lambda dcfg=dcfg, n=n, g=guided, rs=ref_steps: self.ref.sampler_ms(
                            OBS_DIM, ACT_DIM, dcfg, self.energy, n, g, rs if n > 1000 else None),
                        flops=flops.sampler_flops(n, DATA_DIM, dcfg, self.energy, guided),
                    ))  # fmt: skip
        for size, dcfg in (("paper", self.paper), ("cpu", self.cpu)):
            out.append(self._row(
                f"diffusion train step, {size} size ({dcfg.width}x{dcfg.depth}), batch {dcfg.batch_size}",
                lambda dcfg=dcfg: J.diffusion_step_timing(DATA_DIM, dcfg, max(s.repeats, 5)),
                lambda dcfg=dcfg: self.ref.diffusion_train_ms(DATA_DIM, dcfg, s.ref_train_steps),
                flops=flops.diffusion_train_step_flops(dcfg.batch_size, DATA_DIM, dcfg),
            ))  # fmt: skip
        out.append(self._row(
            f"diffusion train chunk, paper size, {s.train_chunk} steps, batch {self.paper.batch_size}",
            lambda: J.diffusion_chunk_timing(OBS_DIM, ACT_DIM, self.paper, s.train_chunk, 1),
            lambda: s.train_chunk * self.ref.diffusion_train_ms(DATA_DIM, self.paper, s.ref_train_steps),
            flops=s.train_chunk * flops.diffusion_train_step_flops(self.paper.batch_size, DATA_DIM, self.paper),
            ref_note=f"ref: mean of {s.ref_train_steps} steps x {s.train_chunk}",
        ))  # fmt: skip
        e = self.energy
        for steps in (1, s.cep_chunk):
            out.append(self._row(
                f"CEP {'step' if steps == 1 else f'chunk of {steps} steps'}, 3 energies, batch {e.batch_size}, K={e.num_negatives}",
                lambda steps=steps: J.cep_timing(OBS_DIM, ACT_DIM, self.paper, e, steps, max(s.repeats, 5)),
                lambda steps=steps: steps * self.ref.cep_step_ms(OBS_DIM, ACT_DIM, self.paper, e, max(10, steps)),
            ))  # fmt: skip
        for algo, ref_updates in s.ref_updates:
            out.append(self._row(
                f"{algo.upper() if algo != 'calql' else 'Cal-QL'} update chunk, {s.agent_updates} updates, batch 256",
                lambda algo=algo: J.agent_chunk_timing(algo, OBS_DIM, ACT_DIM, s.agent_updates, s.repeats),
                lambda algo=algo, n=ref_updates: s.agent_updates * self.ref.agent_update_ms(
                    algo, _agent_config(algo), OBS_DIM, ACT_DIM, n),
                ref_note=f"ref: mean of {ref_updates} updates x {s.agent_updates}",
            ))  # fmt: skip
        for utd, steps in s.online_steps:
            out.append(self._row(
                f"online step, 1 seed, IQL, {ENV_ID}: act + env step + store + {utd} update(s)",
                lambda utd=utd, steps=steps: J.online_step_timing(ENV_ID, "iql", utd, steps),
                lambda utd=utd, steps=steps: self.ref.online_step_ms(ENV_ID, "iql", _agent_config("iql"), utd, steps),
            ))  # fmt: skip
        return [r for r in out if r is not None]

    def scaling(self) -> list[dict]:
        """Updates/s and samples/s for N vmapped seeds against N sequential one-seed runs (the
        same one-seed program called N times: N x its measured time)."""
        from benchmarks import jax_side as J

        s = self.s
        seeds = s.scaling_seeds + ((32,) if jax.devices()[0].platform != "cpu" else ())
        cpu_sampler = dataclasses.replace(
            preset("cpu").diffusion,
            num_steps=8 if s.samples < 10_000 else preset("cpu").diffusion.num_steps,
        )
        workloads = [
            (f"IQL update chunk ({s.scaling_updates} updates, batch 256)", s.scaling_updates, "updates/s",
             lambda n: J.agent_chunk_timing("iql", OBS_DIM, ACT_DIM, s.scaling_updates, s.repeats, seeds=n)),
            (f"guided sampler, cpu size, {s.scaling_rows} rows/seed, {cpu_sampler.num_steps} steps", s.scaling_rows, "samples/s",
             lambda n: J.sampler_seeds_timing(OBS_DIM, ACT_DIM, cpu_sampler, self.cpu_energy, s.scaling_rows, n, 1)),
        ]  # fmt: skip
        out = []
        for name, units, unit_name, timing in workloads:
            try:
                single = timing(None).ms
                self.log(f"  {name}: 1 seed unvmapped {single:.1f} ms")
                for n in seeds:
                    vmapped = timing(n).ms
                    rate = n * units / (vmapped / 1e3)
                    out.append({
                        "workload": name, "seeds": n, "vmapped_ms": vmapped,
                        "sequential_ms": n * single, unit_name.replace("/", "_per_"): rate,
                        "per_seed_rate_vs_1_seed": n * single / vmapped,
                    })  # fmt: skip
                    self.log(
                        f"  {name}: {n} seeds {vmapped:.1f} ms ({n * single / vmapped:.2f}x sequential)"
                    )
            except Exception as error:  # keep the rest of the benchmark
                self.log(f"  {name}: FAILED {error!r}")
                out.append({"workload": name, "error": repr(error)})
        return out

    def _row(self, name, jax_fn, ref_fn, *, flops=None, ref_note=None) -> Row | None:
        if self.only and self.only not in name:
            return None
        self.log(f"- {name}")
        notes, jax_ms, ref_ms = [], None, None
        try:
            timing = jax_fn()
            jax_ms = timing.ms
            notes.append(f"compile {timing.compile_s:.1f} s")
            self.log(f"    jax {jax_ms:.2f} ms (compile {timing.compile_s:.1f} s)")
        except Exception as error:
            notes.append(f"JAX failed: {error!r}"[:300])
            self.log(f"    JAX FAILED: {traceback.format_exc()}")
        if self.ref is not None:
            try:
                value = ref_fn()
                ref_ms, note = value if isinstance(value, tuple) else (value, None)
                notes += [n for n in (note, ref_note) if n]
                self.log(f"    ref {ref_ms:.2f} ms")
            except Exception as error:
                notes.append(f"ref failed: {error!r}"[:300])
                self.log(f"    ref FAILED: {traceback.format_exc()}")
        return Row.make(
            name, jax_ms, ref_ms, flops=flops, peak_gflops=self.peak, note="; ".join(notes) or None
        )


def _agent_config(algo: str):
    return getattr(preset("paper"), algo)


def _torch_reference(enabled: bool, log):
    """The torch_reference module, set up with XLA's thread count; None without torch."""
    if not enabled:
        return None
    try:
        from benchmarks import torch_reference
    except ImportError:
        log("PyTorch is not installed (pip install -e '.[bench]'): reference columns are null")
        return None
    torch_reference.setup(harness.cpu_threads(), gpu=jax.devices()[0].platform == "gpu")
    return torch_reference


def _memory(quick: bool, log) -> dict | None:
    """Peak memory of the paper-size generator, measured in a fresh process."""
    command = [sys.executable, "-m", "benchmarks.memory"] + (["--quick"] if quick else [])
    root = Path(__file__).resolve().parents[1]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])),
    }
    done = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=1200)
    if done.returncode != 0:
        log(f"memory measurement failed: {done.stderr[-2000:]}")
        return {"error": done.stderr[-500:]}
    result = json.loads(done.stdout.strip().splitlines()[-1])
    log(f"memory: {result}")
    return result


if __name__ == "__main__":
    main()

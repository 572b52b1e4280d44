"""`python -m benchmarks.run [--quick]`: edis-jax against the PyTorch eager reference.

Writes benchmarks/results/<device>.json ({"device", "peak_matmul_gflops", "rows": [{"name",
"jax_ms", "ref_ms", "speedup", "gflops", "peak_fraction", "note"}...], plus "scaling",
"memory" and run details) and <device>.md, and prints the markdown. `--quick` shrinks every
size so the whole run takes a couple of minutes, and writes <device>-quick.* instead.

A full run (no --only) also measures both env backends (benchmarks/env_backends.py, its own
env_backends_<device>.* files; the record names them).

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
import numpy as np

from benchmarks import flops, harness
from benchmarks import jax_side as J
from benchmarks.harness import Row
from edis_jax.config.presets import preset

OBS_DIM, ACT_DIM = 11, 3  # Hopper
DATA_DIM = 2 * OBS_DIM + ACT_DIM + 1
ENV_ID = "Hopper-v5"
RESULTS = Path(__file__).resolve().parent / "results"


@dataclasses.dataclass(frozen=True)
class Sizes:
    """What is measured. The defaults are the full benchmark (~15 min on 2 quiet CPU cores)."""

    # Denoiser sizes: the presets whose diffusion/energy configs are measured, each with the
    # number of sampler steps at which PyTorch times the large sampler rows and at which JAX
    # times the large unguided row (0: all steps), scaled to the full count by the ratio of
    # denoiser calls (paper size at 128 steps is ~5 min on 2 cores). JAX runs the cpu size in
    # full: a few-step run of a small model is too short to time reliably.
    # The first preset also sizes the train chunk and the CEP rows.
    models: tuple[tuple[str, int, int], ...] = (("paper", 16, 32), ("cpu", 32, 0))
    samples: int = 10_000  # rows of the large sampler rows
    small_batch: int = 256  # rows of the small sampler rows
    sampler_steps: int = 128  # Heun steps (JAX always runs all of them)
    train_chunk: int = 1000
    ref_train_steps: int = 30  # PyTorch training steps timed (mean per step)
    agent_preset: str = "paper"  # agent configs (256x256 networks)
    agent_batch: int = 256
    agent_updates: int = 1000
    ref_updates: tuple[tuple[str, int], ...] = (("iql", 200), ("sac", 200), ("calql", 40))
    cep_chunk: int = 20  # CEP steps per retrain (EnergyConfig.steps)
    online_steps: tuple[tuple[int, int], ...] = ((1, 200), (20, 20))  # (U, steps per round)
    online_rounds: int = 5  # JAX and reference rounds alternate: drift hits both alike
    scaling_seeds: tuple[int, ...] = (1, 2, 4, 8)  # plus 32 on a GPU
    scaling_updates: int = 1000
    scaling_preset: str = "cpu"  # the generator of the sampler scaling rows (its num_steps)
    scaling_rows: int = 2048  # rows per seed (the cpu preset's sample_batch)
    repeats: int = 3  # best of, for rows shorter than a few seconds
    peak_n: int = 4096  # the peak matmul is peak_n x peak_n (twice that on a GPU)

    def quick(self) -> Sizes:
        """A couple of minutes on 2 quiet cores: same presets, fewer rows, steps and updates."""
        return dataclasses.replace(
            self, models=(("paper", 4, 4), ("cpu", 4, 0)), samples=1024, sampler_steps=16,
            train_chunk=50, ref_train_steps=5, agent_updates=100,
            ref_updates=(("iql", 20), ("sac", 20), ("calql", 5)), online_steps=((1, 20), (20, 3)),
            online_rounds=3,
            scaling_updates=50, scaling_rows=256, repeats=1,
        )  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="edis-jax benchmarks against PyTorch eager")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, a couple of minutes")
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch reference")
    parser.add_argument(
        "--only", default="", help="run only rows whose name contains one of these ('|'-separated)"
    )
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
    backends: bool = True,
    log: Callable[[str], None] = print,
) -> tuple[dict, str]:
    """Measure everything in `sizes`, write the JSON and markdown files; return (record, md)."""
    start = time.perf_counter()
    ref = load_reference(torch, log)
    device = harness.device_name()
    on_gpu = jax.devices()[0].platform == "gpu"
    peak = harness.peak_matmul_gflops(sizes.peak_n * (2 if on_gpu else 1))
    log(f"{harness.device_description()}: peak float32 matmul {peak:.1f} GFLOP/s")
    suite = Suite(sizes, ref, peak, only, log)
    rows = suite.rows()
    extra = {
        "threads": harness.cpu_threads(),
        "jax_version": jax.__version__,
        "torch_version": None if ref is None else ref.torch.__version__,
        "reference_device": None if ref is None else ref.device_label(),
        "quick": quick,
        "sizes": dataclasses.asdict(sizes),
        "scaling": suite.scaling(),
        "memory": _memory(quick, log) if memory and not only else None,
    }
    if backends and not only:  # both env backends, in their own files (env_backends.py)
        from benchmarks import env_backends

        sizes_b = env_backends.Sizes().quick() if quick else env_backends.Sizes()
        extra["env_backends"] = env_backends.run(sizes_b, out_dir, quick=quick, log=log)["md_path"]
    extra["wall_s"] = time.perf_counter() - start
    # Quick and partial (--only) runs never overwrite the full results.
    stem = device + ("-quick" if quick else "") + ("-partial" if only else "")
    json_path, md_path, markdown = harness.write_results(out_dir, stem, device, peak, rows, extra)
    return {**extra, "json_path": str(json_path), "md_path": str(md_path), "rows": rows}, markdown


class Suite:
    """The rows and the seed scaling of `sizes`; `on_row(row)`, if given, receives each row as
    soon as it is measured (benchmarks/gpu.py saves them as they come, to keep them on a kill)."""

    def __init__(self, sizes: Sizes, ref, peak: float, only: str, log, on_row=None):
        self.s, self.ref, self.peak, self.only, self.log = sizes, ref, peak, only, log
        self.on_row = on_row

    def rows(self) -> list[Row]:
        s, out = self.s, []
        for name, ref_steps, jax_steps in s.models:
            cfg = preset(name)
            dcfg, ecfg = dataclasses.replace(cfg.diffusion, num_steps=s.sampler_steps), cfg.energy
            size = f"{name} size ({dcfg.width}x{dcfg.depth})"
            for n, guided in ((s.samples, True), (s.samples, False), (s.small_batch, True)):
                big = n > s.small_batch
                out.append(self._row(
                    f"{'guided' if guided else 'unguided'} sampler, {size}, {n} rows, {dcfg.num_steps} steps",
                    lambda d=dcfg, e=ecfg, n=n, g=guided, big=big, js=jax_steps: J.sampler_timing(
                        OBS_DIM, ACT_DIM, d, e, n, g, 1 if big else s.repeats,
                        js if big and not g and js else None),
                    lambda d=dcfg, e=ecfg, n=n, g=guided, big=big, rs=ref_steps: self.ref.sampler_ms(
                        OBS_DIM, ACT_DIM, d, e, n, g, rs if big else None),
                    flops=flops.sampler_flops(n, DATA_DIM, dcfg, ecfg, guided),
                ))  # fmt: skip
            out.append(self._row(
                f"diffusion train step, {size}, batch {dcfg.batch_size}",
                lambda d=dcfg: J.diffusion_step_timing(DATA_DIM, d, max(s.repeats, 5)),
                lambda d=dcfg: self.ref.diffusion_train_ms(DATA_DIM, d, s.ref_train_steps),
                flops=flops.diffusion_train_step_flops(dcfg.batch_size, DATA_DIM, dcfg),
            ))  # fmt: skip
        first = preset(s.models[0][0])
        dcfg, ecfg = first.diffusion, first.energy
        size = f"{s.models[0][0]} size ({dcfg.width}x{dcfg.depth})"
        out.append(self._row(
            f"diffusion train chunk, {size}, {s.train_chunk} steps, batch {dcfg.batch_size}",
            lambda: J.diffusion_chunk_timing(OBS_DIM, ACT_DIM, dcfg, s.train_chunk, 1),
            lambda: s.train_chunk * self.ref.diffusion_train_ms(DATA_DIM, dcfg, s.ref_train_steps),
            flops=s.train_chunk * flops.diffusion_train_step_flops(dcfg.batch_size, DATA_DIM, dcfg),
            ref_note=f"ref: mean of {s.ref_train_steps} steps x {s.train_chunk}",
        ))  # fmt: skip
        for steps in (1, s.cep_chunk):
            what = "step" if steps == 1 else f"chunk of {steps} steps"
            out.append(self._row(
                f"CEP {what}, 3 energies, batch {ecfg.batch_size}, K={ecfg.num_negatives}",
                lambda n=steps: J.cep_timing(OBS_DIM, ACT_DIM, dcfg, ecfg, n, max(s.repeats, 5)),
                lambda n=steps: n * self.ref.cep_step_ms(OBS_DIM, ACT_DIM, dcfg, ecfg, max(10, n)),
                ref_note=None if steps == 1 else f"ref: mean of {max(10, steps)} steps x {steps}",
            ))  # fmt: skip
        agent_cfg = preset(s.agent_preset)
        for algo, ref_updates in s.ref_updates:
            label = {"iql": "IQL", "sac": "SAC", "calql": "Cal-QL"}[algo]
            out.append(self._row(
                f"{label} update chunk, {s.agent_updates} updates, batch {s.agent_batch}",
                lambda a=algo: J.agent_chunk_timing(
                    a, OBS_DIM, ACT_DIM, s.agent_updates, s.repeats, config=getattr(agent_cfg, a),
                    batch_size=s.agent_batch),
                lambda a=algo, n=ref_updates: s.agent_updates * self.ref.agent_update_ms(
                    a, getattr(agent_cfg, a), OBS_DIM, ACT_DIM, n, s.agent_batch),
                flops=s.agent_updates * flops.agent_update_flops(
                    algo, getattr(agent_cfg, algo), OBS_DIM, ACT_DIM, s.agent_batch),
                ref_note=f"ref: mean of {ref_updates} updates x {s.agent_updates}",
            ))  # fmt: skip
        for utd, steps in s.online_steps:
            out.append(self._online_step_row(utd, steps))
        return [r for r in out if r is not None]

    def scaling(self) -> list[dict]:
        """Throughput of N vmapped seeds against N sequential one-seed runs (the one-seed
        program, unvmapped, called N times: N x its measured time). Per entry: `rate` (total
        updates or samples per second over all seeds), `per_seed_rate` (rate / N) and
        `vs_sequential` = N t_1 / t_N (1.0: vmapping N seeds is exactly as fast as running them
        one after the other; N: they cost no more than one seed)."""
        s = self.s
        on_gpu = jax.devices()[0].platform != "cpu"
        seeds = s.scaling_seeds + ((32,) if on_gpu and 32 not in s.scaling_seeds else ())
        iql = preset(s.agent_preset).iql
        gen_cfg = preset(s.scaling_preset)
        dcfg, ecfg = gen_cfg.diffusion, gen_cfg.energy
        workloads = [
            (f"IQL update chunk ({s.scaling_updates} updates, batch {s.agent_batch})",
             s.scaling_updates, "updates/s",
             lambda n: J.agent_chunk_timing("iql", OBS_DIM, ACT_DIM, s.scaling_updates, s.repeats,
                                            seeds=n, config=iql, batch_size=s.agent_batch)),
            (f"guided sampler, {s.scaling_preset} size ({dcfg.width}x{dcfg.depth}), "
             f"{s.scaling_rows} rows/seed, {dcfg.num_steps} steps", s.scaling_rows, "samples/s",
             lambda n: J.sampler_seeds_timing(OBS_DIM, ACT_DIM, dcfg, ecfg, s.scaling_rows, n, 1)),
        ]  # fmt: skip
        out = []
        for name, units, unit, timing in workloads:
            if not self._selected(name):
                continue
            self.log(f"- scaling: {name}")
            try:
                single = timing(None).ms
                self.log(f"    1 seed, not vmapped: {single:.1f} ms")
                for n in seeds:
                    vmapped = timing(n).ms
                    rate = n * units / (vmapped / 1e3)
                    out.append({
                        "workload": name, "unit": unit, "seeds": n, "vmapped_ms": vmapped,
                        "sequential_ms": n * single, "rate": rate, "per_seed_rate": rate / n,
                        "vs_sequential": n * single / vmapped,
                    })  # fmt: skip
                    self.log(
                        f"    {n} seeds vmapped: {vmapped:.1f} ms ({n * single / vmapped:.2f}x sequential)"
                    )
            except Exception as error:  # keep the rest of the benchmark
                self.log(f"    FAILED: {traceback.format_exc()}")
                out.append({"workload": name, "error": repr(error)[:300]})
        return out

    def _selected(self, name: str) -> bool:
        wanted = [w.strip() for w in self.only.split("|") if w.strip()]
        return not wanted or any(w in name for w in wanted)

    def _online_step_row(self, utd: int, steps: int) -> Row | None:
        """The online step, JAX and reference timed in alternating rounds of `steps` steps
        (this machine's speed drifts by tens of percent within minutes); each side's median."""
        name = f"online step, 1 seed, IQL, {ENV_ID}: act + env step + store + {utd} update(s)"
        if not self._selected(name):
            return None
        self.log(f"- {name}")
        s, config = self.s, preset(self.s.agent_preset).iql
        jax_loop = ref_loop = None
        notes, jax_ms, ref_ms = [], None, None
        try:
            capacity = 2 * s.online_rounds * steps  # each round: the loop, then device-only
            jax_loop = J.OnlineStepLoop(
                ENV_ID, "iql", utd, capacity, config=config, batch_size=s.agent_batch
            )
            if self.ref is not None:
                try:
                    ref_loop = self.ref.OnlineStepLoop(ENV_ID, "iql", config, utd, s.agent_batch)
                except Exception as error:  # keep the JAX side
                    notes.append(f"ref failed: {error!r}"[:300])
                    self.log(f"    ref FAILED: {traceback.format_exc()}")
            rounds = []  # (jax ms, env ms, device-only ms, ref ms or None)
            for _ in range(s.online_rounds):
                ms, env_ms = jax_loop.run(steps)
                device_ms = jax_loop.device_ms(steps)
                rounds.append((ms, env_ms, device_ms, ref_loop.run(steps) if ref_loop else None))
            # The median JAX round (the upper one of an even count), split into its own parts.
            jax_ms, env_ms, device_ms, _ = sorted(rounds)[len(rounds) // 2]
            notes.insert(0, f"compile {jax_loop.compile_s:.1f} s")
            notes.append(f"median of {s.online_rounds} alternating rounds of {steps} steps")
            if ref_loop is not None:
                ref_ms = float(np.median([r[3] for r in rounds]))
                per_round = [r[3] / r[0] for r in rounds]
                notes.append(f"speedup per round {min(per_round):.2f}-{max(per_round):.2f}x")
            notes.append(
                f"split: env {env_ms:.3f}, transfer {jax_ms - env_ms - device_ms:.3f}, "
                f"update {device_ms:.3f} ms"
            )
            self.log(f"    jax {jax_ms:.2f} ms" + (f", ref {ref_ms:.2f} ms" if ref_ms else ""))
        except Exception as error:  # keep the rest of the benchmark
            notes.append(f"JAX failed: {error!r}"[:300])
            self.log(f"    JAX FAILED: {traceback.format_exc()}")
        finally:
            for loop in (jax_loop, ref_loop):
                if loop is not None:
                    loop.close()
        return self._emit(
            Row.make(name, jax_ms, ref_ms, peak_gflops=self.peak, note="; ".join(notes))
        )

    def _row(self, name, jax_fn, ref_fn, *, flops=None, ref_note=None) -> Row | None:
        if not self._selected(name):
            return None
        self.log(f"- {name}")
        notes, jax_ms, ref_ms = [], None, None
        try:
            timing = jax_fn()
            jax_ms = timing.ms
            notes += [f"compile {timing.compile_s:.1f} s"] + ([timing.note] if timing.note else [])
            self.log(f"    jax {jax_ms:.2f} ms (compile {timing.compile_s:.1f} s)")
        except Exception as error:  # keep the rest of the benchmark
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
        return self._emit(Row.make(
            name, jax_ms, ref_ms, flops=flops, peak_gflops=self.peak, note="; ".join(notes) or None
        ))  # fmt: skip

    def _emit(self, row: Row) -> Row:
        """Hand a finished row to `on_row` (the GPU run saves as it goes), and return it."""
        if self.on_row is not None:
            self.on_row(row)
        return row


def load_reference(enabled: bool, log):
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

"""`python -m benchmarks.fidelity_scale`: does a bigger or longer-trained generator reach #10's
dynamics-error target (unguided synthetic rows at most 5x real data's error)?

The `cpu` preset's generator (256x4, 15k warm-start steps, 3k per retrain) leaves the unguided
dynamics error at 9.4x real data's (docs/generator_fidelity.md). This script measures the same
quantity, with `diagnose.run_diagnose` after `--retrains 3`, over a grid of model size x training
steps, two seeds each: on a GPU the paper-size model and long training cost seconds.

Only the unguided row is generated: the dynamics error of unguided rows does not depend on the
energies or the policy, so CEP runs its minimum and the policy is a short behaviour clone (its
action log-likelihood column is not meaningful here and is not reported).

`--transition` asks #10's other open question at each size: does the transition energy E_t,
trained with the `cpu` preset's CEP, lower the dynamics error there? It adds the row guided by
E_t alone (at the preset's w_t) and E_t's alignment: the cosine of its gradient with the needed
s' correction on held-out online rows and on the unguided chain's own rows (diagnose's
`transition_alignment`). `--settings` picks rows of the grid by label and runs them in the
order given.

The target (the online data of retrains 1..3) is a `.npz` of transitions written by
`--export-target RUN_DIR` (seed 0's online buffer), so a GPU machine needs no run directory.
Results go to `--out` as JSON after every setting (a timeout keeps the finished rows) and as a
markdown table at the end.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np

# (label, width, depth, initial_steps, train_steps per retrain), the most telling first: the
# biggest generator (does scale reach the target at all?), then the cpu preset (the baseline).
GRID = (
    ("paper size, 4x steps", 1024, 6, 60_000, 12_000),
    ("cpu preset", 256, 4, 15_000, 3_000),
    ("paper size", 1024, 6, 15_000, 3_000),
    ("cpu size, 4x steps", 256, 4, 60_000, 12_000),
)
TINY_GRID = (("tiny", 64, 2, 200, 100),)
FIELDS = ("obs", "action", "reward", "next_obs", "terminal", "mc_return")


def export_target(run_dir: str, path: str) -> None:
    """Seed 0's online buffer in RUN_DIR's newest checkpoint as an .npz of Transition fields.

    Read as a raw orbax tree, so runs saved by older versions of the agents still export."""

    import orbax.checkpoint as ocp

    from edis_jax.data.datasets import load_dataset
    from edis_jax.storage import checkpoint
    from edis_jax.train.directory import read_config

    step = checkpoint.latest_step(Path(run_dir))
    if step is None:
        raise SystemExit(
            f"fidelity_scale: {run_dir} has no checkpoint to export: give the folder of a run "
            "that has trained online (e.g. runs/comparison/iql)"
        )
    step_dir = Path(run_dir, checkpoint.CHECKPOINT_DIR, str(step))
    online = ocp.PyTreeCheckpointer().restore(step_dir.resolve() / "state")["online"]
    size = int(online["size"][0])
    rows = {f: np.asarray(online["data"][f][0, :size]) for f in FIELDS}
    env_id = load_dataset(read_config(Path(run_dir)).dataset).env_id
    np.savez(path, env_id=env_id, **rows)
    print(f"wrote {path}: {size} online rows of {env_id} from {step_dir}")


def read_target(path: str, env_id: str):
    """The target rows `export_target` wrote, as a Transition; one line if they are missing or
    of another env than the dataset's."""
    from edis_jax.data.transition import Transition

    if not Path(path).is_file():
        raise SystemExit(
            f"fidelity_scale: no target rows at {path}: write them with "
            "`python -m benchmarks.fidelity_scale --export-target RUN_DIR`, or pass --target FILE"
        )
    with np.load(path) as z:
        if str(z["env_id"]) != env_id:
            raise SystemExit(
                f"fidelity_scale: {path} holds {z['env_id']} rows but the dataset is {env_id}'s: "
                "export a target from a run on this dataset, or pass its --dataset"
            )
        return Transition(**{f: z[f] for f in FIELDS})


def _markdown(results: list[dict]) -> str:
    lines = [
        "| setting | width x depth | pretraining + per-retrain steps | seed | dyn. error "
        "| offline data's | ratio | diffusion loss | seconds |",
        "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    guided = any("transition_dynamics_error" in r for r in results)
    if guided:
        lines[0] += " E_t: dyn. error | cos, held-out rows | cos, model rows |"
        lines[1] += " ---: | ---: | ---: |"
    for r in results:
        line = (
            f"| {r['label']} | {r['width']}x{r['depth']} | {r['initial_steps']} + "
            f"{r['train_steps']} | {r['seed']} | {r['dynamics_error']:.3f} | "
            f"{r['offline_dynamics_error']:.3f} | {r['ratio']:.1f}x | "
            f"{r['diffusion_loss']:.4f} | {r['seconds']:.0f} |"
        )
        if guided:
            line += (
                f" {r['transition_dynamics_error']:.3f} | {r['heldout_cos']:+.3f} |"
                f" {r['model_rows_cos']:+.3f} |"
            )
        lines.append(line)
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="local/hopper/medium-v0")
    p.add_argument("--target", default="runs/fidelity_target.npz")
    p.add_argument("--export-target", metavar="RUN_DIR")
    p.add_argument("--out", default="runs/fidelity_scale")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--tiny", action="store_true", help="one tiny setting (a CPU check)")
    p.add_argument("--budget-s", type=float, default=300.0)
    p.add_argument("--transition", action="store_true", help="also E_t's row and alignment")
    p.add_argument("--settings", nargs="+", help="grid rows to run, by label, in this order")
    args = p.parse_args()
    if args.export_target:
        export_target(args.export_target, args.target)
        return

    import jax

    from edis_jax.config.presets import preset
    from edis_jax.data.datasets import load_dataset
    from edis_jax.diagnose import run_diagnose

    start = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    offline = load_dataset(args.dataset)
    target = read_target(args.target, offline.env_id)
    base = preset("cpu")
    device = jax.devices()[0].device_kind
    results, seconds_of = [], {}
    grid = TINY_GRID if args.tiny else GRID
    if args.settings:  # in the order given: a budget cut drops the last
        unknown = set(args.settings) - {r[0] for r in grid}
        if unknown:
            p.error(f"unknown settings {sorted(unknown)}: choose from {[r[0] for r in grid]}")
        grid = [r for label in args.settings for r in grid if r[0] == label]
    runs = [(seed, *row) for seed in args.seeds for row in grid]
    # E_t needs the preset's CEP to be worth measuring; the unguided row alone needs none.
    energy = (
        base.energy
        if args.transition
        else dataclasses.replace(base.energy, steps=10, bank_refreshes=1)
    )
    for seed, label, width, depth, initial, per_retrain in runs:
        config = base.replace(
            diffusion=dataclasses.replace(
                base.diffusion,
                width=width,
                depth=depth,
                initial_steps=initial,
                train_steps=per_retrain,
            ),
            energy=energy,
        )
        left = args.budget_s - (time.perf_counter() - start)
        need = seconds_of.get(label, 0.0)  # a setting not yet run is tried: JSON is kept per row
        if left < need or left <= 0:
            print(f"skipped {label} seed {seed}: {left:.0f} s left, {need:.0f} s needed")
            continue
        t0 = time.perf_counter()
        r = run_diagnose(
            offline.transitions,
            target,
            offline.env_id,
            config=config,
            policy_steps=10,
            n=4096,
            guidance=("none", "transition") if args.transition else ("none",),
            retrains=3,
            seed=seed,
            progress=False,
        )
        seconds = time.perf_counter() - t0
        ref = r["reference"][0]["dynamics_error"]
        err = r["rows"][0]["dynamics_error"]
        results.append(
            {
                "label": label,
                "width": width,
                "depth": depth,
                "initial_steps": initial,
                "train_steps": per_retrain,
                "seed": seed,
                "dynamics_error": err,
                "offline_dynamics_error": ref,
                "ratio": err / ref,
                "diffusion_loss": r["retrain"].get("diffusion_loss", float("nan")),
                "seconds": seconds,
                "timings": r["timings"],
            }
        )
        if args.transition:
            aligned = r["transition_alignment"]
            results[-1].update(
                transition_dynamics_error=r["rows"][1]["dynamics_error"],
                heldout_cos=aligned["cos"][-1],
                model_rows_cos=aligned["model_rows_cos"],
            )
        seconds_of[label] = seconds
        doc = {"device": device, "dataset": args.dataset, "results": results}
        (out / "results.json").write_text(json.dumps(doc, indent=1))
        (out / "results.md").write_text(f"Device: {device}\n\n{_markdown(results)}\n")
        print(json.dumps(results[-1]), flush=True)
    print(_markdown(results))


if __name__ == "__main__":
    main()

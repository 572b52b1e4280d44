"""`python -m benchmarks.retrain_cost`: what one generator retrain costs at the `cpu` preset, phase
by phase, against the `cpu` preset of commit 969c607 (the generator-fidelity issue's "today"),
measured in the same process on the same data.

Both configs retrain `--seeds` seeds (2: the issue's unit) on the shipped Hopper-v5 medium data
with its first `--online-rows` rows standing for the online buffer, as a run's first retrain
has them. Each config retrains twice: the first call compiles, the second is the cost a run pays
at every later retrain. The phases are train/generator_phases.retrain's (diffusion, CEP
negatives, CEP, held-out check), then generating the retrain's rows and the health check, as
train/synthetic.retrain runs them. Commit 969c607 had no held-out check and no health check:
its total leaves them out.

Results go to `--out`/retrain_cost_<device>.json and .md.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp

from benchmarks import harness
from edis_jax import agents, config, envs, make_run
from edis_jax.config import presets
from edis_jax.data import buffer
from edis_jax.data.datasets import load_dataset
from edis_jax.train import generator_phases
from edis_jax.train import state as S
from edis_jax.train.health import generator_health

# The `cpu` preset's generator settings at commit 969c607, in today's flags: a 256x4 model
# trained from scratch at each retrain, one negative bank per retrain, the published guidance.
BEFORE = {
    "diffusion.warm_start": False,
    "diffusion.initial_steps": 0,
    "diffusion.warm_lr": "restart",
    "diffusion.next_obs": "absolute",
    "energy.bank_refreshes": 1,
    "energy.sigma_scaled": False,
    "energy.scale_state": 2.0,
    "energy.scale_policy": 0.1,
    "energy.scale_transition": 0.1,
}
# Phases commit 969c607 did not have.
NEW_PHASES = ("cep_heldout", "health")
PHASES = ("diffusion", "cep_negatives", "cep", "cep_heldout", "generate", "health")


def measure(name: str, cfg: config.RunConfig, online_rows: int, repeats: int = 2) -> dict:
    """Per-phase wall seconds of the last of `repeats` retrains of `cfg` (the first compiles)."""
    dataset = load_dataset(cfg.dataset)
    state = S.init_state(cfg, dataset.transitions, 1.0)
    rows = jax.tree.map(lambda x: jnp.asarray(x[:online_rows]), dataset.transitions)
    one = buffer.from_transitions(rows, max(state.online.capacity, online_rows))
    online = jax.tree.map(lambda x: jnp.broadcast_to(x, (cfg.seeds, *x.shape)), one)
    actions = envs.ActionScale(dataset.env_id)
    terminal_fn = envs.termination_fn(dataset.env_id)
    policy = agents.policy(state.agent)
    runs = []
    for r in range(repeats):
        timings: dict[str, float] = {}
        keys = S.step_key(S.seed_keys(cfg), S.RETRAIN_STREAM, r)
        gen, _ = generator_phases.retrain(
            state.generator, state.real, online, policy, keys, progress=False, timings=timings
        )
        samples, _ = generator_phases.generate(
            gen, keys, cfg.online.num_samples, terminal_fn=terminal_fn, progress=False,
            timings=timings,
        )  # fmt: skip
        start = time.perf_counter()
        generator_health(samples, state.real, online, dataset.env_id, actions)
        timings["health"] = time.perf_counter() - start
        runs.append(timings)
    return {
        "name": name,
        "seeds": cfg.seeds,
        "first_retrain_s": sum(runs[0].get(p, 0.0) for p in PHASES),
        "phases_s": {p: runs[-1].get(p, 0.0) for p in PHASES},
    }


def configs(seeds: int, preset: str = "cpu") -> dict[str, config.RunConfig]:
    """The two configs compared (`preset` "tiny": the same switches at the tiny sizes, for tests)."""
    now = presets.preset(preset).replace(dataset=make_run.DATASET, seeds=seeds, edis=True)
    return {
        f"{preset} preset at 969c607": config.with_values(now, BEFORE),
        f"{preset} preset now": now,
    }


def table(results: list[dict]) -> str:
    """Markdown: one row per config, the steady retrain's phases, totals with and without the
    phases commit 969c607 did not have."""
    head = ["config", "seeds", *PHASES, "total", f"total without {' and '.join(NEW_PHASES)}"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        phases = r["phases_s"]
        total = sum(phases.values())
        old_total = total - sum(phases[p] for p in NEW_PHASES)
        cells = [r["name"], str(r["seeds"]), *(f"{phases[p]:.1f}" for p in PHASES)]
        lines.append("| " + " | ".join([*cells, f"{total:.1f}", f"{old_total:.1f}"]) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--online-rows", type=int, default=5000)
    parser.add_argument("--preset", choices=("cpu", "tiny"), default="cpu")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)
    pair = configs(args.seeds, args.preset)
    results = [measure(name, cfg, args.online_rows) for name, cfg in pair.items()]
    device = harness.device_description()
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"retrain_cost_{harness.device_name()}"
    record = {"device": device, "online_rows": args.online_rows, "results": results}
    Path(f"{stem}.json").write_text(json.dumps(record, indent=2) + "\n")
    text = (
        f"Seconds per retrain (steady; the first, compiling, retrain aside), {args.online_rows} "
        f"online rows, on {device}:\n\n" + table(results) + "\n"
    )
    Path(f"{stem}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()

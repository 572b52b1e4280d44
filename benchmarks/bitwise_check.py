"""`python -m benchmarks.bitwise_check [--check | --write]`: do restructurings change results?

Runs a fixed configuration and hashes what it writes: small versions of the `make run` arms
(edis_jax/make_run.py: IQL owns the offline phase and continues online as the baseline; IQL-EDIS
and IQL-SynthER start online from its offline phase with --init-from), IQL-EDIS under the
published schedule, the IQL-EDIS arm killed mid-run and resumed, and the dataset builder's
behaviour SAC (a medium-replay `data make` and a continued agent). Hashes: metrics.jsonl,
summary.json without its wall-clock values, every leaf of the online buffer (observations and
actions taken), and the built dataset.

benchmarks/results/bitwise_reference.json keeps one reference per environment (versions,
device, CPU vector extension, XLA flags: `records.environment()`), because XLA compiles CPU code
for the host's vector instructions and the generator's bits differ between an AVX-512 and an AVX2
machine. `--write` stores this machine's hashes with the commit they came from, keeping the other
machines' references; `--check` (the default) recomputes them, exits 1 on any difference, naming
what differs, and exits 2 in one line when no reference was made on a machine like this one. To
add one, write it from the commit the other references came from (`git worktree add`), then
check the commit under test. The runs go to a temporary folder (or --root). A few minutes on 2
CPU cores.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from edis_jax import config
from edis_jax.config import agent_configs, presets
from edis_jax.storage import checkpoint
from edis_jax.storage.output_paths import write_whole
from edis_jax.train import loop, records

REFERENCE = Path(__file__).resolve().parent / "results" / "bitwise_reference.json"
DATASET = "local/hopper/medium-v0"  # shipped with the package, as in `make run`
KILL_AT = 150  # online step the killed arm stops at: after the checkpoint and retrain at 100


def arm_configs(root: Path) -> dict[str, config.RunConfig]:
    """The `make run` arms (cpu preset: warm-started delta generator, banks, sigma-scaled
    guidance) at a few hundred steps and tiny generator sizes."""
    cpu = presets.preset("cpu")
    diffusion = dataclasses.replace(
        cpu.diffusion, width=32, depth=2, dim_t=16, batch_size=32, train_steps=60,
        train_chunk=30, num_steps=8, sample_batch=256, initial_steps=60,
    )  # fmt: skip
    energy = dataclasses.replace(
        cpu.energy, hidden_dims=(32, 32), steps=4, batch_size=16, num_negatives=4,
        level_stride=4, negative_bank=64, bank_refreshes=2,
    )  # fmt: skip
    online = dataclasses.replace(cpu.online, retrain_every=100, num_samples=512)
    base = cpu.replace(
        algo="iql", dataset=DATASET, seeds=2, offline_steps=300, online_steps=300,
        eval_every=100, eval_episodes=2, log_every=50, checkpoint_every=100,
        diffusion=diffusion, energy=energy, online=online, overwrite=True,
    )  # fmt: skip
    iql = base.replace(edis=False, out=str(root / "iql"))
    shared = {"init_from": iql.out}
    return {
        "iql": iql,
        "iql_edis": base.replace(edis=True, out=str(root / "iql_edis"), **shared),
        "iql_synther": base.replace(edis=True, guide=(), out=str(root / "iql_synther"), **shared),
        # Not a `make run` arm: the published IQL-EDIS schedule (extra synthetic-mix updates on
        # retrain steps, so the agent changes between two env steps).
        "iql_edis_published": base.replace(
            edis=True,
            out=str(root / "iql_edis_published"),
            **shared,
            online=dataclasses.replace(online, schedule="published", utd_retrain=3),
        ),  # fmt: skip
    }


def run_all(root: Path, log=print) -> dict[str, dict[str, str]]:
    """Run everything under `root`; return {run name: {what: sha256}}."""
    arms = arm_configs(root)
    hashes = {}
    for name, cfg in arms.items():
        log(f"- {name}")
        loop.train(cfg, progress=False)
        hashes[name] = run_hashes(Path(cfg.out))
    log(f"- iql_edis killed at online step {KILL_AT} and resumed")
    killed = arms["iql_edis"].replace(out=str(root / "iql_edis_resumed"))
    if loop.train(killed, stop_at_online_step=KILL_AT, progress=False) is not None:
        raise RuntimeError(f"the killed run finished instead of stopping at step {KILL_AT}")
    loop.resume(killed.out, progress=False)
    hashes["iql_edis_resumed"] = run_hashes(Path(killed.out))
    log("- behaviour SAC (data make medium-replay, and a continued agent)")
    hashes["behaviour_sac"] = behaviour_hashes(root / "minari")
    return hashes


def run_hashes(run_dir: Path) -> dict[str, str]:
    _, state = loop.load_run(run_dir)
    return {
        "metrics.jsonl": _sha((run_dir / "metrics.jsonl").read_bytes()),
        "summary.json": summary_hash(json.loads((run_dir / "summary.json").read_text())),
        "online_buffer": checkpoint.tree_sha256(state.online),
    }


def summary_hash(summary: dict) -> str:
    """summary.json's hash without what the machine and its load decide (wall times, the rates
    derived from them, the machine record with its load averages)."""
    kept = {k: v for k, v in summary.items() if k not in records.MEASURED}
    return _sha(json.dumps(kept, sort_keys=True).encode())


def behaviour_hashes(minari_path: Path) -> dict[str, str]:
    """`data make` of a medium-replay dataset (recorded SAC training episodes) with a small
    SAC, and the same SAC continued from its agent (as the expert build does)."""
    from edis_jax.data import datasets
    from edis_jax.datagen import builder
    from edis_jax.datagen.behaviour import train_sac_online

    sac = agent_configs.SACConfig(hidden_dims=(64, 64), start_steps=100)
    previous = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(minari_path)
    try:
        info = builder.make_dataset(
            "Hopper-v5", "medium-replay", 400, "check/hopper/medium-replay-v0", seed=3,
            max_train_steps=400, eval_every=200, eval_episodes=10, sac_config=sac,
            progress=False,
        )  # fmt: skip
        data = datasets.load_dataset("check/hopper/medium-replay-v0")
    finally:
        if previous is None:
            os.environ.pop("MINARI_DATASETS_PATH")
        else:
            os.environ["MINARI_DATASETS_PATH"] = previous
    first = train_sac_online(
        "Hopper-v5", 300, seed=5, config=sac, batch_size=64, eval_every=150, eval_episodes=2,
        progress=False,
    )  # fmt: skip
    more = train_sac_online(
        "Hopper-v5", 200, seed=6, agent=first.agent, batch_size=64, eval_every=100,
        eval_episodes=2, record_episodes=True, progress=False,
    )  # fmt: skip
    runs = {
        "evals": [first.evals, more.evals],
        "train_returns": [first.train_returns, more.train_returns],
        # The build's numbers; its rebuilding command (which names the options, not what they
        # gave) is left out, so that a new option does not move the hash.
        "build": {
            k: ({n: x for n, x in v.items() if n != "command"} if k == "build" else v)
            for k, v in info.items()
            if k not in ("path", "timings")
        },
    }
    return {
        "dataset": checkpoint.tree_sha256(data.transitions),
        "runs": _sha(json.dumps(runs, sort_keys=True, default=str).encode()),
        "agents": checkpoint.tree_sha256((first.agent, more.agent)),
        "episodes": checkpoint.tree_sha256(more.episodes),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="compare with the reference (default)")
    mode.add_argument("--write", action="store_true", help="store the reference")
    parser.add_argument("--root", type=Path, help="folder for the runs (default: a temporary one)")
    args = parser.parse_args(argv)
    environment = records.environment()
    references = read_references()
    reference = next((r for r in references if r["environment"] == environment), None)
    if not args.write and reference is None:
        made_on = "; ".join(_describe(r["environment"]) for r in references) or "nothing"
        print(
            f"bitwise_check: no reference was made on a machine like this one "
            f"({_describe(environment)}; {REFERENCE.name} has: {made_on}): write one with "
            f"--write from the commit the others came from ({_commits(references)}), then --check"
        )
        return 2
    with tempfile.TemporaryDirectory(prefix="bitwise-") as tmp:
        hashes = run_all(args.root or Path(tmp))
    if args.write:
        record = {"environment": environment, "commit": _commit(), "hashes": hashes}
        others = [r for r in references if r["environment"] != environment]
        text = json.dumps({"references": [*others, record]}, indent=2) + "\n"
        # Whole or not at all: the file also holds the other machines' references.
        write_whole(REFERENCE, lambda f: f.write(text.encode()))
        print(f"wrote this machine's reference into {REFERENCE} ({len(others)} others kept)")
        return 0
    differ = [
        f"{run}/{what}"
        for run in sorted(set(reference["hashes"]) | set(hashes))
        for what in sorted(set(reference["hashes"].get(run, {})) | set(hashes.get(run, {})))
        if reference["hashes"].get(run, {}).get(what) != hashes.get(run, {}).get(what)
    ]
    if hashes["iql_edis_resumed"] != hashes["iql_edis"]:
        differ.append("iql_edis_resumed against iql_edis (resume is not 'never stopped')")
    if differ:
        print(f"DIFFERENT from the reference of commit {reference['commit']}: " + ", ".join(differ))
        return 1
    print(
        f"bitwise identical to the reference of commit {reference['commit']} on this machine "
        f"({_describe(environment)}): {sum(len(h) for h in hashes.values())} hashes"
    )
    return 0


def read_references() -> list[dict]:
    """The stored references, one per environment."""
    if not REFERENCE.is_file():
        return []
    return json.loads(REFERENCE.read_text())["references"]


def _describe(environment: dict) -> str:
    return ", ".join(f"{k} {v or '-'}" for k, v in environment.items())


def _commits(references: list[dict]) -> str:
    return ", ".join(sorted({r["commit"] for r in references})) or "any commit you trust"


def _commit() -> str:
    """The commit the hashes come from, with '+changes' when the work tree differs from it."""
    git = ["git", "-C", str(REFERENCE.parent)]
    try:
        head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()  # fmt: skip
        dirty = subprocess.run([*git, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{head}+changes" if dirty else head


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


if __name__ == "__main__":
    sys.exit(main())

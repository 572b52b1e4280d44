"""`python -m benchmarks.env_backends [--quick]`: the online phase on both env backends, measured in
the same run, through the run driver's own code.

- online: env steps/s of the online phase (act + env step + store + U IQL updates per seed) for
  --env-backend gymnasium (host MuJoCo, one device call per step) and jax (the env inside the
  compiled chunk), at U = 1 and 20 for 1 / 8 / 32 seeds: train/online_steps.py's drivers on a
  run of the shipped Hopper-v5 medium data, compile excluded (reported apart);
- evaluation: deterministic episodes/s of both backends (train/loop.py's evaluate), Hopper-v5
  and HalfCheetah-v5 (which never terminates: every episode is 1000 steps, the most Hopper's can
  be), the agent untrained;
- projection: the paper's IQL-EDIS schedule (task iql_edis/hopper-medium: 1M offline updates,
  200k online steps at U = 1, 20 retrains, 100 evaluation episodes every 50k steps) for 8 and 32
  seeds, from the rates measured here and, when given, a retrain's measured seconds.

Writes benchmarks/results/env_backends_<device>[-quick].json and .md; `benchmarks.gpu` runs the
same measurement as its `backends` part.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from benchmarks import harness

RESULTS = Path(__file__).resolve().parent / "results"
DATASET = "local/hopper/medium-v0"  # shipped: no download


@dataclasses.dataclass(frozen=True)
class Sizes:
    dataset: str = DATASET  # the online runs' offline data and env (tests: a Pendulum one)
    seeds: tuple[int, ...] = (1, 8, 32)
    utds: tuple[int, ...] = (1, 20)
    # Timed steps per (U, seeds): ~the same number of updates at either U.
    steps: tuple[tuple[int, int], ...] = ((1, 200), (20, 10))
    agent_preset: str = "paper"  # 256 x 256 IQL networks
    eval_envs: tuple[str, ...] = ("Hopper-v5", "HalfCheetah-v5")
    eval_seeds: tuple[int, ...] = (8, 32)
    eval_episodes: int = 10  # per seed
    projection_seeds: tuple[int, ...] = (8, 32)
    offline_updates: int = 200  # timed per seed count, for the projection

    def quick(self) -> Sizes:
        """CI-sized: seeds 1 / 2, tiny networks, a few steps (minutes on 2 cores, mostly MJX's
        compiles)."""
        return dataclasses.replace(
            self, seeds=(1, 2), utds=(1,), steps=((1, 5),), agent_preset="tiny",
            eval_envs=("Hopper-v5",), eval_seeds=(2,), eval_episodes=1, projection_seeds=(2,),
            offline_updates=10,
        )  # fmt: skip


# The paper's IQL-EDIS schedule (edis_jax/config/tasks.py, iql_edis/hopper-medium).
PAPER = {"offline_updates": 1_000_000, "online_steps": 200_000, "retrains": 20, "evals": 25,
         "eval_episodes": 100}  # fmt: skip


def measure(sizes: Sizes, log: Callable[[str], None] = print, on_row=None, retrain_s=None):
    """Every row of `sizes`; `on_row(kind, row)` receives each as measured. `retrain_s`: one
    paper-size retrain's seconds per seed count {seeds: s}, for the projection (None: left
    out of it, and said so)."""
    out = {"online": [], "evaluation": [], "offline": [], "projection": []}

    def emit(kind, row):
        out[kind].append(row)
        log(f"  {kind}: {json.dumps(row)}")
        if on_row is not None:
            on_row(kind, row)

    steps_of = dict(sizes.steps)
    for utd in sizes.utds:
        for seeds in sizes.seeds:
            for backend in ("gymnasium", "jax"):
                emit("online", online_rate(backend, seeds, utd, steps_of[utd], sizes))
    for seeds in sorted(set(sizes.projection_seeds)):
        emit("offline", offline_rate(seeds, sizes))
    for env_id in sizes.eval_envs:
        for seeds in sizes.eval_seeds:
            for backend in ("gymnasium", "jax"):
                emit("evaluation", eval_rate(backend, env_id, seeds, sizes))
    for row in projection(out, sizes, retrain_s):
        emit("projection", row)
    return out


def _run(backend: str, seeds: int, utd: int, online_steps: int, sizes: Sizes, out: Path):
    """A run of `sizes.dataset` at online step 0 (nothing written to `out`; its scores unused,
    so reference scores (0, 1) stand in for datasets without them)."""
    from edis_jax.config.presets import preset
    from edis_jax.train import loop
    from edis_jax.train import state as S

    cfg = preset(sizes.agent_preset).replace(
        algo="iql", dataset=sizes.dataset, seeds=seeds, edis=False, offline_steps=0,
        online_steps=online_steps, env_backend=backend, out=str(out), batch_size=256,
        ref_min_score=0.0, ref_max_score=1.0,
    )  # fmt: skip
    cfg = cfg.replace(online=dataclasses.replace(cfg.online, utd=utd))
    run = loop._Run(cfg, loop._load_dataset(cfg), out, progress=False)
    run.state = S.with_online_phase(run.state, S.real_weights(cfg))
    return run


def online_rate(backend: str, seeds: int, utd: int, steps: int, sizes: Sizes) -> dict:
    import jax

    warm = 2
    with tempfile.TemporaryDirectory() as tmp:
        run = _run(backend, seeds, utd, warm + steps, sizes, Path(tmp))
        driver = run.online_steps_driver()
        t0 = time.perf_counter()
        t = 0
        while t < warm:  # compiles (the jax chunk: once for any length)
            n = driver.chunk(t, warm)
            driver.advance(t, n, 0)
            t += n
        jax.block_until_ready(run.state)
        compile_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        while t < warm + steps:
            n = driver.chunk(t, warm + steps)
            metrics = driver.advance(t, n, 0)
            t += n
        jax.block_until_ready((run.state, metrics))
        seconds = time.perf_counter() - t0
        driver.close()
    return {
        "backend": backend, "seeds": seeds, "utd": utd, "steps": steps, "seconds": seconds,
        "ms_per_step": 1e3 * seconds / steps, "env_steps_per_s": seeds * steps / seconds,
        "warmup_s": compile_s,
    }  # fmt: skip


def offline_rate(seeds: int, sizes: Sizes) -> dict:
    """Offline IQL updates/s over all seeds (state.update_chunk, the offline phase's call)."""
    import jax

    from edis_jax.train import state as S

    n = sizes.offline_updates
    with tempfile.TemporaryDirectory() as tmp:
        run = _run("gymnasium", seeds, 1, 1, sizes, Path(tmp))
        keys = S.step_key(run.keys, S.OFFLINE_STREAM, 0)
        state, _ = S.update_chunk(run.state, keys, num_updates=n, batch_size=256)  # compile
        jax.block_until_ready(state)
        t0 = time.perf_counter()
        state, metrics = S.update_chunk(state, keys, num_updates=n, batch_size=256)
        jax.block_until_ready((state, metrics))
        seconds = time.perf_counter() - t0
    return {"seeds": seeds, "updates": n, "seconds": seconds, "updates_per_s": n / seconds}


def eval_rate(backend: str, env_id: str, seeds: int, sizes: Sizes) -> dict:
    """Deterministic evaluation episodes/s of `seeds` untrained IQL agents, `eval_episodes`
    each, through the functions train/loop.py's evaluate calls."""
    import jax

    from edis_jax import agents, envs
    from edis_jax.config.presets import preset
    from edis_jax.train import jax_online
    from edis_jax.train import state as S

    env = jax_online.training_env(env_id)
    cfg = preset(sizes.agent_preset).iql
    keys = jax.random.split(jax.random.PRNGKey(0), seeds)
    agent = jax.vmap(lambda k: agents.create("iql", k, env.obs_dim, env.action_dim, cfg))(keys)
    episodes = sizes.eval_episodes
    if backend == "jax":
        bounds = jax_online.ActionBounds.of(env_id)

        def run(index):
            key = jax.random.PRNGKey(index)
            returns = jax_online.evaluate(agent, key, env=env, bounds=bounds, episodes=episodes)
            return np.asarray(jax.device_get(returns))
    else:
        scale = envs.ActionScale(env_id)

        def policy(obs):
            return scale.to_env(np.asarray(S.greedy_action(agent, jax.numpy.asarray(obs))))

        def run(index):
            return envs.episode_outcomes(policy, env_id, seeds, episodes, seed=index)[0]

    t0 = time.perf_counter()
    run(0)  # compiles
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    returns = run(1)
    seconds = time.perf_counter() - t0
    total = seeds * episodes
    return {
        "backend": backend, "env": env_id, "seeds": seeds, "episodes": total,
        "seconds": seconds, "episodes_per_s": total / seconds,
        "mean_return": float(np.mean(returns)), "warmup_s": compile_s,
    }  # fmt: skip


def projection(rows: dict, sizes: Sizes, retrain_s: dict | None) -> list[dict]:
    """The paper's IQL-EDIS schedule's wall time per backend, from the measured rates: offline
    updates, online steps at U = 1, evaluations (HalfCheetah's 1000-step episodes where
    measured, an upper bound for Hopper's) and retrains (`retrain_s`, if measured)."""
    out = []
    for seeds in sizes.projection_seeds:
        offline = _find(rows["offline"], seeds=seeds)
        for backend in ("gymnasium", "jax"):
            online = _find(rows["online"], seeds=seeds, utd=1, backend=backend)
            evals = [
                r for r in rows["evaluation"] if r["seeds"] == seeds and r["backend"] == backend
            ]
            if offline is None or online is None:
                continue
            evaluation = max(evals, key=lambda r: r["env"] == "HalfCheetah-v5", default=None)
            parts = {
                "offline_s": PAPER["offline_updates"] / offline["updates_per_s"],
                "online_s": PAPER["online_steps"] * online["ms_per_step"] / 1e3,
                "evaluation_s": None if evaluation is None else (
                    PAPER["evals"] * PAPER["eval_episodes"] * seeds / evaluation["episodes_per_s"]
                ),
                "retrains_s": None if not retrain_s or seeds not in retrain_s
                else PAPER["retrains"] * retrain_s[seeds],
            }  # fmt: skip
            known = [v for v in parts.values() if v is not None]
            out.append({
                "backend": backend, "seeds": seeds, **parts, "total_s": sum(known),
                "complete": len(known) == len(parts),
                "evaluation_env": None if evaluation is None else evaluation["env"],
            })  # fmt: skip
    return out


def _find(rows: list[dict], **match) -> dict | None:
    return next((r for r in rows if all(r.get(k) == v for k, v in match.items())), None)


def _backend_pairs(rows: list[dict], *keys: str):
    """(values of `keys`, gymnasium's row, jax's row) for every setting both backends measured,
    in sorted order."""
    for values in sorted({tuple(r[k] for k in keys) for r in rows}):
        match = dict(zip(keys, values, strict=True))
        g, j = (_find(rows, **match, backend=b) for b in ("gymnasium", "jax"))
        if g is not None and j is not None:
            yield values, g, j


def markdown(record: dict) -> str:
    lines = [
        f"## Env backends on {record['device']}",
        "",
        f"JAX {record['jax_version']}; {record['agent_preset']}-size IQL, batch 256; "
        f"online runs of {record['sizes']['dataset']}. `python -m benchmarks.env_backends"
        + (" --quick" if record["quick"] else "")
        + "`."
        + (
            "" if record.get("complete", True) else " Stopped before its end: the rows it measured."
        ),
        "",
        "### Online phase: act + env step + store + U updates, per env step of all seeds",
        "",
        "| U | seeds | gymnasium ms/step | jax ms/step | gymnasium env steps/s | jax env steps/s "
        "| jax / gymnasium | jax warm-up s |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for (utd, seeds), g, j in _backend_pairs(record["online"], "utd", "seeds"):
        lines.append(
            f"| {utd} | {seeds} | {g['ms_per_step']:.2f} | {j['ms_per_step']:.2f} | "
            f"{g['env_steps_per_s']:,.0f} | {j['env_steps_per_s']:,.0f} | "
            f"{j['env_steps_per_s'] / g['env_steps_per_s']:.2f}x | {j['warmup_s']:.0f} |"
        )
    lines += [
        "",
        "### Evaluation: deterministic episodes of untrained agents",
        "",
        "| env | seeds | episodes | gymnasium episodes/s | jax episodes/s | jax / gymnasium "
        "| mean return (gymnasium / jax) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for (env_id, seeds), g, j in _backend_pairs(record["evaluation"], "env", "seeds"):
        lines.append(
            f"| {env_id} | {seeds} | {g['episodes']} | {g['episodes_per_s']:.1f} | "
            f"{j['episodes_per_s']:.1f} | {j['episodes_per_s'] / g['episodes_per_s']:.2f}x | "
            f"{g['mean_return']:.0f} / {j['mean_return']:.0f} |"
        )
    lines += [
        "",
        "### Projected wall time of the paper's IQL-EDIS schedule (hours)",
        "",
        "1M offline updates, 200k online steps at U = 1, 25 evaluations of 100 episodes per "
        "seed at the measured episodes/s of the env named (HalfCheetah's episodes are all 1000 "
        "steps, an upper bound for Hopper's; an untrained Hopper falls within tens of steps), "
        "20 retrains at the smoke run's measured retrain (benchmarks.gpu only).",
        "",
        "| backend | seeds | offline | online | evaluations (env) | retrains | total |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]

    def hours(x):
        return "not measured" if x is None else f"{x / 3600:.2f}"

    for r in record["projection"]:
        total = hours(r["total_s"]) + ("" if r["complete"] else " (without the unmeasured)")
        lines.append(
            f"| {r['backend']} | {r['seeds']} | {hours(r['offline_s'])} | "
            f"{hours(r['online_s'])} | {hours(r['evaluation_s'])} ({r['evaluation_env']}) | "
            f"{hours(r['retrains_s'])} | "
            f"{total} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="CI sizes (seeds 1 and 2)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    sizes = Sizes().quick() if args.quick else Sizes()
    record = run(sizes, args.out, quick=args.quick)
    print(markdown(record))
    print(f"wrote {record['json_path']} and {record['md_path']}")


def run(sizes: Sizes, out_dir: Path, *, quick: bool, log=print, retrain_s=None) -> dict:
    import jax

    start = time.perf_counter()
    log(f"{harness.device_description()}, {harness.cpu_threads()} threads")
    record = {
        "device": harness.device_name(), "jax_version": jax.__version__, "quick": quick,
        "agent_preset": sizes.agent_preset, "sizes": dataclasses.asdict(sizes),
        "online": [], "evaluation": [], "offline": [], "projection": [], "complete": False,
    }  # fmt: skip
    stem = f"env_backends_{record['device']}" + ("-quick" if quick else "")
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / f"{stem}.json", out_dir / f"{stem}.md"

    def save(kind=None, row=None) -> None:  # after every row: a stopped run keeps its rows
        if kind is not None:
            record[kind].append(row)
        record["wall_s"] = time.perf_counter() - start
        json_path.write_text(json.dumps(record, indent=1))
        md_path.write_text(markdown(record))

    measure(sizes, log, on_row=save, retrain_s=retrain_s)
    record["complete"] = True
    save()
    return {**record, "json_path": str(json_path), "md_path": str(md_path)}


if __name__ == "__main__":
    main()

"""`edis-jax report`: compare finished runs in a table and plot their learning curves."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


class ReportError(ValueError):
    """A run directory cannot be reported; the message says why."""


def load_run(run_dir: str | Path) -> dict:
    """A run's summary and its evaluation curve: {"dir", "summary", "steps", "scores"}.

    `scores` is (evaluations, seeds); `steps` counts offline updates then online env steps.
    """
    run_dir = Path(run_dir)
    summary_file, metrics_file = run_dir / "summary.json", run_dir / "metrics.jsonl"
    if not metrics_file.is_file():
        raise ReportError(
            f"{run_dir} has no metrics.jsonl: is it an `edis-jax train` --out folder?"
        )
    summary = json.loads(summary_file.read_text()) if summary_file.is_file() else None
    config = json.loads((run_dir / "config.json").read_text())
    by_step: dict[int, dict[int, float]] = {}
    for line in metrics_file.read_text().splitlines():
        record = json.loads(line)
        if "eval_score" not in record:
            continue
        offset = config["offline_steps"] if record["phase"] == "online" else 0
        by_step.setdefault(record["step"] + offset, {})[record["seed"]] = record["eval_score"]
    steps = sorted(by_step)
    scores = np.array([[by_step[s][i] for i in sorted(by_step[s])] for s in steps])
    return {
        "dir": str(run_dir),
        "summary": summary,
        "config": config,
        "steps": np.array(steps),
        "scores": scores,
    }


def label(run: dict) -> str:
    c = run["config"]
    edis = c["edis"] and c["online_steps"] > 0
    name = f"{c['algo'].upper()}-EDIS" if edis else c["algo"].upper()
    if edis and tuple(c["guide"]) != ("state", "policy", "transition"):
        name += f" [{','.join(c['guide']) or 'no guidance'}]"
    return name


def labels(runs: list[dict]) -> list[str]:
    """label() of each run; runs that would share a label get their directory's name added."""
    names = [label(run) for run in runs]
    return [
        f"{name} ({Path(run['dir']).name})" if names.count(name) > 1 else name
        for name, run in zip(names, runs, strict=True)
    ]


def table(runs: list[dict]) -> str:
    """A markdown table: scores as mean ± std over seeds, and timings."""
    header = (
        "| run | dataset | seeds | offline score | final score | best score | wall (s) | dir |\n"
        "|---|---|---|---|---|---|---|---|"
    )
    rows = []
    for run, name in zip(runs, labels(runs), strict=True):
        s = run["summary"]
        if s is None:
            rows.append(
                f"| {name} | {run['config']['dataset']} | | unfinished | | | | {run['dir']} |"
            )
            continue
        fmt = lambda x: f"{x['mean']:.1f} ± {x['std']:.1f}"  # noqa: E731
        rows.append(
            f"| {name} | {s['dataset']} | {s['seeds']} | {fmt(s['offline_score'])} | "
            f"{fmt(s['final_score'])} | {fmt(s['best_score'])} | "
            f"{s['wall_time_s']['total']:.0f} | {run['dir']} |"
        )
    return "\n".join([header, *rows])


def plot(runs: list[dict], path: str | Path) -> Path:
    """Normalised score against steps, mean ± std over seeds, one line per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for run, name in zip(runs, labels(runs), strict=True):
        if len(run["steps"]) == 0:
            continue
        mean, std = run["scores"].mean(1), run["scores"].std(1)
        (line,) = ax.plot(run["steps"], mean, label=name)
        ax.fill_between(run["steps"], mean - std, mean + std, alpha=0.2, color=line.get_color())
    offline = {r["config"]["offline_steps"] for r in runs}
    if len(offline) == 1 and (boundary := offline.pop()) > 0:
        ax.axvline(boundary, color="grey", linestyle=":", linewidth=1)
        ax.text(boundary, ax.get_ylim()[1], " online", va="top", fontsize=8, color="grey")
    ax.set_xlabel("offline updates, then online env steps")
    ax.set_ylabel("normalised score")
    ax.set_title(", ".join(sorted({r["config"]["dataset"] for r in runs})))
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def report(run_dirs: list[str], out: str | None = None) -> tuple[str, Path]:
    """Print-ready table and the written plot's path (default: <first run>/../report.png)."""
    if not run_dirs:
        raise ReportError("give at least one run directory: edis-jax report RUN_DIR [RUN_DIR...]")
    runs = [load_run(d) for d in run_dirs]
    out_path = Path(out) if out else Path(run_dirs[0]).resolve().parent / "report.png"
    return table(runs), plot(runs, out_path)

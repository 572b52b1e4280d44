"""`edis-jax report`: compare runs ("arms") over their seeds, plot learning curves and generator
health.

Statistics follow Agarwal et al. 2021 ("Deep RL at the edge of the statistical precipice", the
rliable method): the interquartile mean (IQM) over seeds with a 95% percentile bootstrap interval,
seeds resampled with replacement within each run (the stratified bootstrap with one task). Arms
are compared with a baseline by Welch's t-test. The online learning curve's area (AUC) is the
normalised score averaged over the online-phase evaluations, per seed.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np
import scipy.stats

BOOTSTRAP_DRAWS = 2000  # as in rliable's examples
BOOTSTRAP_SEED = 0  # fixed, so that a report is reproducible
CONFIDENCE = 0.95
SIGNIFICANCE = 0.05

# Generator-health panels: (title, [(metric, line label, line style)], log scale).
HEALTH_PANELS: list[tuple[str, list[tuple[str, str, str]], bool]] = [
    ("diffusion loss", [("diffusion_loss", "", "-")], False),
    *(
        (
            f"CEP accuracy, {energy} energy",
            [(f"cep_{energy}_acc", "train", "-"), (f"cep_{energy}_heldout_acc", "held-out", "--")],
            False,
        )
        for energy in ("state", "policy", "transition")
    ),
    ("clipped action fraction", [("clipped_action_frac", "", "-")], False),
    (
        "reward mean",
        [("synthetic_reward_mean", "synthetic", "-"), ("real_reward_mean", "real", "--")],
        False,
    ),
    (
        "terminal rate",
        [("synthetic_terminal_rate", "synthetic", "-"), ("real_terminal_rate", "real", "--")],
        False,
    ),
    (
        "dynamics error",
        [("synthetic_dynamics_error", "synthetic", "-"), ("real_dynamics_error", "real", "--")],
        True,
    ),
]


class ReportError(ValueError):
    """A run directory cannot be reported; the message says why."""


class Report(NamedTuple):
    """What `report()` made: the print-ready text and the PNGs it wrote (health: None if no run
    has generator retrain records)."""

    text: str
    curves: Path
    health: Path | None


def report(run_dirs: list[str], out: str | None = None, baseline: str | None = None) -> Report:
    """Table, comparison sentences and plots of the runs (default PNG: <first run>/../report.png,
    its health figure beside it as report_health.png). `baseline` is a run directory the other
    runs are tested against; it joins the table (first) if it is not among `run_dirs`."""
    if not run_dirs and baseline is None:
        raise ReportError("give at least one run directory: edis-jax report RUN_DIR [RUN_DIR...]")
    dirs = list(run_dirs)
    base_index = None
    if baseline is not None:
        resolved = [Path(d).resolve() for d in dirs]
        if Path(baseline).resolve() in resolved:
            base_index = resolved.index(Path(baseline).resolve())
        else:
            dirs, base_index = [baseline, *dirs], 0
    out_path = Path(out) if out else Path(dirs[0]).resolve().parent / "report.png"
    _check_writable(out_path)
    runs = [load_run(d) for d in dirs]
    curves = plot(runs, out_path)
    health = plot_health(runs, out_path.with_name(out_path.stem + "_health.png"))
    parts = [table(runs, base_index)]
    if base_index is not None:
        parts.append("\n".join(comparisons(runs, base_index)))
    if health is None:
        parts.append(
            "generator health: no run has retrain records with values; no health figure written."
        )
    return Report("\n\n".join(p for p in parts if p), curves, health)


def load_run(run_dir: str | Path) -> dict:
    """A run's config, summary (None while unfinished), evaluation curve and generator health.

    Keys: "dir", "config", "summary", "steps" and "scores" ((evaluations, seeds), `steps` counts
    offline updates then online env steps), "online_scores" ((online evaluations, seeds)),
    "health" ({"steps": (retrains,), metric: (retrains, seeds) with NaN for null}) and
    "progress" ((phase, step) of the latest record).
    """
    run_dir = Path(run_dir)
    metrics_file, config_file = run_dir / "metrics.jsonl", run_dir / "config.json"
    if not metrics_file.is_file() or not config_file.is_file():
        raise ReportError(
            f"{run_dir} has no metrics.jsonl or config.json: is it an `edis-jax train` --out folder?"
        )
    summary_file = run_dir / "summary.json"
    summary = json.loads(summary_file.read_text()) if summary_file.is_file() else None
    config = json.loads(config_file.read_text())
    records = _read_records(metrics_file)
    seeds = config.get("seeds") or 1 + max((r.get("seed", 0) for r in records), default=0)
    evals: dict[
        tuple[int, int], dict[int, float]
    ] = {}  # (global step, phase rank) -> seed -> score
    retrains: dict[int, dict[int, dict]] = {}  # online step -> seed -> record
    progress = None
    for r in records:
        online = r.get("phase") == "online"
        progress = ("online" if online else "offline", int(r.get("step", 0)))
        if r.get("event") is not None:
            if r["event"] == "retrain" and online:
                retrains.setdefault(int(r["step"]), {})[r["seed"]] = r
            continue
        if r.get("eval_score") is None:
            continue
        key = (r["step"] + (config["offline_steps"] if online else 0), int(online))
        evals.setdefault(key, {})[r["seed"]] = float(r["eval_score"])
    # an interrupted write may leave an evaluation with some seeds only: it is not plotted
    keys = sorted(k for k in evals if len(evals[k]) == seeds)
    scores = np.array([[evals[k][i] for i in range(seeds)] for k in keys]).reshape(-1, seeds)
    online_rows = np.array([online for _, online in keys], bool)
    return {
        "dir": str(run_dir),
        "config": config,
        "summary": summary,
        "steps": np.array([step for step, _ in keys], int),
        "scores": scores,
        "online_scores": scores[online_rows],
        "health": _health_arrays(retrains, seeds),
        "progress": progress,
    }


def label(run: dict) -> str:
    """The run's name: algorithm, -EDIS (-SynthER without guidance), its guidance energies
    where not all three, and the oracle relabelling where on."""
    c = run["config"]
    edis = c["edis"] and c["online_steps"] > 0
    algo = c["algo"].upper()
    if not edis:
        return algo
    if not c["guide"]:
        name = f"{algo}-SynthER"
    else:
        name = f"{algo}-EDIS"
        if tuple(c["guide"]) != ("state", "policy", "transition"):
            name += f" [{','.join(c['guide'])}]"
    if c.get("online", {}).get("relabel", "none") != "none":
        name += " [oracle]"
    return name


def labels(runs: list[dict]) -> list[str]:
    """label() of each run; runs that would share a label get their directory's name added."""
    names = [label(run) for run in runs]
    return [
        f"{name} ({Path(run['dir']).name})" if names.count(name) > 1 else name
        for name, run in zip(names, runs, strict=True)
    ]


def statistics(run: dict, baseline: dict | None = None) -> dict:
    """Per-seed scores of a run and their summaries, for the table and the sentences.

    Keys: "offline", "final", "best", "auc" (per-seed arrays; empty where not measured yet),
    "final_iqm" and "auc_iqm" ((IQM, CI low, CI high), NaN if empty); with a baseline also
    "p_final" and "p_auc" (Welch's t-test p-values, NaN where undefined).
    """
    s, scores = run["summary"], run["scores"]
    offline_rows = scores[: len(scores) - len(run["online_scores"])]
    if s is not None:  # the summary is the contract; the curve is its fallback while unfinished
        offline, final, best = (
            np.asarray(s[k]["per_seed"], float)
            for k in ("offline_score", "final_score", "best_score")
        )
    else:
        offline = offline_rows[-1] if len(offline_rows) else np.array([])
        final = scores[-1] if len(scores) else np.array([])
        best = scores.max(axis=0) if len(scores) else np.array([])
    auc = run["online_scores"].mean(axis=0) if len(run["online_scores"]) else np.array([])
    stats = {
        "offline": offline,
        "final": final,
        "best": best,
        "auc": auc,
        "final_iqm": iqm_ci(final),
        "auc_iqm": iqm_ci(auc),
    }
    if baseline is not None:
        base = statistics(baseline)
        stats["p_final"] = welch_p(final, base["final"])
        stats["p_auc"] = welch_p(auc, base["auc"])
    return stats


def iqm(values, axis: int = -1):
    """Interquartile mean: the mean of the middle 50% of values (scipy's trim_mean, 25% cut)."""
    return scipy.stats.trim_mean(values, 0.25, axis=axis)


def bootstrap_ci(
    values,
    statistic=iqm,
    draws: int = BOOTSTRAP_DRAWS,
    seed: int = BOOTSTRAP_SEED,
    confidence: float = CONFIDENCE,
) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap interval of `statistic` over the last axis (seeds).

    Seeds are resampled with replacement, each as a whole (its full curve if `values` has more
    axes), `draws` times with a fixed numpy seed; the interval is the draws' central
    `confidence` quantiles.
    """
    x = np.asarray(values, float)
    n = x.shape[-1]
    idx = np.random.default_rng(seed).integers(0, n, size=(draws, n))
    samples = statistic(x[..., idx], axis=-1)  # (..., draws)
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(samples, [tail, 100 - tail], axis=-1)
    return low, high


def iqm_ci(values) -> tuple[float, float, float]:
    """(IQM, CI low, CI high) of per-seed values; NaNs if there are none."""
    v = np.asarray(values, float)
    if v.size == 0:
        return (math.nan, math.nan, math.nan)
    low, high = bootstrap_ci(v)
    return (float(iqm(v)), float(low), float(high))


def welch_p(a, b) -> float:
    """Two-sided Welch's t-test p-value (unequal variances); NaN with under 2 seeds or no spread."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) < 2 or len(b) < 2:
        return math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # zero variance: scipy's NaN is the answer
        return float(scipy.stats.ttest_ind(a, b, equal_var=False).pvalue)


def table(runs: list[dict], baseline: int | None = None) -> str:
    """A markdown table, one row per run: scores as mean ± std and IQM [95% CI] over seeds,
    online AUC, Welch p against runs[baseline] (columns only with a baseline), wall time."""
    names = labels(runs)
    base = runs[baseline] if baseline is not None else None
    columns = ["run", "dataset", "seeds", "offline score", "final score", "final IQM [95% CI]"]
    columns += ["online AUC", "AUC IQM [95% CI]"]
    if base is not None:
        columns += ["p final", "p AUC"]
    columns += ["best score", "wall total (s)", "wall online (s)", "status", "dir"]
    rows = []
    for i, (run, name) in enumerate(zip(runs, names, strict=True)):
        st = statistics(run, None if i == baseline else base)
        wall = (run["summary"] or {}).get("wall_time_s", {})
        cells = [name, run["config"]["dataset"], str(run["scores"].shape[1])]
        cells += [_mean_std(st["offline"]), _mean_std(st["final"]), _iqm_cell(st["final_iqm"])]
        cells += [_mean_std(st["auc"]), _iqm_cell(st["auc_iqm"])]
        if base is not None:
            cells += ["-", "-"] if i == baseline else [_p(st["p_final"]), _p(st["p_auc"])]
        cells += [_mean_std(st["best"]), _seconds(wall.get("total")), _seconds(wall.get("online"))]
        cells += [_status(run), run["dir"]]
        rows.append("| " + " | ".join(cells) + " |")
    notes = [
        "Scores are normalised; mean ± std over seeds. IQM: interquartile mean over seeds, "
        f"[95% CI]: percentile bootstrap over seeds ({BOOTSTRAP_DRAWS} draws). "
        "Online AUC: score averaged over the online evaluations.",
    ]
    if base is not None:
        notes.append(f"p: Welch's t-test against {names[baseline]} ({base['dir']}).")
    header = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return "\n".join([*header, *rows, "", *notes])


def comparisons(runs: list[dict], baseline: int) -> list[str]:
    """One sentence per run against runs[baseline]: final and AUC IQM [CI] and Welch p."""
    names = labels(runs)
    base_name, base = names[baseline], statistics(runs[baseline])
    sentences = []
    for i, (run, name) in enumerate(zip(runs, names, strict=True)):
        if i == baseline:
            continue
        st = statistics(run, runs[baseline])
        parts = [
            f"{what} IQM {_iqm_text(st[key + '_iqm'])} vs {base_name} {_iqm_text(base[key + '_iqm'])}"
            f"; {_p_sentence(st['p_' + key])}"
            for key, what in (("final", "final"), ("auc", "online AUC"))
        ]
        unfinished = [n for n, r in ((name, run), (base_name, runs[baseline])) if not r["summary"]]
        tail = f"; {' and '.join(unfinished)} unfinished: scores so far" if unfinished else ""
        sentences.append(f"{name}: " + "; ".join(parts) + tail + ".")
    return sentences


def plot(runs: list[dict], path: str | Path) -> Path:
    """Normalised score against steps: mean over seeds and its 95% bootstrap CI, one line per
    run."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for i, (run, name) in enumerate(zip(runs, labels(runs), strict=True)):
        if len(run["steps"]) == 0:
            continue
        mean = run["scores"].mean(axis=1)
        low, high = bootstrap_ci(run["scores"], statistic=np.mean)
        ax.plot(run["steps"], mean, label=name, color=f"C{i}")
        ax.fill_between(run["steps"], low, high, alpha=0.2, color=f"C{i}", linewidth=0)
    offline = {r["config"]["offline_steps"] for r in runs}
    if len(offline) == 1 and (boundary := offline.pop()) > 0:
        ax.axvline(boundary, color="grey", linestyle=":", linewidth=1)
        ax.text(boundary, ax.get_ylim()[1], " online", va="top", fontsize=8, color="grey")
    ax.set_xlabel("offline updates, then online env steps")
    ax.set_ylabel("normalised score")
    ax.set_title(", ".join(sorted({r["config"]["dataset"] for r in runs})))
    ax.grid(alpha=0.3)
    ax.legend(title="mean; band: 95% bootstrap CI over seeds", title_fontsize=8)
    return _save(plt, fig, path)


def plot_health(runs: list[dict], path: str | Path) -> Path | None:
    """Generator health at each retrain against online step: one panel per metric group, mean
    and min-max over seeds, one colour per run (as in plot()). None, and nothing written, if no
    run has retrain records."""
    names = labels(runs)
    shown = [(i, run) for i, run in enumerate(runs) if len(run["health"]["steps"])]
    if not shown:
        return None
    panels = [
        p for p in HEALTH_PANELS if any(_has_values(run, m) for _, run in shown for m, _, _ in p[1])
    ]
    if not panels:
        return None
    plt = _pyplot()
    ncols = min(4, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    height = 3.2 * nrows + 0.6  # 0.6 inch on top for the figure legend
    fig, axes = plt.subplots(nrows, ncols, figsize=(4 * ncols, height), squeeze=False)
    for ax in axes.flat[len(panels) :]:
        ax.set_visible(False)
    chance = _cep_chance([run for _, run in shown])
    for ax, (title, lines, log) in zip(axes.flat, panels, strict=False):
        for i, run in shown:
            steps = run["health"]["steps"]
            for metric, _, style in lines:
                if not _has_values(run, metric, positive=log):
                    continue
                v = run["health"][metric]
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)  # all-null retrains: NaN
                    mean, low, high = np.nanmean(v, 1), np.nanmin(v, 1), np.nanmax(v, 1)
                ax.plot(steps, mean, style, color=f"C{i}", marker=".")
                ax.fill_between(steps, low, high, alpha=0.15, color=f"C{i}", linewidth=0)
        drawn = [m for m, _, _ in lines if any(_has_values(r, m, log) for _, r in shown)]
        styles = [(lbl, style) for m, lbl, style in lines if lbl and m in drawn]
        if (level := chance.get(lines[0][0])) is not None:
            ax.axhline(level, color="grey", linestyle=":", linewidth=1)
            styles.append((f"chance {level:.2f}", ":"))
        if styles:
            handles = [plt.Line2D([], [], color="k", linestyle=s) for _, s in styles]
            ax.legend(handles, [lbl for lbl, _ in styles], fontsize=7)
        if log:
            ax.set_yscale("log", nonpositive="mask")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("online env steps", fontsize=8)
        ax.grid(alpha=0.3)
    handles = [plt.Line2D([], [], color=f"C{i}") for i, _ in shown]
    fig.legend(
        handles,
        [names[i] for i, _ in shown],
        loc="upper center",
        ncol=min(len(shown), 4),
        title="generator health at each retrain: mean, band min-max over seeds",
        title_fontsize=9,
    )
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.6 / height))
    return _save(plt, fig, path)


# ----------------------------------------------------------------------------------- helpers


def _read_records(path: Path) -> list[dict]:
    """metrics.jsonl's records; a line cut short by an interrupted write is skipped."""
    records = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def _health_arrays(retrains: dict[int, dict[int, dict]], seeds: int) -> dict:
    """{"steps": (retrains,), metric: (retrains, seeds)} with NaN for null or missing values."""
    steps = sorted(retrains)
    health: dict = {"steps": np.array(steps, int)}
    for _, lines, _ in HEALTH_PANELS:
        for metric, _, _ in lines:
            health[metric] = np.array(
                [[_number(retrains[t].get(i, {}).get(metric)) for i in range(seeds)] for t in steps]
            ).reshape(len(steps), seeds)
    return health


def _number(value) -> float:
    return math.nan if value is None else float(value)


def _has_values(run: dict, metric: str, positive: bool = False) -> bool:
    """Whether a run has a value of `metric` to draw (a positive one on a log scale)."""
    v = run["health"][metric]
    return bool((np.isfinite(v) & (v > 0 if positive else True)).any())


def _cep_chance(runs: list[dict]) -> dict[str, float]:
    """Chance CEP accuracy, keyed by the training-accuracy metric, as energy/cep.py measures it:
    E_s compares a positive with one negative (1/2); E_a and E_t count a positive that beats all
    its K negatives (1/(K+1)), K from the config, drawn only if all runs share it."""
    chance = {"cep_state_acc": 0.5}
    ks = {r["config"].get("energy", {}).get("num_negatives") for r in runs}
    if len(ks) == 1 and (k := ks.pop()):
        chance |= {"cep_policy_acc": 1 / (k + 1), "cep_transition_acc": 1 / (k + 1)}
    return chance


def _mean_std(values) -> str:
    v = np.asarray(values, float)
    return f"{v.mean():.1f} ± {v.std():.1f}" if v.size else "-"


def _iqm_cell(value_ci: tuple[float, float, float]) -> str:
    return "-" if math.isnan(value_ci[0]) else _iqm_text(value_ci)


def _iqm_text(value_ci: tuple[float, float, float]) -> str:
    value, low, high = value_ci
    return "n/a" if math.isnan(value) else f"{value:.1f} [{low:.1f}, {high:.1f}]"


def _p(p: float) -> str:
    if math.isnan(p):
        return "n/a"
    return "<0.001" if p < 0.001 else f"{p:.3g}"


def _p_sentence(p: float) -> str:
    if math.isnan(p):
        return "Welch p undefined (needs 2+ seeds per arm and some spread)"
    verdict = "significant" if p < SIGNIFICANCE else "not significant"
    value = "p < 0.001" if p < 0.001 else f"p = {_p(p)}"
    return f"Welch {value} ({verdict} at {SIGNIFICANCE})"


def _seconds(value) -> str:
    return "-" if value is None else f"{value:.0f}"


def _status(run: dict) -> str:
    if run["summary"] is not None:
        return "done"
    if run["progress"] is None:
        return "unfinished (no records yet)"
    phase, step = run["progress"]
    total = run["config"][f"{phase}_steps"]
    return f"unfinished ({phase} step {step}/{total})"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _check_writable(path: Path) -> None:
    """Refuse, before any work, a PNG path that cannot be written."""
    if path.is_dir():
        raise ReportError(f"--out {path} is a folder: give a .png file path")
    above = next(p for p in path.absolute().parents if p.exists())
    if not above.is_dir():
        raise ReportError(f"--out {path} lies below {above}, a file: choose another --out")
    if not os.access(above, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise ReportError(
            f"--out {path}: cannot write there (no permission or a read-only disk); choose a "
            "writable --out"
        )


def _save(plt, fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path

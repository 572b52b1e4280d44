"""The report's figures: learning curves with a t-interval band, generator health per retrain."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np

from edis_jax.report.stats import mean_ci

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


def plot(runs: list[dict], names: list[str], path: str | Path) -> Path:
    """Normalised score against steps: mean over seeds and its 95% t interval (stats.mean_ci;
    none with one seed), one line per run (`names`: their labels)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for i, (run, name) in enumerate(zip(runs, names, strict=True)):
        if len(run["steps"]) == 0:
            continue
        mean, low, high = np.array([mean_ci(seeds) for seeds in run["scores"]]).T
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
    ax.legend(title="mean; band: its 95% t interval over seeds", title_fontsize=8)
    return _save(plt, fig, path)


def plot_health(runs: list[dict], names: list[str], path: str | Path) -> Path | None:
    """Generator health at each retrain against online step: one panel per metric group, mean
    and min-max over seeds, one colour per run (as in plot()). None, and nothing written, if no
    run has retrain records."""
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


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt, fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path

"""`edis-jax report`: compare runs ("arms") over their seeds, plot learning curves and generator
health.

Per arm: the interquartile mean (IQM) over seeds with a 95% bootstrap interval (the rliable
method), and Welch's t-test against a baseline arm with the t interval of the difference of
means it inverts (stats.py); figures in plots.py. The online learning curve's area (AUC) is the
normalised score averaged over the online-phase evaluations, per seed.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import NamedTuple

import numpy as np

from edis_jax import config
from edis_jax.report import plots
from edis_jax.report.stats import (
    BOOTSTRAP_DRAWS,
    POWER,
    SIGNIFICANCE,
    detectable_difference,
    difference_ci,
    iqm_ci,
    mean_ci,
    ratio_ci,
    welch_p,
)
from edis_jax.storage.output_paths import check_output_file


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
    runs are tested against; it joins the table (first) if it is not among `run_dirs`. An arm
    given as comma-joined run directories is their seeds pooled (`pool`)."""
    if not run_dirs and baseline is None:
        raise ReportError("give at least one run directory: edis-jax report RUN_DIR [RUN_DIR...]")
    dirs = list(run_dirs)
    base_index = None
    if baseline is not None:
        resolved = [_resolved(d) for d in dirs]
        if _resolved(baseline) in resolved:
            base_index = resolved.index(_resolved(baseline))
        else:
            dirs, base_index = [baseline, *dirs], 0
    first = dirs[0].split(",")[0]
    out_path = Path(out) if out else Path(first).resolve().parent / "report.png"
    check_output_file(out_path, "--out")
    runs = [load_arm(d) for d in dirs]
    names = labels(runs)
    curves = plots.plot(runs, names, out_path)
    health = plots.plot_health(runs, names, out_path.with_name(out_path.stem + "_health.png"))
    parts = [table(runs, base_index)]
    damaged = [f"{r['dir']} ({r['skipped_lines']})" for r in runs if r["skipped_lines"]]
    if damaged:
        parts.append(
            "warning: unreadable lines of metrics.jsonl were skipped, so these runs' curves may "
            f"miss points: {', '.join(damaged)}; `edis-jax resume` rewrites the file from the "
            "checkpoint"
        )
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
    summary = _read_json(summary_file) if summary_file.is_file() else None
    config = _read_json(config_file)
    records, skipped = _read_records(metrics_file)
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
        if "eval_score" not in r:
            continue
        key = (r["step"] + (config["offline_steps"] if online else 0), int(online))
        # null: a score that was not finite (records.json_float), NaN here so that it shows
        score = r["eval_score"]
        evals.setdefault(key, {})[r["seed"]] = math.nan if score is None else float(score)
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
        "skipped_lines": skipped,
    }


def load_arm(spec: str) -> dict:
    """A run directory, or comma-joined run directories pooled into one arm (`pool`)."""
    return pool([load_run(d) for d in spec.split(",")]) if "," in spec else load_run(spec)


# What may differ between runs pooled into one arm: where they ran and which seeds they drew.
POOLED_KEYS = ("seed", "seeds", "out", "init_from", "generator_from", "log")


def pool(runs: list[dict]) -> dict:
    """One arm of the seeds of several runs of the same settings (blocks of seeds, e.g.
    `benchmarks.comparison --seed b`, run where a block fits): their seeds side by side, in
    the order given, as `load_run` gives one run. They must differ only in POOLED_KEYS, in
    their base seeds (the same base seed draws the same seeds), and share their evaluation
    steps; a summary only if every run has one. Wall times add up."""
    if len(runs) == 1:
        return runs[0]
    first, names = runs[0], ", ".join(r["dir"] for r in runs)
    keep = lambda c: {k: v for k, v in c.items() if k not in POOLED_KEYS}  # noqa: E731
    for run in runs[1:]:
        differ = sorted(k for k in keep(first["config"]) | keep(run["config"])
                        if keep(first["config"]).get(k) != keep(run["config"]).get(k))  # fmt: skip
        if differ:
            raise ReportError(
                f"{first['dir']} and {run['dir']} differ in {', '.join(differ)}: only runs of "
                "the same settings pool into one arm"
            )
        if not np.array_equal(run["steps"], first["steps"]):
            raise ReportError(
                f"{first['dir']} and {run['dir']} were evaluated at different steps: pool runs "
                "that have reached the same evaluations (finished ones)"
            )
    bases = [r["config"].get("seed", 0) for r in runs]
    if len(set(bases)) < len(bases):
        raise ReportError(
            f"{names} share a base seed (--seed): their seeds are the same draws, not more seeds"
        )
    seeds = sum(r["scores"].shape[1] for r in runs)
    summaries = [r["summary"] for r in runs]
    summary = None
    if all(summaries):
        summary = dict(summaries[0])
        for key in ("offline_score", "final_score", "best_score"):
            per_seed = np.concatenate([np.asarray(s[key]["per_seed"], float) for s in summaries])
            summary[key] = {"mean": per_seed.mean(), "std": per_seed.std(), "per_seed": per_seed}
        walls = [s.get("wall_time_s", {}) for s in summaries]
        summary["wall_time_s"] = {k: sum(w.get(k) or 0.0 for w in walls) for k in walls[0]}
        machines = sorted({_machine_label(s.get("machine")) for s in summaries})
        summary["machine"] = {"label": " + ".join(machines)} if len(machines) > 1 else (
            summaries[0].get("machine"))  # fmt: skip
    health_steps = [r["health"]["steps"] for r in runs]
    if all(np.array_equal(h, health_steps[0]) for h in health_steps):
        health = {k: np.concatenate([r["health"][k] for r in runs], axis=1) for k in first["health"]
                  if k != "steps"} | {"steps": health_steps[0]}  # fmt: skip
    else:  # retrains at different steps (an unfinished run): not drawn
        health = _health_arrays({}, seeds)
    return {
        "dir": ",".join(r["dir"] for r in runs),
        "config": first["config"] | {"seeds": seeds, "seed": bases},
        "summary": summary,
        "steps": first["steps"],
        "scores": np.concatenate([r["scores"] for r in runs], axis=1),
        "online_scores": np.concatenate([r["online_scores"] for r in runs], axis=1),
        "health": health,
        "progress": first["progress"],
        "skipped_lines": sum(r["skipped_lines"] for r in runs),
    }


def label(run: dict) -> str:
    """The run's name: algorithm, -EDIS (-SynthER without guidance), then a tag for each online
    setting that sets it apart from the default arm: its guidance energies where not all three,
    the batch mixture or synthetic ratio, the published schedule, the oracle relabelling; for a
    baseline, its online share of each online batch."""
    c = run["config"]
    online = c.get("online", {})
    edis = c["edis"] and c["online_steps"] > 0
    algo = c["algo"].upper()
    if not edis:
        share = online.get("baseline_online_ratio", 0.0)
        return f"{algo} [online share {share:g}]" if share > 0 else algo
    if not c["guide"]:
        name = f"{algo}-SynthER"
    else:
        name = f"{algo}-EDIS"
        if tuple(c["guide"]) != ("state", "policy", "transition"):
            name += f" [{','.join(c['guide'])}]"
    default = config.OnlineConfig()
    if online.get("mixture") is not None:
        name += f" [mixture {'/'.join(f'{w:g}' for w in online['mixture'])}]"
    elif online.get("synthetic_ratio", default.synthetic_ratio) != default.synthetic_ratio:
        name += f" [synthetic ratio {online['synthetic_ratio']:g}]"
    if online.get("schedule", default.schedule) != default.schedule:
        name += f" [{online['schedule']} schedule]"
    if online.get("relabel", default.relabel) != default.relabel:
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
        "Scores are normalised; mean ± std over seeds (numpy's population std, ddof 0). IQM: "
        f"interquartile mean over seeds, [95% CI]: percentile bootstrap over seeds "
        f"({BOOTSTRAP_DRAWS} draws; it covers less than 95% at few seeds, about 73% at 3 and 92% "
        "at 8: it describes the spread, the p tests). Online AUC: score averaged over the "
        "online evaluations.",
    ]
    if base is not None:
        notes.append(f"p: Welch's t-test against {names[baseline]} ({base['dir']}).")
    notes.append(_machines_note(runs, names))
    header = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return "\n".join([*header, *rows, "", *notes])


def comparisons(runs: list[dict], baseline: int) -> list[str]:
    """One sentence per run against runs[baseline]: final and AUC IQM [CI], the difference of
    means with Welch's interval and p, and the difference these seeds detect with 80% power
    (stats.detectable_difference)."""
    names = labels(runs)
    base_name, base = names[baseline], statistics(runs[baseline])
    sentences = []
    for i, (run, name) in enumerate(zip(runs, names, strict=True)):
        if i == baseline:
            continue
        st = statistics(run, runs[baseline])
        parts = [
            f"{what} IQM {_iqm_text(st[key + '_iqm'])} vs {base_name} {_iqm_text(base[key + '_iqm'])}"
            f"; mean difference {_difference_text(difference_ci(st[key], base[key]))}, "
            f"{_p_sentence(st['p_' + key])}"
            f"; the seeds detect a difference of "
            f"{_number_text(detectable_difference(st[key], base[key]))} with {POWER:.0%} power"
            for key, what in (("final", "final"), ("auc", "online AUC"))
        ]
        unfinished = [n for n, r in ((name, run), (base_name, runs[baseline])) if not r["summary"]]
        tail = f"; {' and '.join(unfinished)} unfinished: scores so far" if unfinished else ""
        sentences.append(f"{name}: " + "; ".join(parts) + tail + ".")
    return sentences


def contrasts(pairs: list[tuple[str, dict, dict]]) -> str:
    """A markdown table, one row per (what the pair isolates, run A, run B): the difference
    A - B of the mean final score and of the mean online AUC over seeds, each with Welch's 95%
    interval (stats.difference_ci) and p."""
    rows = [
        "| contrast | A - B | final: mean A - B [95% CI] | p final | detectable final | online "
        "AUC: mean A - B [95% CI] | p AUC | detectable AUC |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for what, a, b in pairs:
        sa, sb = statistics(a), statistics(b)
        names = " - ".join(labels([a, b]))
        cells = [what, names]
        for key in ("final", "auc"):
            cells += [
                _difference_text(difference_ci(sa[key], sb[key])),
                _p(welch_p(sa[key], sb[key])),
                _number_text(detectable_difference(sa[key], sb[key])),
            ]
        rows.append("| " + " | ".join(cells) + " |")
    rows += [
        "",
        "Differences of means over seeds; [95% CI]: Welch's interval, which excludes 0 exactly "
        f"where p < {SIGNIFICANCE}; p: Welch's t-test. Detectable: the "
        f"smallest true difference that Welch's test of these seeds finds (p < {SIGNIFICANCE}) "
        f"{POWER:.0%} of the time, seeds normal with the spreads measured (simulated); a "
        "difference d needs at most about seeds x (detectable / d)^2 seeds per arm.",
    ]
    return "\n".join(rows)


def improvements(runs: list[dict], baseline: int = 0) -> str:
    """A markdown table, one row per run: its online improvement (final - offline score per
    seed) as mean [95% CI] (Student's t), and that mean over runs[baseline]'s with its bootstrap
    interval and Welch's p (the EDIS paper's claim is a ratio of at least 1.2 over its baseline)."""
    names = labels(runs)
    gain = [statistics(r)["final"] - statistics(r)["offline"] for r in runs]
    rows = [
        f"| run | improvement: mean [95% CI] | ratio to {names[baseline]}'s [95% CI] | p |",
        "|---|---|---|---|",
    ]
    for i, name in enumerate(names):
        ratio = ratio_ci(gain[i], gain[baseline])
        p = "-" if i == baseline else _p(welch_p(gain[i], gain[baseline]))
        rows.append(
            f"| {name} | {_difference_text(mean_ci(gain[i]))} | {_ratio_text(ratio)} | {p} |"
        )
    rows += [
        "",
        "Per seed: final score - offline score (normalised). Improvement [95% CI]: Student's t "
        f"interval; ratio [95% CI]: percentile bootstrap ({BOOTSTRAP_DRAWS} draws), each run's "
        "seeds resampled on their own; p: Welch's t-test of the improvements.",
    ]
    return "\n".join(rows)


# ----------------------------------------------------------------------------------- helpers


def _machines_note(runs: list[dict], names: list[str]) -> str:
    """Which machine measured each run's wall time (summary.json's "machine"): wall times from
    different machines, or from runs that did not record theirs, do not compare."""
    runs_on: dict[str, list[str]] = {}
    for run, name in zip(runs, names, strict=True):
        env = (run["summary"] or {}).get("machine")
        runs_on.setdefault(_machine_label(env), []).append(name)
    if list(runs_on) == ["unrecorded"]:  # runs written before summaries kept it
        return "Wall times: the runs did not record their machine."
    if len(runs_on) == 1:
        return f"Wall times on one machine: {next(iter(runs_on))}."
    parts = [f"{where} ({', '.join(named)})" for where, named in runs_on.items()]
    return f"Wall times on {len(runs_on)} machines, not comparable across them: {'; '.join(parts)}."


def _machine_label(env: dict | None) -> str:
    """The device (the CPU's name and vector extension on a CPU) and the jax version."""
    if not env:
        return "unrecorded"
    if "label" in env:  # a pooled arm's several machines
        return env["label"]
    where = env.get("cpu") if env.get("platform") == "cpu" else env.get("device")
    return f"{where or '?'}, jax {env.get('jax', '?')}"


def _read_records(path: Path) -> tuple[list[dict], int]:
    """metrics.jsonl's records, and how many of its lines are not records (a line cut short by
    an interrupted write, or damage): skipped, and counted so that the report says so."""
    records, skipped = [], 0
    for line in path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if isinstance(record, dict):
            records.append(record)
        elif line.strip():
            skipped += 1
    return records, skipped


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text(errors="replace"))
    except json.JSONDecodeError as e:
        value = e
    if not isinstance(value, dict):
        raise ReportError(
            f"{path} is damaged (not a JSON object): restore it, or `edis-jax resume` the run "
            "to write it again"
        )
    return value


def _health_arrays(retrains: dict[int, dict[int, dict]], seeds: int) -> dict:
    """{"steps": (retrains,), metric: (retrains, seeds)} with NaN for null or missing values."""
    steps = sorted(retrains)
    health: dict = {"steps": np.array(steps, int)}
    for _, lines, _ in plots.HEALTH_PANELS:
        for metric, _, _ in lines:
            health[metric] = np.array(
                [[_number(retrains[t].get(i, {}).get(metric)) for i in range(seeds)] for t in steps]
            ).reshape(len(steps), seeds)
    return health


def _resolved(spec: str) -> tuple[Path, ...]:
    """A run directory or comma-joined ones, resolved (to find the baseline among the arms)."""
    return tuple(Path(d).resolve() for d in spec.split(","))


def _number(value) -> float:
    return math.nan if value is None else float(value)


def _mean_std(values) -> str:
    v = np.asarray(values, float)
    return f"{v.mean():.1f} ± {v.std():.1f}" if v.size else "-"


def _iqm_cell(value_ci: tuple[float, float, float]) -> str:
    return "-" if math.isnan(value_ci[0]) else _iqm_text(value_ci)


def _iqm_text(value_ci: tuple[float, float, float]) -> str:
    value, low, high = value_ci
    return "n/a" if math.isnan(value) else f"{value:.1f} [{low:.1f}, {high:.1f}]"


def _number_text(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.1f}"


def _difference_text(value_ci: tuple[float, float, float]) -> str:
    value, low, high = value_ci
    return "n/a" if math.isnan(value) else f"{value:+.1f} [{low:+.1f}, {high:+.1f}]"


def _ratio_text(value_ci: tuple[float, float, float]) -> str:
    value, low, high = value_ci
    return "-" if math.isnan(value) else f"{value:.2f}x [{low:.2f}, {high:.2f}]"


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
    if run["skipped_lines"]:
        return f"damaged ({run['skipped_lines']} unreadable lines in metrics.jsonl skipped)"
    if run["summary"] is not None:
        return "done"
    if run["progress"] is None:
        return "unfinished (no records yet)"
    phase, step = run["progress"]
    total = run["config"][f"{phase}_steps"]
    return f"unfinished ({phase} step {step}/{total})"

"""`edis-jax report` on run directories written by the tests themselves (no training): labels,
the IQM column, the online AUC, Welch's t-test against a baseline, unfinished
runs, the generator-health figure and the CLI."""

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.stats

from edis_jax import cli, report
from edis_jax.report import stats

OFFLINE_STEPS, ONLINE_STEPS = 100, 200
ONLINE_EVAL_STEPS = (0, 100, 200)


def fake_run(directory: str, edis: bool, guide=("state", "policy", "transition")) -> dict:
    config = {"algo": "iql", "edis": edis, "online_steps": 10, "guide": list(guide)}
    return {"dir": directory, "config": config}


def test_labels_name_runs_and_tell_equal_names_apart():
    runs = [
        fake_run("runs/a/iql", edis=False),
        fake_run("runs/a/iql_edis", edis=True),
        fake_run("runs/b/iql_edis_cep500", edis=True),
        fake_run("runs/c/state_only", edis=True, guide=("state",)),
        fake_run("runs/c/synther", edis=True, guide=()),
    ]
    runs.append(fake_run("runs/d/oracle", edis=True))
    runs[-1]["config"]["online"] = {"relabel": "simulator"}
    runs.append(fake_run("runs/d/online_half", edis=False))
    runs[-1]["config"]["online"] = {"baseline_online_ratio": 0.5}
    # The comparison's controls: each names what it changes (a config.json written before a
    # field existed lacks it, which reads as the default).
    for online in (
        {"mixture": [0.25, 0.25, 0.5], "synthetic_ratio": 0.5, "schedule": "clean"},
        {"mixture": None, "synthetic_ratio": 0.0},
        {"schedule": "published", "relabel": "none"},
        {"synthetic_ratio": 0.5, "schedule": "clean", "relabel": "none"},
    ):
        runs.append(fake_run("runs/e/control", edis=True))
        runs[-1]["config"]["online"] = online
    assert report.labels(runs) == [
        "IQL",
        "IQL-EDIS (iql_edis)",
        "IQL-EDIS (iql_edis_cep500)",
        "IQL-EDIS [state]",
        "IQL-SynthER",
        "IQL-EDIS [oracle]",
        "IQL [online share 0.5]",
        "IQL-EDIS [mixture 0.25/0.25/0.5]",
        "IQL-EDIS [synthetic ratio 0]",
        "IQL-EDIS [published schedule]",
        "IQL-EDIS (control)",
    ]


def write_run(path, online, offline=None, edis=False, retrain=None, finished=True, extra_lines=()):
    """A run directory as `edis-jax train` writes it. `online`: (len(ONLINE_EVAL_STEPS), seeds)
    online-phase scores; `offline`: per-seed scores of the offline evaluations at steps 0 and
    OFFLINE_STEPS; `retrain`: per-seed health metrics written at online steps 100 and 150."""
    online = np.asarray(online, float)
    seeds = online.shape[1]
    offline = np.full(seeds, 5.0) if offline is None else np.asarray(offline, float)
    path.mkdir(parents=True)
    config = {
        "algo": "iql",
        "edis": edis,
        "guide": ["state", "policy", "transition"] if edis else [],
        "dataset": "local/test/medium-v0",
        "seeds": seeds,
        "offline_steps": OFFLINE_STEPS,
        "online_steps": ONLINE_STEPS,
        "energy": {"num_negatives": 4},
    }
    (path / "config.json").write_text(json.dumps(config))
    records = []
    for step, scores in ((0, offline - 3.0), (OFFLINE_STEPS, offline)):
        records += [
            {"phase": "offline", "step": step, "seed": i, "eval_score": float(scores[i])}
            for i in range(seeds)
        ]
    evals = list(zip(ONLINE_EVAL_STEPS, online, strict=True))
    if not finished:
        evals = evals[:2]
    for step, scores in evals:
        records += [
            {"phase": "online", "step": step, "seed": i, "loss": 1.0, "eval_score": float(s)}
            for i, s in enumerate(scores)
        ]
        if retrain is not None and step in (100,):
            for k, t in enumerate((100, 150)):
                records += [
                    {"phase": "online", "step": t, "seed": i, "event": "retrain", "retrain": k}
                    | {name: values[i] for name, values in retrain.items()}
                    for i in range(seeds)
                ]
    lines = [json.dumps(r) for r in records] + list(extra_lines)
    (path / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    if finished:
        stats = lambda v: {"mean": v.mean(), "std": v.std(), "per_seed": v.tolist()}  # noqa: E731
        all_scores = np.vstack([offline - 3.0, offline, online])
        summary = {
            "algo": "iql",
            "edis": edis,
            "guide": config["guide"],
            "dataset": config["dataset"],
            "seeds": seeds,
            "offline_score": stats(offline),
            "final_score": stats(online[-1]),
            "best_score": stats(all_scores.max(axis=0)),
            "wall_time_s": {"offline": 10.0, "online": 90.0, "total": 100.0},
            "env_steps_per_s": 2.0,
            "updates_per_s": 3.0,
        }
        (path / "summary.json").write_text(json.dumps(summary))
    return path


def test_a_seed_whose_score_was_not_finite_shows_as_nan_not_as_a_missing_evaluation(tmp_path):
    run = write_run(tmp_path / "iql", curve(BASE_FINAL))
    lines = (run / "metrics.jsonl").read_text().splitlines()
    last = max(i for i, line in enumerate(lines) if '"seed": 3' in line and "eval_score" in line)
    record = json.loads(lines[last])
    lines[last] = json.dumps(record | {"eval_score": None})  # what records.json_float writes
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    loaded = report.load_run(run)
    assert loaded["scores"].shape == (2 + len(ONLINE_EVAL_STEPS), 8)  # no evaluation dropped
    assert (
        np.isnan(loaded["scores"][-1, 3]) and np.isfinite(np.delete(loaded["scores"], 3, 1)).all()
    )
    assert np.isnan(report.statistics(loaded)["auc"][3])


def curve(final, start=10.0):
    """Online scores at ONLINE_EVAL_STEPS rising linearly to `final`, per seed."""
    final = np.asarray(final, float)
    return np.stack([np.full_like(final, start), (start + final) / 2, final])


BASE_FINAL = [60.0, 62.0, 65.0, 66.0, 70.0, 71.0, 75.0, 80.0]
EDIS_FINAL = [30.0, 35.0, 38.0, 40.0, 41.0, 45.0, 50.0, 90.0]


def test_statistics_of_run_dirs_final_auc_and_welch_p(tmp_path):
    base_online, edis_online = curve(BASE_FINAL), curve(EDIS_FINAL, start=20.0)
    write_run(tmp_path / "iql", base_online)
    # a retrain record that carried a score and a line cut short must not reach the curve
    bogus = json.dumps({"phase": "online", "step": 50, "seed": 0, "event": "retrain"})
    bogus = bogus[:-1] + ', "eval_score": 999.0}'
    write_run(tmp_path / "edis", edis_online, edis=True, extra_lines=[bogus, '{"phase": "onl'])
    base, edis = report.load_run(tmp_path / "iql"), report.load_run(tmp_path / "edis")
    assert edis["scores"].shape == (2 + len(ONLINE_EVAL_STEPS), 8)  # 2 offline + 3 online evals
    assert 999.0 not in edis["scores"]
    assert list(edis["steps"]) == [0, OFFLINE_STEPS, *(OFFLINE_STEPS + t for t in (0, 100, 200))]

    st = report.statistics(edis, baseline=base)
    np.testing.assert_allclose(st["final"], EDIS_FINAL)
    # AUC: mean over the three online evaluations only (the offline ones score 5 and 2)
    np.testing.assert_allclose(st["auc"], [(20 + (20 + f) / 2 + f) / 3 for f in EDIS_FINAL])
    assert st["final_iqm"][0] == pytest.approx(np.mean([38, 40, 41, 45]))
    assert st["final_iqm"][1] <= st["final_iqm"][0] <= st["final_iqm"][2]
    base_auc = base_online.mean(axis=0)
    expected_final = scipy.stats.ttest_ind(EDIS_FINAL, BASE_FINAL, equal_var=False).pvalue
    expected_auc = scipy.stats.ttest_ind(st["auc"], base_auc, equal_var=False).pvalue
    assert st["p_final"] == pytest.approx(expected_final)
    assert st["p_auc"] == pytest.approx(expected_auc)
    assert "p_final" not in report.statistics(edis) and "p_auc" not in report.statistics(edis)


def test_report_text_with_and_without_baseline(tmp_path):
    base_dir = write_run(tmp_path / "iql", curve(BASE_FINAL))
    edis_dir = write_run(tmp_path / "edis", curve(EDIS_FINAL), edis=True)

    plain = report.report([str(base_dir), str(edis_dir)], out=str(tmp_path / "plain.png"))
    assert "p final" not in plain.text and "Welch" not in plain.text
    assert "| IQL | local/test/medium-v0 | 8 |" in plain.text
    assert plain.curves.is_file()

    # the baseline is not among the runs: it joins the table, first, with "-" as its p
    r = report.report([str(edis_dir)], out=str(tmp_path / "r.png"), baseline=str(base_dir))
    rows = [line for line in r.text.splitlines() if line.startswith("| IQL")]
    assert [row.split(" | ")[0] for row in rows] == ["| IQL", "| IQL-EDIS"]
    columns = r.text.splitlines()[0].split(" | ")
    p_col = columns.index("p final")
    assert rows[0].split(" | ")[p_col] == "-"
    p = scipy.stats.ttest_ind(EDIS_FINAL, BASE_FINAL, equal_var=False).pvalue
    assert rows[1].split(" | ")[p_col] == ("<0.001" if p < 0.001 else f"{p:.3g}")
    iqm = stats.iqm_ci(EDIS_FINAL)
    base_iqm = stats.iqm_ci(BASE_FINAL)
    diff = stats.difference_ci(EDIS_FINAL, BASE_FINAL)  # Welch's interval, by test_stats
    assert (
        f"IQL-EDIS: final IQM {iqm[0]:.1f} [{iqm[1]:.1f}, {iqm[2]:.1f}] vs IQL "
        f"{base_iqm[0]:.1f} [{base_iqm[1]:.1f}, {base_iqm[2]:.1f}]; mean difference "
        f"{diff[0]:+.1f} [{diff[1]:+.1f}, {diff[2]:+.1f}], Welch p = "
    ) in r.text
    assert "(significant at 0.05)" in r.text  # these arms differ by ~30 points
    detectable = stats.detectable_difference(EDIS_FINAL, BASE_FINAL)
    assert (
        f"(significant at 0.05); the seeds detect a difference of {detectable:.1f} with 80% "
        "power; online AUC IQM"
    ) in r.text

    # the baseline listed among the runs is not repeated
    r = report.report(
        [str(base_dir), str(edis_dir)], out=str(tmp_path / "r2.png"), baseline=str(base_dir)
    )
    assert sum(line.startswith("| IQL |") for line in r.text.splitlines()) == 1


def test_the_table_says_which_machine_measured_each_wall_time(tmp_path):
    dirs = [write_run(tmp_path / n, curve(BASE_FINAL), edis=n != "iql") for n in ("iql", "a", "b")]
    epyc = {"platform": "cpu", "cpu": "AMD EPYC; avx2", "device": "cpu", "jax": "0.12.1"}
    h100 = {
        "platform": "gpu",
        "cpu": "Intel Xeon; avx512f",
        "device": "NVIDIA H100",
        "jax": "0.12.1",
    }
    text = lambda: report.report([str(d) for d in dirs], out=str(tmp_path / "r.png")).text  # noqa: E731
    assert "Wall times: the runs did not record their machine." in text()
    for path, env in zip(dirs[:2], (epyc, epyc), strict=True):
        summary = json.loads((path / "summary.json").read_text())
        (path / "summary.json").write_text(json.dumps(summary | {"machine": env}))
    # b ran before summaries recorded their machine
    assert (
        "Wall times on 2 machines, not comparable across them: AMD EPYC; avx2, jax 0.12.1 (IQL, "
        in text()
    )
    assert "unrecorded (" in text()
    summary = json.loads((dirs[2] / "summary.json").read_text())
    (dirs[2] / "summary.json").write_text(json.dumps(summary | {"machine": h100}))
    assert "NVIDIA H100, jax 0.12.1 (" in text()  # the device, not the host's CPU, on a GPU
    summary["machine"] = epyc
    (dirs[2] / "summary.json").write_text(json.dumps(summary))
    assert "Wall times on one machine: AMD EPYC; avx2, jax 0.12.1." in text()


def test_unfinished_run_shows_what_its_metrics_give(tmp_path):
    run_dir = write_run(tmp_path / "edis", curve(EDIS_FINAL, start=20.0), edis=True, finished=False)
    run = report.load_run(run_dir)
    assert run["summary"] is None
    st = report.statistics(run)
    np.testing.assert_allclose(st["final"], (20.0 + np.array(EDIS_FINAL)) / 2)  # last eval so far
    np.testing.assert_allclose(st["offline"], 5.0)
    text = report.report([str(run_dir)], out=str(tmp_path / "r.png")).text
    assert "unfinished (online step 100/200)" in text


def test_health_figure_only_for_runs_with_retrain_records(tmp_path):
    health = {
        "diffusion_loss": [0.5, 0.4],
        "cep_state_acc": [0.6, 0.7],
        "cep_state_heldout_acc": [0.55, None],
        "synthetic_dynamics_error": [0.1, 0.2],
        "real_dynamics_error": [0.0, 0.0],
    }
    base_dir = write_run(tmp_path / "iql", curve(BASE_FINAL[:2]))
    edis_dir = write_run(tmp_path / "edis", curve(EDIS_FINAL[:2]), edis=True, retrain=health)
    edis = report.load_run(edis_dir)
    assert list(edis["health"]["steps"]) == [100, 150]
    np.testing.assert_allclose(edis["health"]["cep_state_heldout_acc"], [[0.55, np.nan]] * 2)
    assert np.isnan(edis["health"]["clipped_action_frac"]).all()

    r = report.report([str(base_dir), str(edis_dir)], out=str(tmp_path / "cmp.png"))
    assert r.health == tmp_path / "cmp_health.png" and r.health.is_file()
    assert "no health figure" not in r.text

    r = report.report([str(base_dir)], out=str(tmp_path / "base.png"))
    assert r.health is None and not (tmp_path / "base_health.png").exists()
    assert "no health figure written" in r.text


def test_cli_report_with_baseline(tmp_path, capsys):
    base_dir = write_run(tmp_path / "iql", curve(BASE_FINAL))
    health = {"diffusion_loss": [0.3] * 8}
    edis_dir = write_run(tmp_path / "edis", curve(EDIS_FINAL), edis=True, retrain=health)
    out = tmp_path / "cli.png"
    argv = ["report", str(edis_dir), "--baseline", str(base_dir), "--out", str(out)]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert "Welch p" in printed and "| p final | p AUC |" in printed
    assert f"learning curves: {out}" in printed
    assert f"generator health: {tmp_path / 'cli_health.png'}" in printed
    assert cli.main(["report", str(edis_dir), "--baseline", str(tmp_path / "nope")]) == 2
    assert "has no metrics.jsonl" in capsys.readouterr().err


def test_contrasts_table_gives_each_difference_its_interval_and_p(tmp_path):
    from benchmarks import comparison

    write_run(tmp_path / "iql", curve(BASE_FINAL))
    write_run(tmp_path / "iql_edis", curve(EDIS_FINAL, start=20.0), edis=True)
    write_run(tmp_path / "iql_online_half", curve(BASE_FINAL), finished=False)
    finished = [str(tmp_path / "iql"), str(tmp_path / "iql_edis")]
    # Only pairs whose two arms have finished: the online-share control has not.
    pairs = comparison.contrast_pairs(tmp_path, finished)
    assert [what for what, _, _ in pairs] == ["EDIS as a whole"]
    text = report.contrasts(pairs)
    row = next(line for line in text.splitlines() if line.startswith("| EDIS as a whole"))
    diff, low, high = stats.difference_ci(EDIS_FINAL, BASE_FINAL)
    assert diff == pytest.approx(np.mean(EDIS_FINAL) - np.mean(BASE_FINAL))
    p = scipy.stats.ttest_ind(EDIS_FINAL, BASE_FINAL, equal_var=False).pvalue
    detectable = stats.detectable_difference(EDIS_FINAL, BASE_FINAL)
    assert f"{diff:+.1f} [{low:+.1f}, {high:+.1f}] | {p:.3g} | {detectable:.1f} |" in row
    assert "Detectable: the smallest true difference" in text
    assert "IQL-EDIS - IQL" in row
    # Every contrast names two arms of its algorithm's comparison.
    for algo, contrasts in comparison.CONTRASTS.items():
        assert all({a, b} <= set(comparison.ARMS[algo]) for _, a, b in contrasts), algo


def test_improvements_table_gives_each_gain_and_its_ratio_to_the_baseline(tmp_path):
    """The Cal-QL comparison's target is a ratio of online improvements (final - offline):
    each run's mean gain with its interval, and its ratio to the baseline's."""
    base_offline, edis_offline = np.full(8, 10.0), np.linspace(8.0, 12.0, 8)
    base = write_run(tmp_path / "iql", curve(BASE_FINAL), offline=base_offline)
    edis = write_run(tmp_path / "edis", curve(EDIS_FINAL), offline=edis_offline, edis=True)
    text = report.improvements([report.load_run(base), report.load_run(edis)])
    base_gain, edis_gain = np.array(BASE_FINAL) - 10.0, np.array(EDIS_FINAL) - edis_offline
    rows = [line for line in text.splitlines() if line.startswith("| IQL")]
    mean, low, high = stats.mean_ci(edis_gain)
    ratio, r_low, r_high = stats.ratio_ci(edis_gain, base_gain)
    p = scipy.stats.ttest_ind(edis_gain, base_gain, equal_var=False).pvalue
    assert rows[1] == (
        f"| IQL-EDIS | {mean:+.1f} [{low:+.1f}, {high:+.1f}] | {ratio:.2f}x [{r_low:.2f}, "
        f"{r_high:.2f}] | {p:.3g} |"
    )
    assert ratio == pytest.approx(edis_gain.mean() / base_gain.mean())
    assert rows[0].startswith(f"| IQL | {base_gain.mean():+.1f}") and "1.00x" in rows[0]
    assert rows[0].endswith("| - |")


def test_comparison_runs_arms_from_a_baseline_archived_in_an_earlier_session(
    tmp_path, monkeypatch, capsys
):
    """On a new machine the baseline's run is gone but its results are archived: `--arms`
    without the baseline trains it only to where those arms start (the clean Cal-QL arms: its
    first retrain), archives only finished arms, and reports from the archive, which holds the
    baseline and every arm finished since."""
    from benchmarks import comparison
    from edis_jax import make_run

    out, dest = tmp_path / "runs", tmp_path / "archive"
    write_run(dest / "calql", curve(BASE_FINAL))
    calls = []

    def run_or_continue(cfg, *, stop_at_online_step=None):
        calls.append((Path(cfg.out).name, stop_at_online_step))
        if stop_at_online_step is None and not Path(cfg.out).exists():  # an asked arm finishes
            write_run(Path(cfg.out), curve(EDIS_FINAL), edis=True)

    monkeypatch.setattr(make_run, "run_or_continue", run_or_continue)
    argv = ["--algo", "calql", "--out", str(out), "--arms", "calql_edis", "--archive", str(dest)]
    assert comparison.main(argv) == 0
    retrain_every = comparison.SIZES["calql", "cpu"].retrain_every
    assert calls == [("calql", retrain_every), ("calql_edis", None)]
    assert (dest / "calql_edis" / "summary.json").is_file()
    assert not (out / "calql").exists()  # nothing archived of the unfinished baseline
    printed = capsys.readouterr().out
    assert "not among --arms, trained to online step 750 only" in printed
    assert "EDIS as a whole: the clean schedule" in printed  # calql_edis - the archived calql
    assert (dest / "report.md").read_text().strip() in printed
    # Without the archive there is no finished baseline to report against: one line, 1.
    assert comparison.main(argv[:-2]) == 1
    assert "has not finished" in capsys.readouterr().out


def test_arms_start_where_the_first_of_them_needs_the_baseline():
    from benchmarks import comparison

    configs = comparison.arm_configs(Path("runs"), list(comparison.ARMS["calql"]), "calql")
    by_name = {Path(c.out).name: c for c in configs}
    r = by_name["calql"].online.retrain_every
    assert comparison.arms_start([by_name["calql_edis"], by_name["calql_synther"]]) == r
    assert comparison.arms_start([by_name["calql_edis_published"]]) == 0  # offline-phase start
    assert comparison.arms_start([by_name["calql_edis_published"], by_name["calql_edis"]]) == r


def _block(path, online, base_seed, edis=False):
    """write_run with its config's base seed (--seed) set."""
    run = write_run(path, online, edis=edis)
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps(config | {"seed": base_seed}))
    return run


def test_blocks_of_seeds_pool_into_one_arm(tmp_path, capsys):
    """Runs of one setting with other base seeds are one arm of all their seeds: the same
    statistics as one run of them all, in the table, the sentences and through the CLI's
    comma-joined run directories."""
    iql = [_block(tmp_path / f"b{b}/iql", curve(BASE_FINAL[4 * b : 4 * b + 4]), b) for b in (0, 1)]
    edis = [
        _block(tmp_path / f"b{b}/iql_edis", curve(EDIS_FINAL[4 * b : 4 * b + 4]), b, edis=True)
        for b in (0, 1)
    ]
    pooled_iql = report.pool([report.load_run(r) for r in iql])
    pooled_edis = report.load_arm(",".join(map(str, edis)))
    assert pooled_edis["scores"].shape == (5, 8) and pooled_edis["config"]["seed"] == [0, 1]
    st = report.statistics(pooled_edis, pooled_iql)
    np.testing.assert_array_equal(st["final"], EDIS_FINAL)
    assert st["p_final"] == pytest.approx(stats.welch_p(EDIS_FINAL, BASE_FINAL))
    assert pooled_edis["summary"]["wall_time_s"]["total"] == 200.0  # two blocks' walls
    spec = ",".join(map(str, iql))
    assert cli.main(["report", ",".join(map(str, edis)), "--baseline", spec]) == 0
    out = capsys.readouterr().out
    assert "| IQL | local/test/medium-v0 | 8 |" in out and "IQL-EDIS: final IQM" in out
    # What does not pool, in one line each.
    same_seed = _block(tmp_path / "b9/iql", curve(BASE_FINAL[:4]), 1)
    for runs, why in [
        ([iql[0], edis[1]], "differ in edis, guide"),
        ([iql[1], same_seed], "share a base seed"),
    ]:
        with pytest.raises(report.ReportError, match=why) as refused:
            report.pool([report.load_run(r) for r in runs])
        assert "\n" not in str(refused.value)
    unfinished = write_run(tmp_path / "b5/iql", curve(BASE_FINAL[:4]), finished=False)
    with pytest.raises(report.ReportError, match="evaluated at different steps"):
        report.pool([report.load_run(iql[0]), report.load_run(unfinished)])

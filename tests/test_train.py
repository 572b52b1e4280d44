"""The run driver end to end at the tiny preset: every algorithm with and without EDIS, exact
resume after a kill, damaged checkpoints, arms that share an offline phase, strict JSON records.
The run directory's refusals are in test_directory.py."""

import json
import logging
import shutil
from pathlib import Path

import jax
import numpy as np
import pytest
from tiny_runs import DATASET, tiny

from edis_jax import config
from edis_jax.cli import commands
from edis_jax.config import validation
from edis_jax.data import returns
from edis_jax.envs import simulators
from edis_jax.storage import checkpoint
from edis_jax.train import directory, loop
from edis_jax.train import state as S


@pytest.fixture(scope="module")
def shared_run(dataset_path, tmp_path_factory):
    """`shared_run(algo, edis)`: the tiny run of that algorithm, trained once per module.

    Tests only read these runs. Sharing them, and giving every other run the same shapes, keeps
    the suite's XLA compiles (most of a tiny run's time) to one per program."""
    root = tmp_path_factory.mktemp("shared")
    runs: dict[tuple[str, bool], tuple[config.RunConfig, dict]] = {}

    def run(algo: str, edis: bool) -> tuple[config.RunConfig, dict]:
        if (algo, edis) not in runs:
            cfg = tiny(root, f"{algo}_{edis}", algo=algo, edis=edis)
            with pytest.MonkeyPatch.context() as mp:
                mp.setenv("MINARI_DATASETS_PATH", str(dataset_path))
                runs[algo, edis] = cfg, loop.train(cfg, progress=False)
        return runs[algo, edis]

    return run


def read_records(run_dir) -> list[dict]:
    return [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("algo", ["iql", "calql", "sac"])
@pytest.mark.parametrize("edis", [False, True])
def test_end_to_end_tiny_run(datasets_env, shared_run, algo, edis):
    cfg, summary = shared_run(algo, edis)
    run_dir = Path(cfg.out)

    assert summary["algo"] == algo and summary["edis"] is edis and summary["seeds"] == 2
    assert summary["retrains"] == (1 if edis else 0)  # at step 60; none at the last step
    for key in ("offline_score", "final_score", "best_score"):
        assert len(summary[key]["per_seed"]) == 2
    assert summary["best_score"]["mean"] >= summary["final_score"]["mean"]
    assert {"offline", "online", "total"} <= set(summary["wall_time_s"])
    # ... and what they were measured on.
    assert summary["machine"]["platform"] == jax.default_backend()
    assert (
        summary["machine"]["jax"] == jax.__version__
        and len(summary["machine"]["load_average"]) == 3
    )
    assert json.loads((run_dir / "summary.json").read_text()) == summary
    # config.json records the backend --env-backend auto resolved to: gymnasium on a CPU.
    written = config.from_dict(json.loads((run_dir / "config.json").read_text()))
    assert cfg.env_backend == "auto" and written == cfg.replace(env_backend="gymnasium")

    all_records = read_records(run_dir)
    records = [r for r in all_records if "event" not in r]  # log points (retrains: below)
    seeds_per_point = {(r["phase"], r["step"]) for r in records}
    assert all(
        sum(1 for r in records if (r["phase"], r["step"]) == p) == 2 for p in seeds_per_point
    )
    online = [r for r in records if r["phase"] == "online" and "eval_score" in r]
    assert [r["step"] for r in online] == [60, 60, 120, 120]
    # Seeds are different runs: their training losses differ.
    losses = [
        k for k in records[0] if k not in ("phase", "step", "seed", "eval_return", "eval_score")
    ]
    assert losses, "training metrics are logged"
    assert records[0][losses[0]] != records[1][losses[0]]
    if not edis:
        check_online_returns_to_go(cfg)
    check_generator_health(all_records, edis)


HEALTH = (
    "diffusion_loss",
    "clipped_action_frac",
    "synthetic_reward_mean",
    "real_reward_mean",
    "synthetic_reward_std",
    "real_reward_std",
    "synthetic_terminal_rate",
    "real_terminal_rate",
    "synthetic_dynamics_error",
    "real_dynamics_error",
) + tuple(f"cep_{e}_{m}" for e in ("state", "policy", "transition") for m in ("acc", "heldout_acc"))


def check_generator_health(records: list[dict], edis: bool) -> None:
    """EDIS runs log the generator's health per seed at every retrain; baselines never do."""
    retrains = [r for r in records if r.get("event") == "retrain"]
    if not edis:
        assert retrains == []
        return
    assert [(r["step"], r["seed"], r["retrain"]) for r in retrains] == [(60, 0, 1), (60, 1, 1)]
    for r in retrains:
        assert set(HEALTH) <= set(r), set(HEALTH) - set(r)
        assert 0.0 <= r["clipped_action_frac"] <= 1.0
        # Hopper: the simulator can be set, and real rows reproduce far better than a barely
        # trained tiny generator's (real rows: float32 storage and the velocity clip only).
        assert r["real_dynamics_error"] < r["synthetic_dynamics_error"]


def check_online_returns_to_go(cfg: config.RunConfig) -> None:
    """Each finished online episode carries its discounted returns-to-go as mc_return, in the
    online buffer and in the real buffer after the offline rows; an unfinished one keeps 0."""
    _, state = loop.load_run(cfg.out)
    online, real = jax.device_get((state.online, state.real))
    offline_size = int(real.size[0] - online.size[0])
    for i in range(cfg.seeds):
        rewards, terminal = online.data.reward[i], online.data.terminal[i] > 0
        ends = np.flatnonzero(terminal)  # Hopper's 1000-step limit is far: every end terminates
        assert len(ends) > 0, "the test needs a finished episode"
        finished = ends[-1] + 1
        no_trunc = np.zeros(finished, bool)
        expected = returns.returns_to_go(
            rewards[:finished], terminal[:finished], no_trunc, cfg.agent.discount
        )
        # The driver sums the env's float64 rewards, the buffer holds them in float32: 3e-8
        # apart at returns of order 10.
        np.testing.assert_allclose(
            online.data.mc_return[i, :finished], expected, rtol=1e-6, atol=1e-6
        )
        assert np.all(online.data.mc_return[i, finished:] == 0)
        np.testing.assert_array_equal(
            real.data.mc_return[i, offline_size:], online.data.mc_return[i]
        )


@pytest.fixture(scope="module")
def warm_run(dataset_path, shared_run, tmp_path_factory) -> config.RunConfig:
    """A warm-started generator, pretrained before the online phase, retrained at 40 and 80."""
    cfg, _ = shared_run("iql", True)
    diffusion = config.dataclasses.replace(
        cfg.diffusion, warm_start=True, initial_steps=100, train_steps=50
    )
    online = config.dataclasses.replace(cfg.online, retrain_every=40)
    out = tmp_path_factory.mktemp("warm") / "straight"
    cfg = cfg.replace(out=str(out), diffusion=diffusion, online=online)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MINARI_DATASETS_PATH", str(dataset_path))
        loop.train(cfg, progress=False)
    return cfg


@pytest.mark.parametrize("warm", [False, True])
def test_resume_after_kill_equals_straight_run(
    datasets_env, shared_run, warm_run, tmp_path, caplog, warm
):
    # Warm: the retrain at 80 comes after the resume from the checkpoint at 60.
    straight = warm_run if warm else shared_run("iql", True)[0]

    killed = straight.replace(out=str(tmp_path / "killed"))
    # Stop at online step 90: after the checkpoint and retrain at 60, records at 90 written.
    assert loop.train(killed, stop_at_online_step=90, progress=False) is None
    assert any(r["step"] == 90 and r["phase"] == "online" for r in read_records(killed.out))
    with caplog.at_level(logging.DEBUG, logger="jax._src.interpreters.pxla"):
        summary = loop.resume(killed.out, progress=False)
    # The restored state is placed as the live one was, and init_state's program is keyed on
    # what the seeds' agents and generators depend on, so the resumed loop reuses every program
    # compiled before the kill. Uncommitted live arrays made it compile its loop again.
    lowered = {r.args[0] for r in caplog.records if r.msg.startswith("Compiling %s")}
    assert not lowered, lowered

    assert read_records(killed.out) == read_records(straight.out)
    reference = json.loads((Path(straight.out) / "summary.json").read_text())
    for key in ("offline_score", "final_score", "best_score"):
        assert summary[key] == reference[key]
    # Episodes running across the kill get their returns-to-go after the resume, too.
    straight_returns, resumed_returns = (
        np.asarray(loop.load_run(c.out)[1].online.data.mc_return) for c in (straight, killed)
    )
    assert np.any(straight_returns != 0)
    np.testing.assert_array_equal(resumed_returns, straight_returns)


def test_generator_from_shares_the_pretraining_exactly(
    datasets_env, shared_run, warm_run, tmp_path, monkeypatch
):
    """--generator-from takes another run's pretrained generator, and a resumed run its own:
    bitwise what pretraining again would give (the whole run's records equal the source's),
    killed and resumed before its online phase included. Inputs that differ are refused before
    anything is written."""
    from edis_jax.train import generator_phases

    def no_pretraining(*args, **kwargs):
        raise AssertionError("pretrained again instead of taking the generator pretrained earlier")

    # A run killed after its pretraining, before its first online checkpoint, takes that
    # pretraining back on resume instead of paying for it again.
    own = warm_run.replace(out=str(tmp_path / "own"), init_from=warm_run.out)
    assert loop.train(own, stop_at_online_step=0, progress=False) is None
    host = Path(own.out) / checkpoint.PRETRAINED_DIR / "0" / "host" / "metadata"
    first_wall = json.loads(host.read_text())["wall_s"]
    monkeypatch.setattr(generator_phases, "pretrain", no_pretraining)
    loop.resume(own.out, progress=False)
    assert read_records(own.out) == read_records(warm_run.out)
    own_summary = json.loads((Path(own.out) / "summary.json").read_text())
    assert own_summary["wall_time_s"]["generator_pretrain"] == first_wall

    # As `make run` uses it: the offline phase from --init-from, the pretraining from here.
    arm = warm_run.replace(
        out=str(tmp_path / "arm"), init_from=warm_run.out, generator_from=warm_run.out
    )
    assert loop.train(arm, stop_at_online_step=0, progress=False) is None
    loop.resume(arm.out, progress=False)
    assert read_records(arm.out) == read_records(warm_run.out)
    summaries = [json.loads((Path(c.out) / "summary.json").read_text()) for c in (arm, warm_run)]
    assert summaries[0]["final_score"] == summaries[1]["final_score"]
    # A shared pretraining counts in both arms' time.
    walls = [s["wall_time_s"]["generator_pretrain"] for s in summaries]
    assert walls[0] == walls[1] > 0

    fewer_steps = config.dataclasses.replace(warm_run.diffusion, initial_steps=60)
    refused = [
        ({"diffusion": fewer_steps}, "diffusion.initial_steps 100 -> 60"),
        ({"seed": 1}, "seed 0 -> 1"),
        # A run that never pretrained (EDIS from scratch) has nothing to give.
        ({"generator_from": shared_run("iql", True)[0].out}, "no pretrained"),
        ({"generator_from": str(tmp_path / "nowhere")}, "--generator-from .*nowhere is not a run"),
    ]
    for change, line in refused:
        cfg = arm.replace(out=str(tmp_path / "refused"), init_from=None, **change)
        with pytest.raises(directory.RunDirError, match=line):
            loop.train(cfg, progress=False)
        assert not (tmp_path / "refused").exists()


def test_generator_from_takes_a_pretraining_written_before_a_setting_existed(
    datasets_env, warm_run, tmp_path
):
    """A source written by an older edis-jax lacks a diffusion setting added since (here
    `inpainting`) in its config.json and in its pretraining's digest: it is still taken while
    this run keeps that setting's default (what the older code did), and refused, naming the
    setting, when this run changes it."""
    from edis_jax.train import synthetic

    older = tmp_path / "older"
    shutil.copytree(warm_run.out, older)
    written = json.loads((older / "config.json").read_text())
    del written["diffusion"]["inpainting"]
    (older / "config.json").write_text(json.dumps(written))
    arm = warm_run.replace(
        out=str(tmp_path / "arm"), init_from=warm_run.out, generator_from=str(older)
    )
    # The digest the older version stored: computed without the setting it did not have.
    run = loop._Run(arm, loop._load_dataset(arm), Path(arm.out), progress=False)
    step_dir = older / checkpoint.PRETRAINED_DIR / "0"
    host_file = step_dir / "host" / "metadata"
    host = json.loads(host_file.read_text())
    host["inputs_sha256"] = synthetic.pretraining_digest(run, older)
    host_file.write_text(json.dumps(host))
    checkpoint._write_checksums(step_dir)  # as that version's save left them

    assert loop.train(arm, stop_at_online_step=0, progress=False) is None  # taken
    noised = config.dataclasses.replace(arm.diffusion, inpainting="noised")
    changed = arm.replace(out=str(tmp_path / "changed"), diffusion=noised)
    with pytest.raises(directory.RunDirError, match="diffusion.inpainting 'clean' -> 'noised'"):
        loop.train(changed, progress=False)
    assert not (tmp_path / "changed").exists()


def test_a_generator_pretrained_once_logs_no_diffusion_loss_at_retrains(datasets_env, tmp_path):
    """--diffusion.train-steps 0 with a warm start: pretrained before the online phase, never
    trained after. Its retrains train no diffusion step, so their records hold no
    diffusion_loss (no NaN for the divergence check to stop on), and the run finishes."""
    cfg = tiny(tmp_path, "pretrained_once", algo="iql", edis=True)
    diffusion = config.dataclasses.replace(
        cfg.diffusion, warm_start=True, initial_steps=50, train_steps=0
    )
    summary = loop.train(cfg.replace(diffusion=diffusion), progress=False)
    assert summary is not None and summary["retrains"] >= 1
    retrains = [r for r in read_records(cfg.out) if r.get("event") == "retrain"]
    assert retrains and all("diffusion_loss" not in r and "cep_state_acc" in r for r in retrains)


def test_resume_falls_back_when_newest_checkpoint_is_damaged(datasets_env, tmp_path):
    cfg = tiny(tmp_path, "damaged", algo="iql", edis=False)
    loop.train(cfg, stop_at_online_step=115, progress=False)  # kept checkpoints: 100 and 160
    ckpt = Path(cfg.out) / checkpoint.CHECKPOINT_DIR
    steps = sorted(int(p.name) for p in ckpt.iterdir() if p.name.isdigit())
    assert len(steps) == 2
    shutil.rmtree(ckpt / str(steps[-1]) / "state")  # as if the newest were half written
    summary = loop.resume(cfg.out, progress=False)
    assert summary is not None and len(summary["final_score"]["per_seed"]) == 2


def test_corrupt_checkpoint_gives_clear_error_and_touches_nothing(datasets_env, tmp_path):
    cfg = tiny(tmp_path, "corrupt", algo="iql", edis=False)
    loop.train(cfg, stop_at_online_step=30, progress=False)
    run_dir = Path(cfg.out)
    for step_dir in (run_dir / checkpoint.CHECKPOINT_DIR).iterdir():
        shutil.rmtree(step_dir / "state", ignore_errors=True)
    before = (run_dir / "metrics.jsonl").read_text()
    with pytest.raises(checkpoint.CheckpointError, match="no usable checkpoint"):
        loop.resume(run_dir, progress=False)
    assert (run_dir / "metrics.jsonl").read_text() == before


def test_cli_train_then_report(datasets_env, tmp_path, capsys):
    from edis_jax import cli

    out = tmp_path / "cli_run"
    # The sizes of tiny(): only the guided-subset generator is compiled anew.
    status = cli.main(
        ["train", "--preset", "tiny", "--dataset", DATASET, "--algo", "iql", "--seeds", "2",
         "--offline-steps", "100", "--online-steps", "120", "--guide", "state,policy",
         "--online.retrain-every", "60", "--online.num-samples", "256", "--eval-every", "60",
         "--log-every", "30", "--checkpoint-every", "60", "--out", str(out)]
    )  # fmt: skip
    assert status == 0
    saved = config.from_dict(json.loads((out / "config.json").read_text()))
    assert saved.guide == ("state", "policy") and saved.online.retrain_every == 60
    assert json.loads((out / "summary.json").read_text())["guide"] == ["state", "policy"]
    assert cli.main(["report", str(out), "--out", str(tmp_path / "r.png")]) == 0
    text = capsys.readouterr().out
    assert "IQL-EDIS [state,policy]" in text and (tmp_path / "r.png").is_file()
    # An existing run directory is refused with a one-line error, exit status 2.
    assert cli.main(["train", "--preset", "tiny", "--dataset", DATASET, "--out", str(out)]) == 2
    assert "already exists: pass --overwrite" in capsys.readouterr().err


def test_cli_rejects_invalid_values(datasets_env, tmp_path, capsys):
    from edis_jax import cli

    for bad in (["--seeds", "0"], ["--offline-steps", "-5"], ["--online.synthetic-ratio", "2"]):
        assert cli.main(["train", "--preset", "tiny", "--out", str(tmp_path / "x"), *bad]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and bad[0] in err[0], err
    assert not (tmp_path / "x").exists()


def test_diagnose_uses_a_runs_policy_and_online_buffer(datasets_env, shared_run, tmp_path):

    cfg, _ = shared_run("iql", False)
    args = commands.DiagnoseArgs(
        dataset=DATASET, target=cfg.out, policy=cfg.out, preset="tiny", n=64, mmd_rows=32,
        guidance=("none", "all"), json=str(tmp_path / "diag.json"), progress=False,
    )  # fmt: skip
    result = commands.diagnose_main(args)
    assert result["algo"] == "iql"
    rows = json.loads((tmp_path / "diag.json").read_text())["rows"]
    assert [r["guidance"] for r in rows] == ["none", "all"]
    assert all(r["n"] == 64 and r["dynamics_error"] is not None for r in rows)
    with pytest.raises(directory.RunDirError, match="not a run directory"):
        loop.load_run(tmp_path)


# ------------------------------------------------------------- comparisons and their controls


def test_online_flags_leave_the_offline_phase_alone(datasets_env, shared_run, tmp_path):
    base, _ = shared_run("iql", False)
    other = base.replace(
        out=str(tmp_path / "ratio"),
        online=config.dataclasses.replace(base.online, baseline_online_ratio=0.5),
    )
    loop.train(other, progress=False)
    offline = [[r for r in read_records(c.out) if r["phase"] == "offline"] for c in (base, other)]
    assert offline[0] == offline[1] and len(offline[0]) > 0  # bitwise the same offline phase
    online = [[r for r in read_records(c.out) if r["phase"] == "online"] for c in (base, other)]
    assert online[0] != online[1]  # while the online batches differ


def test_published_iql_schedule_uses_synthetic_rows_only_on_retrain_steps(
    datasets_env, shared_run, tmp_path
):
    online = config.OnlineConfig(
        utd=1, retrain_every=60, num_samples=256, schedule="published", utd_retrain=7
    )
    published = tiny(tmp_path, "published", algo="iql", edis=True, online=online)
    summaries = [loop.train(published, progress=False), shared_run("iql", True)[1]]
    # One retrain (at step 60 of 120): 7 synthetic-mix updates, against one per step after it.
    assert summaries[0]["retrains"] == 1 and summaries[0]["synthetic_updates"] == 7
    assert summaries[1]["synthetic_updates"] == 120 - 60
    _, state = loop.load_run(published.out)
    np.testing.assert_array_equal(np.asarray(state.weights), [[0.0, 0.0, 1.0]] * 2)
    _assert_kill_and_resume_is_exact(published, tmp_path)


@pytest.mark.slow
def test_published_calql_schedule_on_gymnasium_resumes_exactly(datasets_env, tmp_path):
    """The Cal-QL comparison's published arm on the host envs: a retrain after step 1 and at
    60, synthetic rows in every update after the first; killed at 90 and resumed (the env
    replayed), the straight run's bits. @slow (2 min here): make test runs its jax twin
    (test_jax_online.py), and the host envs' resume in test_published_iql_schedule_..."""
    online = config.OnlineConfig(utd=1, retrain_every=60, num_samples=256, schedule="published")
    published = tiny(tmp_path, "calql_published", algo="calql", edis=True, online=online)
    summary = loop.train(published, progress=False)
    assert summary["retrains"] == 2 and summary["synthetic_updates"] == 120 - 1
    _assert_kill_and_resume_is_exact(published, tmp_path)


def test_edis_without_synthetic_rows_trains_no_generator_and_changes_no_agent_bit(
    datasets_env, tmp_path, monkeypatch
):
    """The "EDIS without synthetic rows" control (synthetic fraction 0) skips the generator, whose
    rows no batch would draw: the same agent, bit for bit, as the run that trains it anyway."""
    online = config.OnlineConfig(utd=1, retrain_every=60, num_samples=256, synthetic_ratio=0.0)
    skipped = tiny(tmp_path, "skipped", algo="iql", edis=True, online=online)
    diffusion = config.dataclasses.replace(
        skipped.diffusion, warm_start=True, initial_steps=100, train_steps=50
    )  # warm_run's: a pretraining to skip too
    skipped = skipped.replace(diffusion=diffusion)
    trained = skipped.replace(out=str(tmp_path / "trained"))
    summary = loop.train(skipped, progress=False)
    with monkeypatch.context() as mp:
        mp.setattr(S, "draws_synthetic", lambda cfg: True)  # the generator as before the skip
        reference = loop.train(trained, progress=False)
    assert summary["retrains"] == reference["retrains"] == 1
    walls = summary["wall_time_s"], reference["wall_time_s"]
    assert "diffusion" not in walls[0] and "diffusion" in walls[1]  # the retrain's phases
    assert "generator_pretrain" not in walls[0] and "generator_pretrain" in walls[1]
    assert not (Path(skipped.out) / checkpoint.PRETRAINED_DIR).exists()
    records = [read_records(c.out) for c in (skipped, trained)]
    assert not [r for r in records[0] if r.get("event") == "retrain"]
    assert records[0] == [r for r in records[1] if r.get("event") != "retrain"]
    states = [loop.load_run(c.out)[1] for c in (skipped, trained)]
    # After the retrain at step 60 both draw online-only rows; the agents are identical.
    np.testing.assert_array_equal(np.asarray(states[0].weights), [[0.0, 1.0, 0.0]] * 2)
    for a, b in zip(*(jax.tree.leaves(s.agent) for s in states), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    _assert_kill_and_resume_is_exact(skipped, tmp_path)


def test_relabel_oracle_gives_the_simulators_next_states(datasets_env, tmp_path):
    """The oracle relabelling, in a run whose batches also keep real rows (--online.mixture, the
    comparison's IQL-EDIS arm with real data): one run, killed and resumed, checks both."""
    online = config.OnlineConfig(
        utd=1, retrain_every=60, num_samples=256, relabel="simulator", mixture=(0.25, 0.25, 0.5)
    )
    cfg = tiny(tmp_path, "oracle", algo="iql", edis=True, online=online)
    summary = loop.train(cfg, progress=False)
    assert summary["retrains"] == 1 and summary["synthetic_updates"] == 120 - 60
    retrains = [r for r in read_records(cfg.out) if r.get("event") == "retrain"]
    # The health check re-simulates synthetic rows: relabelled ones match to float32 storage,
    # except rows whose velocities sit at Hopper's observation clip (+-10).
    assert retrains and all(r["synthetic_dynamics_error"] < 0.05 for r in retrains)
    _, state = loop.load_run(cfg.out)
    # After the retrain at step 60 the batches are the mixture: synthetic, online-only, real.
    np.testing.assert_array_equal(np.asarray(state.weights), [[0.25, 0.25, 0.5]] * 2)
    synthetic = jax.tree.map(lambda x: np.asarray(x[0, :64]), state.synthetic.data)

    sim_next, sim_reward, _ = simulators.simulate("Hopper-v5", synthetic.obs, synthetic.action)
    exact = (np.abs(synthetic.obs[:, 5:]) < 10).all(1)
    np.testing.assert_allclose(synthetic.next_obs[exact], sim_next[exact], atol=1e-4)
    np.testing.assert_allclose(synthetic.reward[exact], sim_reward[exact], atol=1e-4)
    _assert_kill_and_resume_is_exact(cfg, tmp_path)


def _assert_kill_and_resume_is_exact(straight: config.RunConfig, tmp_path) -> None:
    """`straight`, finished, against a copy killed at online step 90 (after the checkpoint and
    retrain at 60) and resumed: the same records, scores and final state, bit for bit."""
    killed = straight.replace(out=str(tmp_path / f"{Path(straight.out).name}_killed"))
    assert loop.train(killed, stop_at_online_step=90, progress=False) is None
    summary = loop.resume(killed.out, progress=False)
    assert read_records(killed.out) == read_records(straight.out)
    reference = json.loads((Path(straight.out) / "summary.json").read_text())
    for key in ("final_score", "retrains", "synthetic_updates"):
        assert summary[key] == reference[key]
    states = [loop.load_run(c.out)[1] for c in (straight, killed)]
    for a, b in zip(*(jax.tree.leaves(s) for s in states), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_mixture_and_schedule_flags_are_validated():
    cfg = config.RunConfig(online=config.OnlineConfig(mixture=(0.25, 0.25, 0.5)))
    from edis_jax.train import state as S

    np.testing.assert_allclose(np.asarray(S.synthetic_weights(cfg)), [0.25, 0.25, 0.5])
    for bad in ((0.5, 0.5, 0.5), (-0.1, 0.6, 0.5)):
        with pytest.raises(validation.ConfigError, match="sum to 1"):
            config.OnlineConfig(mixture=bad)
    with pytest.raises(validation.ConfigError, match="schedule"):
        config.OnlineConfig(schedule="other")

    assert simulators.can_simulate("Hopper-v5") and simulators.can_simulate("Pendulum-v1")
    assert not simulators.can_simulate("MountainCarContinuous-v0")


def test_init_from_shares_the_offline_phase_exactly(datasets_env, shared_run, tmp_path):
    source, _ = shared_run("iql", False)
    # The same settings started from the source's offline phase: bitwise the straight run.
    arm = source.replace(out=str(tmp_path / "arm"), init_from=source.out)
    summary = loop.train(arm, progress=False)
    assert read_records(arm.out) == read_records(source.out)
    reference = json.loads((Path(source.out) / "summary.json").read_text())
    for key in ("offline_score", "final_score", "best_score"):
        assert summary[key] == reference[key]
    # An EDIS arm from the same offline phase starts online with the same agent (its online
    # step-0 evaluation equals the source's) and stays an ordinary, resumable run directory.
    edis_arm = source.replace(out=str(tmp_path / "edis_arm"), init_from=source.out, edis=True)
    assert loop.train(edis_arm, stop_at_online_step=90, progress=False) is None
    loop.resume(edis_arm.out, progress=False)
    first_online = [
        [
            r["eval_score"]
            for r in read_records(c.out)
            if r["phase"] == "online" and "eval_score" in r
        ][:2]
        for c in (source, edis_arm)
    ]
    assert first_online[0] == first_online[1]


@pytest.mark.parametrize("start", ["scratch", "warm", "no_synthetic"])
def test_init_at_first_retrain_equals_the_straight_edis_run(
    datasets_env, shared_run, warm_run, tmp_path, monkeypatch, start
):
    """An EDIS arm started at its first retrain from its baseline's kept state is bitwise the
    straight EDIS run: records, scores and final state, killed and resumed after the start
    included. Warm-started, it pretrains on the offline data as the straight run does at
    online step 0 (retrains at 40 and 80); from scratch it retrains at 60. The warm schedule
    with synthetic ratio 0 (the batch-composition control) draws no synthetic rows, so it
    trains no generator at all, started at its first retrain too."""
    from edis_jax.train import generator_phases

    straight = warm_run if start != "scratch" else shared_run("iql", True)[0]
    if start != "scratch":  # the baseline of the warm run's schedule (retrain_every 40)
        baseline = straight.replace(out=str(tmp_path / "baseline"), edis=False)
        loop.train(baseline, progress=False)
    else:
        baseline = shared_run("iql", False)[0]
    if start == "no_synthetic":
        for phase in ("pretrain", "retrain", "generate"):
            monkeypatch.setattr(generator_phases, phase, lambda *a, **k: pytest.fail("trained"))
        straight = config.with_values(straight, {"online.synthetic_ratio": 0.0})
        straight = straight.replace(out=str(tmp_path / "straight"))
        loop.train(straight, progress=False)
    kept = baseline.offline_steps + baseline.online.retrain_every
    assert (Path(baseline.out) / checkpoint.FIRST_RETRAIN_DIR / str(kept)).is_dir()
    # An EDIS run keeps no such state: its own differs from the baseline's after the retrain.
    assert not (Path(straight.out) / checkpoint.FIRST_RETRAIN_DIR).exists()

    arm = straight.replace(
        out=str(tmp_path / "arm"), init_from=baseline.out, init_at="first-retrain"
    )
    assert loop.train(arm, stop_at_online_step=90, progress=False) is None
    # It started at the kept step (its first checkpoint): the steps before it were not repeated.
    saved = sorted(int(p.name) for p in (Path(arm.out) / "checkpoints").iterdir() if p.is_dir())
    assert min(saved) == kept
    summary = loop.resume(arm.out, progress=False)
    assert read_records(arm.out) == read_records(straight.out)
    reference = json.loads((Path(straight.out) / "summary.json").read_text())
    for key in ("offline_score", "final_score", "best_score", "retrains"):
        assert summary[key] == reference[key]
    final = [checkpoint.tree_sha256(loop.load_run(c.out)[1]) for c in (arm, straight)]
    assert final[0] == final[1]
    # The online time holds every retrain, the one made at the start too, as a straight run's.
    wall = summary["wall_time_s"]
    phases = ("diffusion", "cep_negatives", "cep", "cep_heldout", "generate", "health")
    if start == "no_synthetic":
        assert "generator_pretrain" not in wall
        assert not (Path(arm.out) / checkpoint.PRETRAINED_DIR).exists()
    else:
        assert wall["online"] >= sum(wall.get(phase, 0.0) for phase in phases) > 0


# --------------------------------------------------------------------- what a run records


def test_summary_and_metrics_are_strict_json_when_scores_are_not_finite(
    datasets_env, tmp_path, monkeypatch
):
    def strict(text: str):
        return json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in strict JSON"))

    # Seed 0's evaluations score NaN (as a diverged agent's would), seed 1's are finite.
    real_scores = loop.scores_of
    monkeypatch.setattr(
        loop, "scores_of", lambda returns, ref: real_scores(returns, ref) * [np.nan, 1.0]
    )
    cfg = tiny(tmp_path, "nan", offline_steps=30, online_steps=0)
    summary = loop.train(cfg, progress=False)
    saved = strict((Path(cfg.out) / "summary.json").read_text())
    assert saved == summary
    final = saved["final_score"]
    assert final["mean"] is None and final["std"] is None
    assert final["per_seed"][0] is None and isinstance(final["per_seed"][1], float)
    records = [strict(line) for line in (Path(cfg.out) / "metrics.jsonl").read_text().splitlines()]
    scored = [r for r in records if "eval_score" in r]
    assert [r["eval_score"] is None for r in scored] == [True, False]


def test_fidelity_target_export_is_seed_0s_online_buffer(datasets_env, shared_run, tmp_path):
    """`python -m benchmarks.fidelity_scale --export-target RUN_DIR` (the GPU check's input):
    seed 0's online rows in the newest checkpoint, beside the env id."""
    from benchmarks import fidelity_scale

    cfg, _ = shared_run("iql", False)
    path = tmp_path / "target.npz"
    fidelity_scale.export_target(cfg.out, str(path))
    _, state = loop.load_run(cfg.out)
    size = int(state.online.size[0])
    assert size == cfg.online_steps
    with np.load(path) as z:
        assert str(z["env_id"]) == "Hopper-v5"
        for field in fidelity_scale.FIELDS:
            expected = np.asarray(getattr(state.online.data, field)[0, :size])
            np.testing.assert_array_equal(z[field], expected)


def test_fidelity_target_errors_are_one_line(tmp_path):
    """A run folder without a checkpoint, a missing target file and another env's target each
    end `benchmarks.fidelity_scale` with one line naming the fix, not a traceback."""
    from benchmarks import fidelity_scale

    with pytest.raises(SystemExit, match="has no checkpoint to export"):
        fidelity_scale.export_target(str(tmp_path / "empty"), str(tmp_path / "t.npz"))
    assert not (tmp_path / "t.npz").exists()
    with pytest.raises(SystemExit, match="no target rows at .*--export-target"):
        fidelity_scale.read_target(str(tmp_path / "t.npz"), "Hopper-v5")
    rows = {f: np.zeros((2, 1), np.float32) for f in fidelity_scale.FIELDS}
    np.savez(tmp_path / "t.npz", env_id="Pendulum-v1", **rows)
    with pytest.raises(SystemExit, match="holds Pendulum-v1 rows but the dataset is Hopper-v5"):
        fidelity_scale.read_target(str(tmp_path / "t.npz"), "Hopper-v5")
    assert fidelity_scale.read_target(str(tmp_path / "t.npz"), "Pendulum-v1").obs.shape == (2, 1)


@pytest.mark.slow
def test_inpainting_check_measures_free_and_inpainted_next_states(datasets_env, shared_run):
    """`python -m benchmarks.inpainting_check` at the tiny sizes on a run's online data: the
    free chain's dynamics error and the two-stage chain's at each E_t scale, all finite."""
    from benchmarks import inpainting_check

    cfg, _ = shared_run("iql", False)
    result = inpainting_check.run(cfg.out, preset="tiny", retrains=1, n=64, scales=(0.0, 1.0))
    assert set(result["two_stage"]) == {0.0, 1.0}
    assert all(np.isfinite(e) and e > 0 for e in [result["free"], *result["two_stage"].values()])

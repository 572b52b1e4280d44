"""datagen/builder.py and options.py: D4RL-style datasets of each kind, their reference scores
and metadata, and the `edis-jax data` commands that make and show them."""

import numpy as np
import pytest

from edis_jax import cli, envs
from edis_jax.config.agent_configs import SACConfig
from edis_jax.data import datasets, scores
from edis_jax.datagen import builder, options


def test_random_dataset_has_exact_size_and_consistent_episodes(minari_path):
    summary = builder.make_dataset("Hopper-v5", "random", 301, "test/hopper/random-v0", seed=3)
    assert summary["transitions"] == 301
    data = datasets.load_dataset("test/hopper/random-v0")
    t = data.transitions
    assert len(data) == 301 and data.episode_lengths.sum() == 301
    assert (data.ref_min_score, data.ref_max_score) == (-20.272305, 3234.3)  # D4RL's Hopper
    ends = np.cumsum(data.episode_lengths) - 1
    inner = np.setdiff1d(np.arange(301), ends)
    # Within an episode the next observation is the following row's observation.
    np.testing.assert_array_equal(t.next_obs[inner], t.obs[inner + 1])
    assert t.terminal[inner].sum() == 0
    # Every episode but the last ends by termination (random Hopper falls); the last one was
    # cut at the step budget unless it happened to terminate exactly there.
    assert t.terminal[ends[:-1]].all()
    # The last next_obs of a terminated episode is the fallen state (the vector env's final
    # observation), not the first observation of the next episode.
    fallen = envs.termination_fn("Hopper-v5")(t.obs, t.action, t.next_obs)
    np.testing.assert_array_equal(np.asarray(fallen)[ends[:-1]], 1.0)
    episodes, _ = datasets.read_episodes("test/hopper/random-v0")
    assert episodes[-1]["terminations"][-1] or episodes[-1]["truncations"][-1]
    assert np.abs(t.action).max() <= 1.0


def test_env_without_d4rl_scores_gets_measured_ref_min_and_a_scores_command(minari_path, capsys):
    builder.make_dataset("Pendulum-v1", "random", 400, "test/pendulum/random-v0", progress=False)
    data = datasets.load_dataset("test/pendulum/random-v0")
    assert data.transitions.terminal.sum() == 0 and len(data.episode_returns) == 2
    # ref_min is the random policy's mean return over 10 episodes: Pendulum's is near -1200.
    assert -1600 < data.ref_min_score < -900 and data.ref_max_score is None
    with pytest.raises(scores.ReferenceScoreError, match="--ref-min-score"):
        data.normalized_score(data.episode_returns)
    argv = ["data", "scores", "test/pendulum/random-v0", "--ref-min-score", "-1200"]
    assert cli.main([*argv, "--ref-max-score", "-150"]) == 0
    assert datasets.load_dataset("test/pendulum/random-v0").ref_max_score == -150


def test_cli_make_info_list_and_overwrite_refusal(minari_path, capsys):
    argv = ["data", "make", "--env", "Hopper-v5", "--kind", "random", "--steps", "200"]
    assert cli.main([*argv, "--id", "test/hopper/cli-v0"]) == 0
    assert "200 transitions" in capsys.readouterr().out

    assert cli.main(["data", "info", "test/hopper/cli-v0"]) == 0
    out = capsys.readouterr().out
    assert "transitions     200" in out and "Hopper-v5" in out and "max 3234.3" in out

    assert cli.main(["data", "list"]) == 0
    assert "test/hopper/cli-v0" in capsys.readouterr().out

    # Building over an existing id is refused before any work, and the old data survives.
    assert cli.main([*argv[:-1], "50", "--id", "test/hopper/cli-v0"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert len(datasets.load_dataset("test/hopper/cli-v0")) == 200
    assert cli.main(["data", "make", "--env", "Nope-v0", "--kind", "random", "--steps", "5",
                     "--id", "test/x/y-v0"]) == 2  # fmt: skip
    assert "cannot make gymnasium env 'Nope-v0'" in capsys.readouterr().err


def test_sac_kinds_with_a_tiny_learner(minari_path):
    # Pendulum's actions span [-2, 2] while the SAC agent acts in [-1, 1]: datasets must hold
    # env actions. A tiny SAC and a given expert return keep this to a few seconds.
    sac = SACConfig(hidden_dims=(16, 16), start_steps=100)
    small = dict(expert_return=-200.0, max_train_steps=400, expert_steps=600, eval_every=200)
    # The replay's SAC trains on the JAX env in compiled chunks (the run loop's online chunk),
    # its episodes read back from the device buffer; the other builds step gymnasium's env.
    replay = builder.make_dataset(
        "Pendulum-v1",
        "medium-replay",
        1,
        "test/pendulum/mr-v0",
        sac_config=sac,
        progress=False,
        env_backend="jax",
        **small,
    )
    # Replay = every finished training episode up to the medium point (200-step episodes).
    assert replay["transitions"] == replay["build"]["medium_train_steps"] in (200, 400)
    assert "--env-backend jax" in replay["build"]["command"]
    both = builder.make_dataset(
        "Pendulum-v1",
        "medium-expert",
        300,
        "test/pendulum/me-v0",
        sac_config=sac,
        progress=False,
        **small,
    )
    assert both["transitions"] == 600 and both["build"]["expert_train_steps"] == 600
    # auto on a CPU: gymnasium, named so that a rebuild on a GPU trains on the same env.
    assert both["build"]["command"].endswith("--env-backend gymnasium")
    # target = R_random + (R_expert - R_random) / 3, with the measured random return
    r_min = both["ref_min_score"]
    assert both["build"]["medium_target"] == pytest.approx(r_min + (-200.0 - r_min) / 3)
    assert (both["ref_min_score"], both["ref_max_score"]) == (r_min, -200.0)
    for dataset_id in ("test/pendulum/mr-v0", "test/pendulum/me-v0"):
        actions = datasets.load_dataset(dataset_id).transitions.action
        assert np.abs(actions).max() <= 2.0 and np.abs(actions).max() > 1.2


def test_metadata_records_how_the_expert_stopped_and_how_medium_was_chosen(minari_path):
    sac = SACConfig(hidden_dims=(16, 16), start_steps=100)
    small = dict(max_train_steps=200, eval_every=100, sac_config=sac, progress=False)
    # A huge tolerance: a plateau as soon as the window is full (evaluations 200-500).
    flat = builder.make_dataset(
        "Pendulum-v1", "medium", 50, "test/pendulum/plateau-v0", expert_steps=900,
        plateau_tol=1e9, **small,
    )["build"]  # fmt: skip
    assert flat["expert_stop"] == (
        "plateau at step 500 (window >= 3 evaluations, tol 1000000000.0 of the return spread)"
    )
    assert flat["expert_return_source"] == "SAC trained 500 steps (seed 1000)"
    assert [step for step, _ in flat["expert_evals"]] == [100, 200, 300, 400, 500]
    assert flat["expert_return"] == pytest.approx(flat["expert_evals"][-1][1], abs=0.05)
    # A window longer than the run: the cap ends it.
    capped = builder.make_dataset(
        "Pendulum-v1", "medium", 50, "test/pendulum/cap-v0", expert_steps=300,
        plateau_window=50, **small,
    )["build"]  # fmt: skip
    assert capped["expert_stop"] == "cap reached (300 steps)"
    assert capped["expert_return_source"] == "SAC trained 300 steps (seed 1000)"
    # A target below every return (expert return under the random one) is reached at the first
    # evaluation; the policies kept every 100 / 8 = 12 steps since step 0 are bisected.
    low = builder.make_dataset(
        "Pendulum-v1", "medium", 50, "test/pendulum/low-v0", expert_return=-1e5, **small
    )["build"]  # fmt: skip
    assert low["medium_selection"] == (
        "closest to the target of 4 evaluated policies between steps 0 and 100 (kept every 12 "
        "steps, bisected for the crossing)"
    )
    assert low["medium_train_steps"] in (0, 12, 48, 100)  # the ones bisection evaluated
    assert "medium_target_reached" not in low


def test_rebuild_command_records_the_behaviour_critic_lr():
    # Datasets built before SAC's default critic lr changed are rebuilt with --sac-critic-lr.
    changed = {**options.DEFAULTS, "sac_critic_lr": 3e-4, "eval_every": 5000}
    command = options.make_command("Hopper-v5", "medium", 100, "a/b/c-v0", 0, **changed)
    assert command.endswith("--eval-every 5000 --sac-critic-lr 0.0003")
    plain = options.make_command("Hopper-v5", "medium", 100, "a/b/c-v0", 0, **options.DEFAULTS)
    assert "--sac-critic-lr" not in plain and "--eval-every" not in plain
    with pytest.raises(ValueError, match="--sac-critic-lr must be > 0"):
        builder.make_dataset("Hopper-v5", "medium", 100, "a/b/c-v0", sac_critic_lr=0.0)
    # The plateau settings: in the command when not the defaults, refused when meaningless.
    changed = {**options.DEFAULTS, "plateau_window": 5, "plateau_tol": 0.02}
    command = options.make_command("Pendulum-v1", "medium", 100, "a/b/c-v0", 0, **changed)
    assert command.endswith("--plateau-window 5 --plateau-tol 0.02")
    with pytest.raises(ValueError, match="--plateau-tol must be >= 0, got -0.1"):
        builder.make_dataset("Pendulum-v1", "medium", 100, "a/b/c-v0", plateau_tol=-0.1)


def test_jax_backend_without_a_jax_env_is_one_line(minari_path, capsys):
    argv = ["data", "make", "--env", "InvertedPendulum-v5", "--kind", "medium", "--steps", "10"]
    assert cli.main([*argv, "--id", "test/x/y-v0", "--env-backend", "jax"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--env-backend jax: InvertedPendulum-v5 has" in err
    assert not list(minari_path.rglob("*"))  # nothing written


def test_bad_plateau_window_is_one_line(capsys):
    argv = ["data", "make", "--env", "Pendulum-v1", "--kind", "medium", "--steps", "10"]
    assert cli.main([*argv, "--id", "test/x/y-v0", "--plateau-window", "0"]) == 2
    err = capsys.readouterr().err
    assert err == "edis-jax: error: --plateau-window must be a positive integer, got 0\n"

"""The data layer: Minari round trips, returns-to-go, reference scores, the not-found error,
the builder and the `edis-jax data` commands."""

import time

import jax.numpy as jnp
import numpy as np
import pytest

from edis_jax import cli, envs
from edis_jax.config import SACConfig
from edis_jax.data import datasets, minari_store, returns, scores, shipped
from edis_jax.data.transition import Transition
from edis_jax.datagen import builder, options, selection


def _episode(n_steps: int, rewards, terminated: bool, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "observations": rng.normal(size=(n_steps + 1, 11)),
        "actions": rng.uniform(-1, 1, size=(n_steps, 3)).astype(np.float32),
        "rewards": np.asarray(rewards, np.float64),
        "terminations": np.arange(n_steps) == n_steps - 1
        if terminated
        else np.zeros(n_steps, bool),
        "truncations": np.zeros(n_steps, bool) if terminated else np.arange(n_steps) == n_steps - 1,
    }


def test_minari_round_trip_alignment_and_returns_to_go(minari_path):
    # Episode A terminates after 3 steps, episode B is truncated after 2 (time limit).
    a = _episode(3, [1.0, 2.0, 3.0], terminated=True, seed=0)
    b = _episode(2, [4.0, 5.0], terminated=False, seed=1)
    minari_store.write_dataset("test/hand/mixed-v0", "Hopper-v5", [a, b], ref_min_score=0.0)
    data = datasets.load_dataset("test/hand/mixed-v0", discount=0.5)
    t = data.transitions

    assert data.env_id == "Hopper-v5" and len(data) == 5
    assert t.obs.shape == (5, 11) and t.next_obs.shape == (5, 11) and t.action.shape == (5, 3)
    assert all(x.dtype == np.float32 for x in (t.obs, t.action, t.reward, t.terminal))
    # T+1 observations per episode: obs are rows 0..T-1, next_obs rows 1..T, per episode.
    np.testing.assert_allclose(t.obs[:3], a["observations"][:3], rtol=1e-6)
    np.testing.assert_allclose(t.next_obs[:3], a["observations"][1:], rtol=1e-6)
    np.testing.assert_allclose(t.obs[3:], b["observations"][:2], rtol=1e-6)
    np.testing.assert_allclose(t.next_obs[3:], b["observations"][1:], rtol=1e-6)
    # terminal is termination only: B's truncation is not terminal.
    np.testing.assert_array_equal(t.terminal, [0, 0, 1, 0, 0])
    # Hand-computed G with discount 0.5; B's truncated tail counts as zero.
    np.testing.assert_allclose(
        t.mc_return, [1 + 0.5 * 2 + 0.25 * 3, 2 + 0.5 * 3, 3, 4 + 0.5 * 5, 5]
    )
    np.testing.assert_allclose(data.episode_returns, [6.0, 9.0])
    np.testing.assert_array_equal(data.episode_lengths, [3, 2])
    assert data.ref_min_score == 0.0 and data.ref_max_score is None


def test_returns_to_go_splits_episodes_at_every_end():
    r = np.array([1.0, 1.0, 1.0, 1.0])
    # An end flag (termination or truncation) stops the sum; the array end does too.
    g = returns.returns_to_go(r, [0, 1, 0, 0], [0, 0, 0, 0], 0.9)
    np.testing.assert_allclose(g, [1.9, 1.0, 1.9, 1.0], rtol=1e-6)
    g = returns.returns_to_go(r, [0, 0, 0, 0], [1, 0, 0, 0], 0.9)
    np.testing.assert_allclose(g, [1.0, 2.71, 1.9, 1.0], rtol=1e-6)


def test_unknown_dataset_fails_fast_with_a_clear_message(minari_path, capsys):
    start = time.perf_counter()
    with pytest.raises(datasets.DatasetNotFoundError) as err:
        datasets.load_dataset("local/hopper/expert-v7")
    assert time.perf_counter() - start < 5.0
    message = str(err.value)
    assert "\n" not in message and "'local/hopper/expert-v7'" in message
    assert "edis-jax data make --env Hopper-v5 --kind expert" in message
    assert "minari download" not in message  # local/ ids are never on the Minari hub
    # A hub id that data make can rebuild gets both ways; D4RL's demonstration data a download.
    hints = {}
    for dataset_id in ("mujoco/hopper/medium-v0", "D4RL/pen/human-v2"):
        with pytest.raises(datasets.DatasetNotFoundError) as err:
            datasets.load_dataset(dataset_id)
        hints[dataset_id] = str(err.value)
    assert "data make --env Hopper-v5 --kind medium" in hints["mujoco/hopper/medium-v0"]
    assert "minari download mujoco/hopper/medium-v0" in hints["mujoco/hopper/medium-v0"]
    assert "data make" not in hints["D4RL/pen/human-v2"]
    assert "minari download D4RL/pen/human-v2" in hints["D4RL/pen/human-v2"]

    start = time.perf_counter()
    assert cli.main(["data", "info", "nowhere/foo-v0"]) == 2
    assert time.perf_counter() - start < 5.0
    stderr = capsys.readouterr().err
    assert stderr.startswith("edis-jax: error: dataset 'nowhere/foo-v0' is not in")
    assert "Traceback" not in stderr and stderr.count("\n") == 1


def test_reference_scores_and_normalized_score():
    assert scores.d4rl_ref_scores("Hopper-v5") == (-20.272305, 3234.3)
    assert scores.d4rl_ref_scores("Pendulum-v1") is None
    np.testing.assert_allclose(
        scores.normalized_score([-20.272305, 3234.3], -20.272305, 3234.3), [0, 100]
    )
    np.testing.assert_allclose(scores.normalized_score(5.0, 0.0, 10.0), 50.0)
    with pytest.raises(scores.ReferenceScoreError, match="--ref-min-score and --ref-max-score"):
        scores.normalized_score(1.0, 0.0, None, "x/y-v0")
    with pytest.raises(scores.ReferenceScoreError, match="must be above"):
        scores.normalized_score(1.0, 5.0, 5.0)


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


def test_shipped_dataset_installs_transparently(minari_path, tmp_path, monkeypatch):
    builder.make_dataset("Hopper-v5", "random", 120, "test/hopper/ship-v0", seed=1)
    original = datasets.load_dataset("test/hopper/ship-v0")
    assets = tmp_path / "assets"
    datasets.export_dataset("test/hopper/ship-v0", assets / "test__hopper__ship-v0.npz")

    fresh = tmp_path / "fresh_minari"
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(fresh))
    monkeypatch.setattr(shipped, "ASSETS_DIR", assets)
    assert [r["location"] for r in datasets.list_datasets()] == ["shipped"]
    loaded = datasets.load_dataset("test/hopper/ship-v0")  # installs into the fresh path
    assert (fresh / "test/hopper/ship-v0/data").is_dir()
    for name in ("obs", "action", "reward", "next_obs", "terminal", "mc_return"):
        np.testing.assert_array_equal(
            getattr(loaded.transitions, name), getattr(original.transitions, name)
        )
    assert (loaded.ref_min_score, loaded.ref_max_score) == (
        original.ref_min_score,
        original.ref_max_score,
    )
    assert loaded.metadata["edis_jax"]["kind"] == "random"


def test_sac_kinds_with_a_tiny_learner(minari_path):
    # Pendulum's actions span [-2, 2] while the SAC agent acts in [-1, 1]: datasets must hold
    # env actions. A tiny SAC and a given expert return keep this to a few seconds.
    sac = SACConfig(hidden_dims=(16, 16), start_steps=100)
    small = dict(expert_return=-200.0, max_train_steps=400, expert_steps=600, eval_every=200)
    replay = builder.make_dataset(
        "Pendulum-v1",
        "medium-replay",
        1,
        "test/pendulum/mr-v0",
        sac_config=sac,
        progress=False,
        **small,
    )
    # Replay = every finished training episode up to the medium point (200-step episodes).
    assert replay["transitions"] == replay["build"]["medium_train_steps"] in (200, 400)
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
    # target = R_random + (R_expert - R_random) / 3, with the measured random return
    r_min = both["ref_min_score"]
    assert both["build"]["medium_target"] == pytest.approx(r_min + (-200.0 - r_min) / 3)
    assert (both["ref_min_score"], both["ref_max_score"]) == (r_min, -200.0)
    for dataset_id in ("test/pendulum/mr-v0", "test/pendulum/me-v0"):
        actions = datasets.load_dataset(dataset_id).transitions.action
        assert np.abs(actions).max() <= 2.0 and np.abs(actions).max() > 1.2


def test_plateau_rule_on_made_up_evaluation_curves():
    flat = [-150.0] * 12
    # Stops once there are W evaluations after the first, none better: at evaluation W + 1.
    assert [selection.plateau(flat[:n], 3, 0.01) for n in range(1, 7)] == [False] * 3 + [True] * 3
    assert selection.plateau(flat[:3], 2, 0.01) and not selection.plateau(flat[:2], 2, 0.01)
    # A rising curve never stops, slowing down (sqrt) or not, nor one that jumped 3 evals ago.
    rising = np.sqrt(np.arange(60.0)) * 100.0 - 1200.0
    assert not any(selection.plateau(rising[:n], 3, 0.01) for n in range(1, 61))
    assert not any(selection.plateau(np.arange(float(n)), 3, 0.01) for n in range(1, 61))
    assert not selection.plateau([-1200, -1100, -300, -150, -150], 3, 0.01)
    # SAC on Pendulum: learns, then flat within the tolerance (1% of the 1380 spread = 13.8);
    # it stops three evaluations after its last real gain.
    curve = [-1490, -1256, -152, -110, -109, -108.3, -108.6, -108.0, -109.0]
    stops = [n for n in range(1, len(curve) + 1) if selection.plateau(curve[:n], 3, 0.01)]
    assert stops[0] == 7 and not selection.plateau(curve[:7], 3, 0.001)
    # The window grows to a quarter of the run: a slow learner whose last gain is evaluation 36
    # stops at evaluation 47 (window 11), not 39 (window 3).
    late = [float(min(i, 35)) for i in range(60)]
    stops = [n for n in range(1, 61) if selection.plateau(late[:n], 3, 0.01)]
    assert stops[0] == 47
    # The builder's stop ignores evaluations made before learning starts (random actions).
    stop = selection.plateau_stop(3, 0.01, after=5000)
    assert not stop([(1000, -1500.0), (2000, -1500.0), (3000, -1500.0), (4000, -1500.0)])
    assert stop([(6000, -900.0), (7000, -900.0), (8000, -900.0), (9000, -900.0)])


def test_medium_policy_closest_to_the_target_found_by_bisection():
    assert selection.closest_to_target({0: -1000.0, 3: -860.0, 5: -700.0, 8: -200.0}, -850) == 3
    assert selection.closest_to_target({2: -860.0, 1: -840.0}, -850) == 1  # tie: less trained
    # Policies 0..8 of one evaluation interval; 0 (the evaluation before) and 8 are known.
    curve = [-1200, -1100, -1000, -900, -800, -600, -400, -300, -200]
    asked = []

    def evaluate(i):
        asked.append(i)
        return curve[i]

    known = selection.bisect_crossing({0: -1200, 8: -200}, -850, evaluate)
    assert asked == [4, 2, 3]  # log2(8) evaluations, ending at a straddling pair (3, 4)
    assert known == {i: curve[i] for i in (0, 2, 3, 4, 8)}
    assert selection.closest_to_target(known, -850) == 3  # -900 and -800 tie: the earlier
    # The first interval: policy 0 (the untrained one) is not known, and may be the answer.
    asked.clear()
    known = selection.bisect_crossing({8: -200}, -1500, evaluate)
    assert asked == [3, 1, 0] and selection.closest_to_target(known, -1500) == 0


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


def test_bad_plateau_window_is_one_line(capsys):
    argv = ["data", "make", "--env", "Pendulum-v1", "--kind", "medium", "--steps", "10"]
    assert cli.main([*argv, "--id", "test/x/y-v0", "--plateau-window", "0"]) == 2
    err = capsys.readouterr().err
    assert err == "edis-jax: error: --plateau-window must be a positive integer, got 0\n"


def test_transition_codec_round_trips_absolute_and_delta_vectors():
    import jax

    from edis_jax.data.normalizer import Normalizer, TransitionCodec

    k = jax.random.split(jax.random.PRNGKey(0), 3)
    obs = jax.random.normal(k[0], (6, 3))
    t = Transition.from_arrays(obs, jnp.ones((6, 2)), jnp.arange(6.0), obs + 0.1, jnp.zeros(6))
    for delta in (False, True):
        norm = Normalizer.fit(t.to_vector(delta))
        codec = TransitionCodec(norm, delta)
        back = codec.decode(codec.encode(t), 3, 2)
        np.testing.assert_allclose(back.next_obs, t.next_obs, atol=1e-5)
        np.testing.assert_allclose(back.obs, t.obs, atol=1e-5)
    # The delta vector's last part is s' - s: 0.1 everywhere here.
    np.testing.assert_allclose(t.to_vector(True)[:, -3:], 0.1, atol=1e-6)


def _write_corrupted(dataset_id: str, field: str, index: tuple, value: float) -> None:
    """Two hand-made Hopper episodes (3 and 2 steps) with one value replaced."""
    episodes = [
        _episode(3, [1.0, 2.0, 3.0], terminated=True, seed=0),
        _episode(2, [4.0, 5.0], terminated=False, seed=1),
    ]
    episode, *rest = index
    episodes[episode][field][tuple(rest)] = value
    minari_store.write_dataset(
        dataset_id, "Hopper-v5", episodes, ref_min_score=0.0, ref_max_score=9.0
    )


@pytest.mark.parametrize(
    ("field", "index", "value", "problem"),
    [
        # Row 4 is episode B's second step; transition rows run 0-2 (A) then 3-4 (B).
        ("rewards", (1, 1), np.nan, "1 rows of rewards hold NaN or inf (first at row 4)"),
        ("actions", (0, 2, 1), np.inf, "1 rows of actions hold NaN or inf (first at row 2)"),
        # An inner observation is one row's obs and the previous row's next obs.
        ("observations", (0, 1, 0), np.nan, "1 rows of observations hold NaN or inf (first at row 1)"),
        # An episode's last observation is only a next observation (of row 2).
        ("observations", (0, 3, 5), -np.inf, "1 rows of next observations hold NaN or inf (first at row 2)"),
        ("actions", (1, 0, 2), 1.5, "1 rows of actions lie outside Hopper-v5's action bounds by "
         "more than 0.001 (worst 1.5 at row 3, bounds [-1, 1])"),
    ],
)  # fmt: skip
def test_invalid_data_is_refused_at_load_with_one_line(
    minari_path, capsys, field, index, value, problem
):
    _write_corrupted("test/hand/bad-v0", field, index, value)
    with pytest.raises(datasets.InvalidDatasetError) as err:
        datasets.load_dataset("test/hand/bad-v0")
    message = str(err.value)
    assert message.startswith(f"dataset 'test/hand/bad-v0': {problem}: ") and "\n" not in message
    # `data info` runs the same checks and shows their result.
    assert cli.main(["data", "info", "test/hand/bad-v0"]) == 0
    checks = [line for line in capsys.readouterr().out.splitlines() if line.startswith("checks")]
    assert checks == [f"checks          {message}"]
    # Training refuses it with that line (cli.main catches the ValueError).
    assert cli.main(["train", "--preset", "tiny", "--dataset", "test/hand/bad-v0",
                     "--out", str(minari_path.parent / "run")]) == 2  # fmt: skip
    assert capsys.readouterr().err == f"edis-jax: error: {message}\n"
    assert not (minari_path.parent / "run").exists()


def test_valid_data_passes_the_checks_and_small_action_rounding_is_tolerated(minari_path, capsys):
    _write_corrupted("test/hand/good-v0", "actions", (0, 0, 0), 1.0 + 5e-4)
    assert len(datasets.load_dataset("test/hand/good-v0")) == 5
    assert cli.main(["data", "info", "test/hand/good-v0"]) == 0
    assert "checks          ok" in capsys.readouterr().out
    assert datasets.dataset_info("test/hand/good-v0")["checks"] == "ok"


@pytest.mark.parametrize(
    ("steps", "match"),
    [
        ((), "'test/hand/empty-v0' holds no episodes"),
        ((3, 0, 0), r"2 episodes hold fewer than two observations \(first: episode 1\)"),
    ],
)
def test_empty_datasets_and_episodes_are_refused(monkeypatch, steps, match):
    episodes = [_episode(n, np.ones(n), terminated=False, seed=n) for n in steps]
    monkeypatch.setattr(datasets, "read_episodes", lambda dataset_id, download: (episodes, {}))
    with pytest.raises(datasets.InvalidDatasetError, match=match):
        datasets.load_dataset("test/hand/empty-v0")

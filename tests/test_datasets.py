"""data/datasets.py and the store behind it (minari_store, shipped, hub): Minari round trips,
the not-found error, reference scores, shipped datasets, and the checks that refuse bad data."""

import time

import numpy as np
import pytest

from edis_jax import cli
from edis_jax.data import datasets, minari_store, scores, shipped
from edis_jax.datagen import builder


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


def test_unknown_dataset_fails_fast_with_a_clear_message(minari_path, capsys):
    start = time.process_time()  # CPU time: load stretches wall time, not work
    with pytest.raises(datasets.DatasetNotFoundError) as err:
        datasets.load_dataset("local/hopper/expert-v7")
    assert time.process_time() - start < 5.0
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

    start = time.process_time()  # CPU time: load stretches wall time, not work
    assert cli.main(["data", "info", "nowhere/foo-v0"]) == 2
    assert time.process_time() - start < 5.0
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


def test_shipped_dataset_installs_transparently(minari_path, tmp_path, monkeypatch):
    builder.make_dataset("Hopper-v5", "random", 120, "test/hopper/ship-v0", seed=1)
    original = datasets.load_dataset("test/hopper/ship-v0")
    assets = tmp_path / "assets"
    datasets.export_dataset("test/hopper/ship-v0", assets / "test__hopper__ship-v0.npz")

    fresh = tmp_path / "fresh_minari"
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(fresh))
    monkeypatch.setattr(shipped, "ASSETS_DIR", assets)
    assert [r["location"] for r in datasets.list_datasets()[0]] == ["shipped"]
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


def test_export_keeps_the_evaluation_envs_arguments(minari_path, tmp_path, monkeypatch):
    """A dataset whose evaluation env differs from the registered one (Minari's D4RL/antmaze:
    the D4RL evaluation maze) keeps it through `data export` and the install of the .npz; the
    installed copy used to evaluate on the registered env."""
    rng = np.random.default_rng(0)
    episode = {
        "observations": rng.normal(size=(4, 3)), "actions": rng.uniform(-2, 2, (3, 1)),
        "rewards": rng.normal(size=3), "terminations": np.zeros(3, bool),
        "truncations": np.array([False, False, True]),
    }  # fmt: skip
    arguments = {"g": 9.81, "max_episode_steps": 3}  # Pendulum-v1 registers g 10, 200 steps
    minari_store.write_dataset("test/pendulum/kw-v0", "Pendulum-v1", [episode],
                               ref_min_score=-1.0, ref_max_score=0.0, env_kwargs=arguments)  # fmt: skip
    assert datasets.load_dataset("test/pendulum/kw-v0").env_kwargs == arguments
    assets = tmp_path / "assets"
    datasets.export_dataset("test/pendulum/kw-v0", assets / "test__pendulum__kw-v0.npz")
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "fresh_minari"))
    monkeypatch.setattr(shipped, "ASSETS_DIR", assets)
    assert datasets.load_dataset("test/pendulum/kw-v0").env_kwargs == arguments  # installed


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

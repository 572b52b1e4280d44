"""AntMaze and Adroit (gymnasium-robotics) on self-built data, no network: the builder writes a
Minari dataset of each (AntMaze's Dict observations stored as dicts, as Minari's D4RL/antmaze
store them), loading flattens them in the order the online env wrapper uses, and a tiny run
trains and evaluates on each (AntMaze scored by success rate, Adroit by reference returns)."""

import dataclasses
import json
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

pytest.importorskip(
    "gymnasium_robotics",
    reason='gymnasium-robotics is not installed: `pip install -e ".[robotics]"` runs these tests',
)

from edis_jax import cli, config, envs  # noqa: E402
from edis_jax.config import presets  # noqa: E402
from edis_jax.data import datasets, minari_store, observations  # noqa: E402
from edis_jax.envs import simulators  # noqa: E402
from edis_jax.train import loop  # noqa: E402

ANTMAZE, ANTMAZE_DATA = "AntMaze_UMaze-v4", "test/antmaze/umaze-random-v0"  # config/tasks.py's env
ADROIT, ADROIT_DATA = "AdroitHandPen-v1", "test/pen/random-v0"
ADROIT_REFS = (-500.0, 3000.0)  # given: a random dataset of an env without D4RL constants


@pytest.fixture(scope="module")
def robotics_data(tmp_path_factory):
    """A MINARI_DATASETS_PATH with a 300-step random dataset of each env, made by `data make`."""
    path = tmp_path_factory.mktemp("minari_robotics")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MINARI_DATASETS_PATH", str(path))
        make = ["data", "make", "--kind", "random", "--steps", "300"]
        assert cli.main([*make, "--env", ANTMAZE, "--id", ANTMAZE_DATA]) == 0
        refs = ["--ref-min-score", str(ADROIT_REFS[0]), "--ref-max-score", str(ADROIT_REFS[1])]
        assert cli.main([*make, "--env", ADROIT, "--id", ADROIT_DATA, *refs]) == 0
    return path


@pytest.fixture
def robotics_env(robotics_data, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(robotics_data))


def test_flat_observations_are_gymnasiums_flatten_and_invert():
    raw = envs.make_env(ANTMAZE, flat_observations=False)
    flat = envs.make_env(ANTMAZE)
    obs, _ = raw.reset(seed=3)
    flat_obs, _ = flat.reset(seed=3)
    assert isinstance(raw.observation_space, gym.spaces.Dict)
    assert flat.observation_space == gym.spaces.flatten_space(raw.observation_space)
    np.testing.assert_array_equal(flat_obs, gym.spaces.flatten(raw.observation_space, obs))
    # The documented order: achieved_goal (x, y), desired_goal, observation (27).
    np.testing.assert_array_equal(
        flat_obs, np.concatenate([obs["achieved_goal"], obs["desired_goal"], obs["observation"]])
    )
    batch = observations.flatten_observations({k: v[None] for k, v in obs.items()})
    back = observations.unflatten_observations(raw.observation_space, batch)
    assert all(np.array_equal(back[k][0], obs[k]) for k in obs)
    raw.close(), flat.close()


def test_antmaze_dataset_stores_dicts_and_loads_them_flat(robotics_env):
    import minari

    stored = minari.load_dataset(ANTMAZE_DATA)
    assert isinstance(stored.observation_space, gym.spaces.Dict)
    assert sorted(stored.observation_space.spaces) == [
        "achieved_goal",
        "desired_goal",
        "observation",
    ]
    episode = next(stored.iterate_episodes())
    data = datasets.load_dataset(ANTMAZE_DATA)
    assert data.transitions.obs.shape == (300, 31) and data.env_id == ANTMAZE
    first = observations.flatten_observations(episode.observations)
    np.testing.assert_array_equal(data.transitions.obs[:3], first[:3].astype(np.float32))
    np.testing.assert_array_equal(data.transitions.next_obs[:3], first[1:4].astype(np.float32))
    # What the online env shows the agent after the dataset's first action, from its state.
    assert (data.ref_min_score, data.ref_max_score) == (0.0, 1.0)  # success-rate scores
    assert stored.storage.metadata["requirements"][-1].startswith("gymnasium-robotics==")


def test_antmaze_tiny_run_scores_the_success_rate(robotics_env, tmp_path):
    # IQL's default return normalisation is refused on sparse success rewards (it would scale
    # them by the episode length, 700), in one line before anything is written.
    default = tiny_run(tmp_path, ANTMAZE_DATA, algo="iql")
    with pytest.raises(ValueError, match="no-normalize-reward") as refused:
        loop.train(default, progress=False)
    assert "\n" not in str(refused.value) and not (tmp_path / "run").exists()
    iql = dataclasses.replace(default.iql, normalize_reward=False, reward_bias=-1.0)
    summary = loop.train(default.replace(iql=iql), progress=False)  # the IQL paper's r - 1
    records = read_evals(tmp_path / "run")
    assert records and all("eval_success_rate" in r for r in records)
    for r in records:
        assert r["eval_score"] == pytest.approx(100.0 * r["eval_success_rate"])
    assert 0.0 <= summary["final_score"]["mean"] <= 100.0
    assert summary["env_id"] == ANTMAZE


def test_adroit_dataset_loads_flat_with_its_given_reference_scores(robotics_env):
    data = datasets.load_dataset(ADROIT_DATA)
    assert data.transitions.obs.shape == (300, 45) and data.env_id == ADROIT
    assert (data.ref_min_score, data.ref_max_score) == ADROIT_REFS and data.env_kwargs == {}


# Slow (`make test-all`): its compiles (another observation size) double the file's time, and
# the return-normalised score it checks is the MuJoCo tasks' path.
@pytest.mark.slow
def test_adroit_tiny_run_scores_reference_returns(robotics_env, tmp_path):
    loop.train(tiny_run(tmp_path, ADROIT_DATA, algo="iql"), progress=False)
    lo, hi = ADROIT_REFS
    records = read_evals(tmp_path / "run")
    assert records
    for r in records:
        assert "eval_success_rate" not in r
        assert r["eval_score"] == pytest.approx(100.0 * (r["eval_return"] - lo) / (hi - lo))


def test_a_datasets_eval_env_spec_makes_the_online_and_evaluation_env():
    # As in Minari's D4RL/antmaze metadata: the eval env is the registered id with D4RL's maze
    # (fixed start "r" and goal "g"), a continuing task; the registered one draws both at random.
    maze = [[1, 1, 1, 1, 1], [1, "g", 0, 0, 1], [1, 1, 1, 0, 1], [1, "r", 0, 0, 1], [1, 1, 1, 1, 1]]
    kwargs = {**gym.spec(ANTMAZE).kwargs, "maze_map": maze, "continuing_task": True}
    eval_spec = dataclasses.replace(gym.spec(ANTMAZE), kwargs=kwargs, max_episode_steps=50)
    metadata = {"env_spec": gym.spec(ANTMAZE).to_json(), "eval_env_spec": eval_spec.to_json()}
    env_kwargs = minari_store.env_kwargs(metadata)
    assert env_kwargs == {"maze_map": maze, "continuing_task": True, "max_episode_steps": 50}
    assert minari_store.env_kwargs({"env_spec": gym.spec(ANTMAZE).to_json()}) == {}
    env = envs.make_vector_env(ANTMAZE, 3, env_kwargs)
    obs, _ = env.reset(seed=0)
    env.close()
    # desired_goal in the flat layout: the "g" cell's centre (-4, 4) (4 m cells, 5 x 5 map) up
    # to gymnasium-robotics' goal noise of a quarter cell.
    assert np.all(np.abs(obs[:, 2:4] - [-4.0, 4.0]) <= 1.0)
    policy = lambda obs: np.zeros((len(obs), 8))  # noqa: E731
    returns, _ = envs.episode_outcomes(policy, ANTMAZE, 1, 1, seed=0, env_kwargs=env_kwargs)
    assert returns.shape == (1, 1)  # 50-step episodes: max_episode_steps came through


def test_antmaze_simulator_reproduces_the_datasets_transitions(robotics_env):
    t = datasets.load_dataset(ANTMAZE_DATA).transitions
    next_obs, reward, terminated = simulators.simulate(ANTMAZE, t.obs[:50], t.action[:50])
    # float32 storage of positions up to ~10 m: agreement to ~1e-6.
    np.testing.assert_allclose(next_obs, t.next_obs[:50], atol=1e-5)
    np.testing.assert_array_equal(reward, t.reward[:50])
    assert simulators.can_simulate(ANTMAZE) and not terminated.any()  # a continuing task
    error = simulators.dynamics_error(ANTMAZE, t.obs[:50], t.action[:50], t.next_obs[:50])
    assert error < 1e-5


def test_adroit_simulator_is_a_documented_skip():
    # Its observation is not the simulator state: generator health and diagnose record no
    # dynamics error, and the simulator relabelling arm is refused (simulators.simulate).
    obs, action = np.zeros((1, 45)), np.zeros((1, 24))
    assert not simulators.can_simulate(ADROIT)
    assert simulators.simulate(ADROIT, obs, action) is None
    assert simulators.dynamics_error(ADROIT, obs, action, obs) is None


def tiny_run(tmp_path: Path, dataset: str, **changes) -> config.RunConfig:
    base = presets.preset("tiny").replace(
        dataset=dataset, out=str(tmp_path / "run"), seeds=1, offline_steps=40,
        online_steps=40, eval_every=40, log_every=40, checkpoint_every=40, edis=False,
    )  # fmt: skip
    return base.replace(**changes)


def read_evals(run_dir: Path) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if "eval_score" in r]


def test_making_a_maze_env_leaves_nothing_in_the_temp_dir(tmp_path, monkeypatch):
    # gymnasium-robotics writes each maze's XML into the temp dir itself and never deletes it;
    # every way edis-jax makes an env builds it inside a folder of its own that it removes.
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    gym.make(ANTMAZE).close()  # the library alone: the leak this guards against
    leaked = sorted(p.name for p in tmp_path.iterdir())
    assert leaked and all(name.endswith(".xml") for name in leaked)
    for path in tmp_path.iterdir():
        path.unlink()
    envs.make_env(ANTMAZE).close()
    envs.make_vector_env(ANTMAZE, 2).close()
    envs.ActionScale(ANTMAZE)
    assert simulators.mujoco_supported(ANTMAZE) in (True, False)
    assert datasets._env_spaces(ANTMAZE) is not None
    assert list(tmp_path.iterdir()) == []
    assert tempfile.tempdir == str(tmp_path)

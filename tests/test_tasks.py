"""The paper's per-task configs (edis_jax/config/tasks.py): ids, published values, the --task flag and the
`tasks` command."""

from __future__ import annotations

import gymnasium as gym
import pytest
from minari.dataset.minari_dataset import parse_dataset_id

from edis_jax import cli
from edis_jax.config import presets
from edis_jax.config.tasks import TASKS


def test_every_published_task_and_baseline_is_listed():
    prefixes = [name.split("/")[0] for name in TASKS]
    # 21 IQL-EDIS tasks (12 MuJoCo, 6 AntMaze, 3 Adroit), Cal-QL-EDIS adds hammer-cloned.
    assert {p: prefixes.count(p) for p in set(prefixes)} == {
        "iql_edis": 21, "iql": 21, "cal_ql_edis": 22, "cal_ql": 22,
    }  # fmt: skip
    for env in ("hopper", "halfcheetah", "walker2d"):
        for kind in ("random", "medium", "medium-replay", "medium-expert"):
            assert f"iql_edis/{env}-{kind}" in TASKS and f"cal_ql_edis/{env}-{kind}" in TASKS


def test_dataset_ids_parse_and_mujoco_envs_exist():
    for name, task in TASKS.items():
        namespace, dataset, version = parse_dataset_id(task["dataset"])
        assert namespace.split("/")[0] in ("mujoco", "local", "D4RL") and version is not None
        assert task["values"]["dataset"] == task["dataset"]
        if namespace.split("/")[0] in ("mujoco", "local"):
            assert gym.spec(task["env"]).id == task["env"], name
    assert TASKS["iql_edis/hopper-medium"]["dataset"] == "mujoco/hopper/medium-v0"
    assert TASKS["cal_ql/antmaze-large-diverse"]["dataset"] == "D4RL/antmaze/large-diverse-v1"
    assert TASKS["cal_ql_edis/pen-human"]["dataset"] == "D4RL/pen/human-v2"


@pytest.mark.parametrize(
    "task, expected",
    [
        # Spot checks against published_configs.md, table by table.
        ("iql_edis/hopper-random", {"online.utd_retrain": 2, "online.synthetic_ratio": 0.8,
            "iql.expectile": 0.5, "iql.beta": 10.0, "diffusion.train_steps": 30000}),
        ("iql_edis/halfcheetah-medium-replay", {"online.utd_retrain": 10,
            "online.synthetic_ratio": 0.8, "iql.expectile": 0.7, "diffusion.train_steps": 50000,
            "iql.normalize_reward": False}),
        ("iql_edis/antmaze-umaze-diverse", {"online.utd_retrain": 1,
            "online.synthetic_ratio": 0.9, "iql.reward_bias": -1.0}),
        ("cal_ql_edis/hopper-medium", {"energy.scale_state": 2.0, "energy.scale_policy": 0.01,
            "energy.scale_transition": 0.01, "calql.cql_alpha": 10.0,
            "calql.cql_alpha_online": 0.1, "calql.cql_lagrange": True,
            "calql.cql_target_action_gap": 10.0, "offline_steps": 300_000}),
        ("cal_ql_edis/walker2d-medium", {"calql.cql_alpha_online": 0.0}),
        ("cal_ql_edis/antmaze-large-diverse", {"calql.critic_hidden_dims": (256,) * 5,
            "calql.reward_bias": -1.0, "calql.cql_clip_diff_min": -200.0,
            "calql.cql_target_action_gap": 0.8, "calql.max_target_backup": True,
            "calql.sparse_reward": True, "energy.scale_state": 0.01}),
        ("cal_ql_edis/relocate-human", {"calql.cql_lagrange": False,
            "calql.cql_alpha_online": 2.5, "calql.critic_hidden_dims": (256,) * 3,
            "calql.normalize_obs": False}),
        ("cal_ql_edis/hammer-cloned", {"offline_steps": 1_000_000, "online_steps": 1_000_000,
            "calql.backup_entropy": False, "calql.cql_alpha": 1.0}),
        ("cal_ql/antmaze-umaze", {"calql.reward_scale": 10.0, "calql.reward_bias": -5.0,
            "online.baseline_online_ratio": 0.5, "edis": False}),
        ("iql/door-human", {"iql.beta": 3.0, "iql.expectile": 0.8, "edis": False}),
    ],
)  # fmt: skip
def test_task_values_match_the_published_configs(task, expected):
    cfg = presets.preset("paper", task)
    for key, value in expected.items():
        field = cfg
        for part in key.split("."):
            field = getattr(field, part)
        assert field == value, key
    assert cfg.task == task and cfg.preset == "paper"


def test_every_task_builds_a_valid_config_and_baselines_keep_the_preset_elsewhere():
    for name in TASKS:
        presets.preset("paper", name)  # validates every value
    paper, base = presets.preset("paper"), presets.preset("paper", "cal_ql/hopper-medium")
    assert base.calql == paper.calql and not base.edis and base.algo == "calql"


def test_every_cal_ql_baseline_draws_half_its_online_batches_from_online_data():
    """DESIGN.md section 2: the baseline Cal-QL draws 50% offline + 50% online, as every
    published cal_ql row does. The locomotion and hammer baselines, which have no row, used to
    take the preset's 0 (uniform over all real data: online rows under a fifth of a batch)."""
    baselines = [name for name in TASKS if name.startswith("cal_ql/")]
    assert len(baselines) == 22
    for name in baselines:
        cfg = presets.preset("paper", name)
        assert cfg.online.baseline_online_ratio == 0.5, name
    assert "online share 0.5" in TASKS["cal_ql/walker2d-random"]["source"]
    # Only the baselines: the IQL ones keep the published IQL's replay of all real data.
    assert presets.preset("paper", "iql/hopper-medium").online.baseline_online_ratio == 0.0


def run_train(monkeypatch, args):
    """cli train with the run replaced by capturing its config."""
    from edis_jax.train import loop

    seen = []
    monkeypatch.setattr(loop, "train", lambda cfg: seen.append(cfg))
    assert cli.main(["train", *args]) == 0
    return seen[0]


def test_train_task_flag_applies_the_task_and_explicit_flags_win(monkeypatch):
    cfg = run_train(monkeypatch, ["--task", "iql_edis/hopper-random", "--iql.expectile", "0.6"])
    assert cfg.preset == "paper" and cfg.task == "iql_edis/hopper-random"
    assert cfg.iql.expectile == 0.6  # the flag, over the task's 0.5
    assert cfg.online.utd_retrain == 2 and cfg.dataset == "local/hopper/random-v0"
    cfg = run_train(
        monkeypatch,
        ["--preset", "tiny", "--task=cal_ql_edis/hopper-medium", "--dataset", "x/y/z-v0"],
    )
    assert cfg.preset == "tiny" and cfg.diffusion.width == 32  # the tiny preset underneath
    assert cfg.calql.cql_alpha_online == 0.1 and cfg.dataset == "x/y/z-v0"


def test_tasks_command_lists_every_task_and_unknown_tasks_get_one_line(capsys):
    assert cli.main(["tasks"]) == 0
    out = capsys.readouterr().out.splitlines()
    rows = [line.split() for line in out if line.split() and line.split()[0] in TASKS]
    assert len(rows) == len(TASKS)
    row = next(r for r in rows if r[0] == "iql_edis/hopper-medium")
    assert row[1:3] == ["mujoco/hopper/medium-v0", "Hopper-v5"] and "rho" in row
    assert cli.main(["tasks", "cal_ql/antmaze-umaze"]) == 0
    assert "calql.reward_scale = 10.0" in capsys.readouterr().out
    for args in (["train", "--task", "nope"], ["tasks", "nope"]):
        assert cli.main(args) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "unknown task 'nope'" in err[0] and "edis-jax tasks" in err[0]

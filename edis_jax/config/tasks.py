"""The paper's tasks as data: each published per-task config, as RunConfig values to apply on
top of a preset (`edis-jax train --task iql_edis/hopper-medium`, `edis-jax tasks` lists them).

Source of every number: /work/shared/published_configs.md, the facts extracted from the
published EDIS repository (liuxhym/EDIS, commit 28bf16d, `configs/<algo>/<env>/<task>.gin`, and
its table of algorithm defaults "where a task file is silent"). The rows below copy its tables
column for column (same order, `None` = an empty cell = the published algorithm default); the
column-to-field rules follow the rows. A value published_configs.md does not give is left to
the preset (`paper`) and said so where it matters.

Datasets: Minari ids. Minari's `mujoco/` namespace holds medium (and expert, simple) data only:
random, medium-replay and medium-expert are built here (`edis-jax data make --env Hopper-v5
--kind random ...`) under the `local/` ids below. AntMaze and Adroit ids are Minari's D4RL
ones; their envs need the `robotics` extra (gymnasium-robotics; docs/data.md "AntMaze and Adroit").
"""

from __future__ import annotations

# ------------------------------------------------------------------------- datasets and envs

# task -> (Minari dataset id, gymnasium env id). AntMaze env ids: the envs the Minari D4RL v1
# datasets were collected in (gymnasium-robotics); Adroit: AdroitHand*-v1.
DATA: dict[str, tuple[str, str]] = {
    **{
        f"{env}-{kind}": (
            f"mujoco/{env}/medium-v0" if kind == "medium" else f"local/{env}/{kind}-v0",
            gym_id,
        )
        for env, gym_id in (
            ("hopper", "Hopper-v5"),
            ("halfcheetah", "HalfCheetah-v5"),
            ("walker2d", "Walker2d-v5"),
        )
        for kind in ("random", "medium", "medium-replay", "medium-expert")
    },
    "antmaze-umaze": ("D4RL/antmaze/umaze-v1", "AntMaze_UMaze-v4"),
    "antmaze-umaze-diverse": ("D4RL/antmaze/umaze-diverse-v1", "AntMaze_UMaze-v4"),
    "antmaze-medium-play": ("D4RL/antmaze/medium-play-v1", "AntMaze_Medium-v4"),
    "antmaze-medium-diverse": ("D4RL/antmaze/medium-diverse-v1", "AntMaze_Medium_Diverse_GR-v4"),
    "antmaze-large-play": ("D4RL/antmaze/large-play-v1", "AntMaze_Large-v4"),
    "antmaze-large-diverse": ("D4RL/antmaze/large-diverse-v1", "AntMaze_Large_Diverse_GR-v4"),
    "pen-human": ("D4RL/pen/human-v2", "AdroitHandPen-v1"),
    "door-human": ("D4RL/door/human-v2", "AdroitHandDoor-v1"),
    "relocate-human": ("D4RL/relocate/human-v2", "AdroitHandRelocate-v1"),
    "hammer-cloned": ("D4RL/hammer/cloned-v2", "AdroitHandHammer-v1"),
}
LOCOMOTION = ("hopper", "halfcheetah", "walker2d")

# ----------------------------------------------------------------- published_configs.md rows

# ## iql_edis: train_num_steps, utd_ratio, offline_mixing_ratio, beta, iql_tau, normalize,
# normalize_reward
IQL_EDIS = {
    "antmaze-large-diverse": (30000, 20, 0.1, 10.0, 0.9, True, True),
    "antmaze-large-play": (30000, 20, 0.1, 10.0, 0.9, True, True),
    "antmaze-medium-diverse": (50000, 20, 0.2, 10.0, 0.9, True, True),
    "antmaze-medium-play": (50000, 20, 0.2, 10.0, 0.9, True, True),
    "antmaze-umaze": (50000, 20, 0.2, 10.0, 0.9, True, True),
    "antmaze-umaze-diverse": (50000, 1, 0.9, 10.0, 0.7, True, True),
    "door-human": (30000, 20, 0.2, 10.0, 0.8, True, False),
    "halfcheetah-medium": (50000, 20, 0.5, 10.0, 0.9, True, False),
    "halfcheetah-medium-expert": (30000, 10, 0.7, 10.0, 0.6, True, False),
    "halfcheetah-medium-replay": (50000, 10, 0.8, 10.0, 0.7, True, False),
    "halfcheetah-random": (30000, 20, 0.2, 10.0, 0.9, True, False),
    "hopper-medium": (30000, 20, 0.2, 10.0, 0.7, True, False),
    "hopper-medium-expert": (30000, 10, 0.1, 10.0, 0.7, True, False),
    "hopper-medium-replay": (30000, 20, 0.2, 10.0, 0.7, True, False),
    "hopper-random": (30000, 2, 0.8, 10.0, 0.5, True, False),
    "pen-human": (30000, 20, 0.2, 10.0, 0.8, True, False),
    "relocate-human": (30000, 20, 0.2, 10.0, 0.8, True, False),
    "walker2d-medium": (30000, 15, 0.2, 10.0, 0.7, True, False),
    "walker2d-medium-expert": (30000, 20, 0.5, 10.0, 0.7, True, False),
    "walker2d-medium-replay": (50000, 10, 0.8, 10.0, 0.7, True, False),
    "walker2d-random": (30000, 5, 0.5, 10.0, 0.7, True, False),
}

# ## cal_ql_edis: train_num_steps, utd_ratio, offline_mixing_ratio, ope_clip, te_clip, pe_clip,
# normalize, normalize_reward, q_n_hidden_layers, cql_alpha, cql_alpha_online, reward_scale,
# reward_bias, is_sparse_reward, cql_clip_diff_min, cql_target_action_gap,
# cql_max_target_backup, cql_lagrange
_ANT = (True, True, 5, 5, 5, 1, -1, True, -200, 0.8, True, None)
_EMPTY = (None,) * 7
# fmt: off
CAL_QL_EDIS = {
    "antmaze-large-diverse": (10000, 1, 0.5, 0.01, 0.01, 0.01, *_ANT),
    "antmaze-large-play": (10000, 1, 0.5, 0.01, 0.01, 0.01, *_ANT),
    "antmaze-medium-diverse": (10000, 1, 0.3, 0.01, 0.01, 0.01, *_ANT),
    "antmaze-medium-play": (10000, 1, 0.3, 0.01, 0.01, 0.01, *_ANT),
    "antmaze-umaze": (10000, 1, 0.5, 0.01, 0.01, 0.01, *_ANT),
    "antmaze-umaze-diverse": (10000, 1, 0.5, 0.01, 0.01, 0.01, *_ANT),
    "door-human": (10000, 1, 0.5, 0.01, 0.01, 0.01, False, False, 3, 1, 1, 1, 0, False, -200, 0.8, True, None),  # noqa: E501
    "halfcheetah-medium": (10000, 1, 0.2, 1, 0.2, 0.2, True, True, 2, 10, 10, *_EMPTY),
    "halfcheetah-medium-expert": (10000, 1, 0.5, 1, 0.2, 0.2, True, True, 2, 10, 10, *_EMPTY),
    "halfcheetah-medium-replay": (10000, 1, 0.2, 1, 0.2, 0.2, True, True, 2, 10, 10, *_EMPTY),
    "halfcheetah-random": (10000, 1, 0.2, 1, 0.2, 0.2, True, True, 2, 10, 10, *_EMPTY),
    "hopper-medium": (10000, 1, 0.2, 2, 0.01, 0.01, True, True, 2, 10, 0.1, *_EMPTY),
    "hopper-medium-expert": (10000, 1, 0.5, 0.01, 0.01, 0.01, True, True, 2, 10, 10, *_EMPTY),
    "hopper-medium-replay": (10000, 1, 0.5, 1, 0.2, 0.2, True, True, 2, 10, 10, *_EMPTY),
    "hopper-random": (10000, 1, 0.2, 1, 0.1, 0.1, True, False, 2, 10, 1, None, None, False, None, None, None, None),  # noqa: E501
    "pen-human": (10000, 1, 0.3, 0.01, 0.01, 0.01, False, False, 3, 5, 5, 1, 0, False, -200, 0.8, True, None),  # noqa: E501
    "relocate-human": (10000, 1, 0.2, 1, 0.01, 0.01, False, False, 3, 1, 2.5, 1, 0, False, -200, 0.8, True, False),  # noqa: E501
    "walker2d-medium": (10000, 1, 0.2, 0.01, 0.01, 0.01, True, True, 2, 10, 0, *_EMPTY),
    "walker2d-medium-expert": (10000, 1, 0.2, 0.01, 0.01, 0.01, True, True, 2, 10, 10, *_EMPTY),
    "walker2d-medium-replay": (10000, 1, 0.2, 0.1, 0.2, 0.2, True, True, 2, 10, 10, *_EMPTY),
    "walker2d-random": (10000, 1, 0.1, 2, 0.01, 0.01, True, True, 2, 10, 0, *_EMPTY),
}
# fmt: on
# ## Algorithm defaults (Cal-QL-EDIS column) for the empty cells above, in the same order from
# ope_clip on: guidance 2 / 0.1 / 0.1; reward scale, bias 1, 0; sparse reward True; clip diff
# min -inf; target action gap 10; max-target backup False; lagrange True.
CAL_QL_EDIS_DEFAULTS = dict(
    ope_clip=2,
    te_clip=0.1,
    pe_clip=0.1,
    reward_scale=1,
    reward_bias=0,
    is_sparse_reward=True,
    cql_clip_diff_min=None,
    cql_target_action_gap=10,
    cql_max_target_backup=False,
    cql_lagrange=True,
)

# ## cal_ql_edis (CORL-style yaml), hammer/cloned_v1: cql_alpha, cql_alpha_online, cql_lagrange,
# cql_target_action_gap, cql_clip_diff_min, cql_max_target_backup, cql_n_actions, mixing_ratio,
# q_n_hidden_layers, normalize, normalize_reward, reward_scale, reward_bias, is_sparse_reward,
# offline_iterations, online_iterations, policy_lr, qf_lr, orthogonal_init, backup_entropy
HAMMER = (1.0, 1.0, False, 0.8, -200, True, 10, 0.5, 3, False, False, 1.0, 0.0, False,
          1000000, 1000000, 0.0001, 0.0003, True, False)  # fmt: skip

# ## iql: beta, iql_tau, normalize, normalize_reward
IQL = {
    **{f"antmaze-{m}": (10.0, 0.9, True, True) for m in (
        "large-diverse", "large-play", "medium-diverse", "medium-play", "umaze", "umaze-diverse")},
    **{f"{e}-human": (3.0, 0.8, True, True) for e in ("door", "pen", "relocate")},
}  # fmt: skip

# ## cal_ql: alpha_multiplier, cql_alpha, cql_alpha_online, cql_clip_diff_max, cql_clip_diff_min,
# cql_importance_sample, cql_lagrange, cql_max_target_backup, cql_target_action_gap, cql_temp,
# offline_mixing_ratio, normalize, normalize_reward, q_n_hidden_layers, reward_scale,
# reward_bias, is_sparse_reward. (antmaze/umaze-diverse: the published file, `umaze-.gin`, is
# empty, so that task keeps the preset's Cal-QL.)
# fmt: off
_CQL_ANT = (1.0, 5.0, 5.0, 5e34, -200, True, True, True, 0.8, 1.0, 0.5, False, True, 5, 10.0, -5.0, True)  # noqa: E501
_CQL_ADROIT = (1.0, 1.0, 1.0, 5e34, -200, True, False, True, 0.8, 1.0, 0.5, False, True, 3, 1.0, 0.0, False)  # noqa: E501
# fmt: on
CAL_QL = {
    **{
        f"antmaze-{m}": _CQL_ANT
        for m in ("large-diverse", "large-play", "medium-diverse", "medium-play", "umaze")
    },
    **{f"{e}-human": _CQL_ADROIT for e in ("door", "pen", "relocate")},
}  # fmt: skip

# ------------------------------------------------------------------ rows -> RunConfig values

# Algorithm defaults "where a task file is silent" (published_configs.md, last table).
IQL_EDIS_RUN = {
    "offline_steps": 1_000_000,
    "online_steps": 200_000,
    "eval_every": 50_000,
    "eval_episodes": 100,
    "energy.scale_state": 2.0,
    "energy.scale_policy": 0.1,
    "energy.scale_transition": 0.1,
}
CAL_QL_EDIS_RUN = {
    "offline_steps": 300_000,
    "online_steps": 200_000,
    "eval_every": 10_000,
    "eval_episodes": 10,
    "calql.backup_entropy": True,
    "calql.actor_lr": 1e-4,
    "calql.critic_lr": 3e-4,
}
# A Cal-QL baseline with no published row (locomotion, hammer) keeps the preset's agent but
# the published Cal-QL's batches: every published cal_ql row and the hammer yaml mix offline
# and online data 0.5 / 0.5 (offline_mixing_ratio, mixing_ratio; DESIGN.md section 2: "the
# baseline Cal-QL draws 50% offline + 50% online"). Half of ours come from all real data.
CAL_QL_MIXING = {"online.baseline_online_ratio": 0.5}
CAL_QL_MIXING_SOURCE = "paper preset; batches: published cal_ql (online share 0.5)"
WIDTH = 256  # critic width of the published Cal-QL (FullyConnectedQFunction)


def _reward_values(algo: str, env: str, normalize_reward: bool, scale=1.0, bias=0.0) -> dict:
    """The published `normalize_reward` as edis-jax fields. The published modify_reward (in
    algorithms/iql_edis.py and cal_ql_edis.py) rescales returns to span 1000 only on the
    locomotion tasks (our normalize_reward); Cal-QL then applies reward * scale + bias on every
    task, IQL subtracts 1 on AntMaze; with normalize_reward off, rewards are left alone."""
    locomotion = env.split("-")[0] in LOCOMOTION
    values = {f"{algo}.normalize_reward": normalize_reward and locomotion}
    if normalize_reward and algo == "calql":
        values |= {"calql.reward_scale": float(scale), "calql.reward_bias": float(bias)}
    if normalize_reward and algo == "iql" and env.startswith("antmaze"):
        values["iql.reward_bias"] = -1.0
    return values


def _iql(row: tuple, env: str) -> dict:
    beta, expectile, normalize, normalize_reward = row
    return {
        "iql.beta": beta,
        "iql.expectile": expectile,
        "iql.normalize_obs": normalize,
        **_reward_values("iql", env, normalize_reward),
    }


def _iql_edis(row: tuple, env: str) -> dict:
    steps, utd, rho, *agent = row
    return {
        **IQL_EDIS_RUN,
        "diffusion.train_steps": steps,
        # Published IQL-EDIS: utd_ratio synthetic-mix updates on each retrain step (DESIGN.md).
        "online.utd_retrain": utd,
        "online.synthetic_ratio": rho,
        **_iql(tuple(agent), env),
    }


def _cal_ql_edis(row: tuple, env: str) -> dict:
    names = (
        "train_num_steps", "utd_ratio", "offline_mixing_ratio", "ope_clip", "te_clip", "pe_clip",
        "normalize", "normalize_reward", "q_n_hidden_layers", "cql_alpha", "cql_alpha_online",
        "reward_scale", "reward_bias", "is_sparse_reward", "cql_clip_diff_min",
        "cql_target_action_gap", "cql_max_target_backup", "cql_lagrange",
    )  # fmt: skip
    r = {n: CAL_QL_EDIS_DEFAULTS[n] if v is None else v for n, v in zip(names, row, strict=True)}
    return {
        **CAL_QL_EDIS_RUN,
        "diffusion.train_steps": r["train_num_steps"],
        "online.utd": r["utd_ratio"],
        "online.synthetic_ratio": r["offline_mixing_ratio"],
        "energy.scale_state": float(r["ope_clip"]),
        "energy.scale_policy": float(r["pe_clip"]),
        "energy.scale_transition": float(r["te_clip"]),
        **_calql_agent(r, env),
    }


def _calql_agent(r: dict, env: str) -> dict:
    values = {
        "calql.normalize_obs": r["normalize"],
        "calql.critic_hidden_dims": (WIDTH,) * r["q_n_hidden_layers"],
        "calql.cql_alpha": float(r["cql_alpha"]),
        "calql.cql_alpha_online": float(r["cql_alpha_online"]),
        "calql.sparse_reward": r["is_sparse_reward"],
        "calql.cql_clip_diff_min": _float(r["cql_clip_diff_min"]),
        "calql.cql_target_action_gap": float(r["cql_target_action_gap"]),
        "calql.cql_lagrange": r["cql_lagrange"],
        # One published flag for both phases.
        "calql.max_target_backup": r["cql_max_target_backup"],
        "calql.max_target_backup_online": r["cql_max_target_backup"],
        **_reward_values("calql", env, r["normalize_reward"], r["reward_scale"], r["reward_bias"]),
    }
    if r.get("cql_clip_diff_max") is not None and r["cql_clip_diff_max"] < 1e30:
        values["calql.cql_clip_diff_max"] = float(r["cql_clip_diff_max"])
    return values


def _cal_ql(row: tuple, env: str) -> dict:
    names = (
        "alpha_multiplier", "cql_alpha", "cql_alpha_online", "cql_clip_diff_max",
        "cql_clip_diff_min", "cql_importance_sample", "cql_lagrange", "cql_max_target_backup",
        "cql_target_action_gap", "cql_temp", "offline_mixing_ratio", "normalize",
        "normalize_reward", "q_n_hidden_layers", "reward_scale", "reward_bias", "is_sparse_reward",
    )  # fmt: skip
    r = dict(zip(names, row, strict=True))
    # alpha_multiplier 1, importance sampling on, temperature 1: edis-jax's fixed choices.
    return {
        # Published baseline batches: offline_mixing_ratio offline rows, the rest online. Ours
        # draw the rest from all real data (offline + online): the nearest mixture we have.
        "online.baseline_online_ratio": 1.0 - r["offline_mixing_ratio"],
        "calql.cql_temperature": r["cql_temp"],
        **_calql_agent(r, env),
    }


def _hammer(row: tuple, env: str) -> dict:
    names = (
        "cql_alpha", "cql_alpha_online", "cql_lagrange", "cql_target_action_gap",
        "cql_clip_diff_min", "cql_max_target_backup", "cql_n_actions", "mixing_ratio",
        "q_n_hidden_layers", "normalize", "normalize_reward", "reward_scale", "reward_bias",
        "is_sparse_reward", "offline_iterations", "online_iterations", "policy_lr", "qf_lr",
        "orthogonal_init", "backup_entropy",
    )  # fmt: skip
    r = dict(zip(names, row, strict=True))
    # Not in this row: diffusion steps and UTD (the preset's), guidance scales (the Cal-QL-EDIS
    # algorithm defaults). orthogonal_init: edis-jax's own initialiser.
    return {
        **CAL_QL_EDIS_RUN,
        "offline_steps": r["offline_iterations"],
        "online_steps": r["online_iterations"],
        "online.synthetic_ratio": r["mixing_ratio"],
        "energy.scale_state": 2.0,
        "energy.scale_policy": 0.1,
        "energy.scale_transition": 0.1,
        "calql.cql_n_actions": r["cql_n_actions"],
        "calql.actor_lr": r["policy_lr"],
        "calql.critic_lr": r["qf_lr"],
        "calql.backup_entropy": r["backup_entropy"],
        **_calql_agent(r, env),
    }


def _float(value):
    return None if value is None else float(value)


def _build() -> dict[str, dict]:
    """name -> {"algo", "edis", "dataset", "env", "values", "source"}; values are RunConfig
    fields (dotted for nested ones) applied on top of the preset."""
    out: dict[str, dict] = {}

    def add(prefix: str, algo: str, edis: bool, env: str, values: dict, source: str) -> None:
        dataset, gym_id = DATA[env]
        out[f"{prefix}/{env}"] = {
            "algo": algo,
            "edis": edis,
            "dataset": dataset,
            "env": gym_id,
            "values": {"algo": algo, "edis": edis, "dataset": dataset, **values},
            "source": source,
        }

    md = "published_configs.md"
    for env, row in IQL_EDIS.items():
        add("iql_edis", "iql", True, env, _iql_edis(row, env), f"{md}: iql_edis")
        # Baselines: the published iql row where there is one, else the preset's IQL.
        base = _iql(IQL[env], env) if env in IQL else {}
        add("iql", "iql", False, env, base, f"{md}: iql" if base else "paper preset")
    for env, row in CAL_QL_EDIS.items():
        add("cal_ql_edis", "calql", True, env, _cal_ql_edis(row, env), f"{md}: cal_ql_edis")
        if env in CAL_QL:
            add("cal_ql", "calql", False, env, _cal_ql(CAL_QL[env], env), f"{md}: cal_ql")
        else:
            add("cal_ql", "calql", False, env, CAL_QL_MIXING, CAL_QL_MIXING_SOURCE)
    hammer = _hammer(HAMMER, "hammer-cloned")
    add("cal_ql_edis", "calql", True, "hammer-cloned", hammer, f"{md}: cal_ql_edis (yaml)")
    add("cal_ql", "calql", False, "hammer-cloned", CAL_QL_MIXING, CAL_QL_MIXING_SOURCE)
    return dict(sorted(out.items()))


TASKS: dict[str, dict] = _build()

"""Reference scores and the normalised score, 100 (R - ref_min) / (ref_max - ref_min)."""

from __future__ import annotations

import numpy as np

# D4RL's published reference returns (random policy, expert policy) for the MuJoCo locomotion
# tasks, from D4RL's d4rl/infos.py (REF_MIN_SCORE / REF_MAX_SCORE, the same for every dataset
# of a task): https://github.com/Farama-Foundation/D4RL/blob/master/d4rl/infos.py
# They were measured on the v2 envs, and datasets built here for these tasks use them, which
# keeps scores on the published tables' scale. v5 is not v2, though (gymnasium's v5 version
# notes): a fall no longer earns that step's healthy reward, Walker2d-v5's feet both have
# friction 1.9 (v2's left foot 0.9), and Ant-v5 charges contact forces. So normalised scores
# of v5 data compare with published v2 numbers only roughly; between arms on one dataset,
# which is what a comparison here reads, they compare exactly.
D4RL_REF_SCORES: dict[str, tuple[float, float]] = {
    "Hopper": (-20.272305, 3234.3),
    "HalfCheetah": (-280.178953, 12135.0),
    "Walker2d": (1.629008, 4592.3),
    "Ant": (-325.6, 3879.7),
}


# Envs scored by success rather than return: gymnasium-robotics' AntMaze. D4RL scores AntMaze
# with REF_MIN_SCORE 0 and REF_MAX_SCORE 1 (d4rl/infos.py), its evaluation episode ending with
# return 1 at the goal, so the normalised score is the success rate in percent. gymnasium-robotics'
# AntMaze (and Minari's D4RL/antmaze eval env, a continuing task) keeps paying reward 1 per step
# at the goal, so its return is not a success count: edis-jax scores each episode by
# `info["success"]` at any step (envs.episode_outcomes) and normalises with (0, 1).
SUCCESS_SCORED = ("AntMaze_",)
SUCCESS_REF_SCORES = (0.0, 1.0)


def scored_by_success(env_id: str) -> bool:
    """Whether the env's normalised score is 100 x its success rate (AntMaze)."""
    return env_id.startswith(SUCCESS_SCORED)


class ReferenceScoreError(ValueError):
    """A normalised score was asked for but a reference score is missing or unusable."""


def d4rl_ref_scores(env_id: str) -> tuple[float, float] | None:
    """(ref_min, ref_max) from D4RL for a MuJoCo locomotion env id such as Hopper-v5, (0, 1)
    for a success-scored one (AntMaze), else None."""
    if scored_by_success(env_id):
        return SUCCESS_REF_SCORES
    name = env_id.rpartition("-v")[0] or env_id
    return D4RL_REF_SCORES.get(name)


def normalized_score(returns, ref_min: float | None, ref_max: float | None, dataset_id: str = ""):
    """100 (returns - ref_min) / (ref_max - ref_min): 0 = random policy, 100 = expert (D4RL)."""
    where = f" of dataset {dataset_id!r}" if dataset_id else ""
    if ref_min is None or ref_max is None:
        missing = " and ".join(
            n for n, v in (("ref_min_score", ref_min), ("ref_max_score", ref_max)) if v is None
        )
        raise ReferenceScoreError(
            f"the metadata{where} has no {missing}: pass --ref-min-score and --ref-max-score "
            "(e.g. random and expert mean returns) to get normalised scores"
        )
    if not ref_max > ref_min:
        raise ReferenceScoreError(
            f"ref_max_score ({ref_max}) must be above ref_min_score ({ref_min}){where}: "
            "pass corrected --ref-min-score/--ref-max-score"
        )
    return 100.0 * (np.asarray(returns, np.float64) - ref_min) / (ref_max - ref_min)

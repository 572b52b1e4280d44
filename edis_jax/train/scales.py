"""The numbers a run takes from its dataset: the reward scale, the shift and failure reward of
the Monte Carlo returns (Cal-QL's bound), and the reference scores that normalise evaluations."""

from __future__ import annotations

import numpy as np

from edis_jax import envs
from edis_jax.config import RunConfig
from edis_jax.data.scores import SUCCESS_REF_SCORES, ReferenceScoreError, scored_by_success


def reference_scores(cfg: RunConfig, dataset) -> tuple[float, float]:
    """--ref-min-score/--ref-max-score, else (0, 1) for a success-scored env (AntMaze: its
    dataset's reference returns do not apply to a success rate), else the dataset's."""
    if cfg.ref_min_score is not None:
        return cfg.ref_min_score, cfg.ref_max_score
    if scored_by_success(dataset.env_id):
        return SUCCESS_REF_SCORES
    if dataset.ref_min_score is None or dataset.ref_max_score is None:
        raise ReferenceScoreError(
            f"dataset {cfg.dataset} has no reference scores: pass --ref-min-score and "
            "--ref-max-score (e.g. random and expert returns)"
        )
    return dataset.ref_min_score, dataset.ref_max_score


def return_options(cfg: RunConfig, data_scale: float, ref: tuple[float, float]):
    """(shift, fail_reward) of mc_return (data/returns.py, returns_to_go): the agent sees reward * S + b
    and scales mc_return by S, so mc_return sums reward + b / S. Sparse rewards (Cal-QL): an
    episode ending on the reference minimum's reward failed (the published get_return_to_go)."""
    agent = cfg.agent
    shift = agent.reward_bias / (data_scale * agent.reward_scale)
    fail = ref[0] if getattr(agent, "sparse_reward", False) else None
    return shift, fail


def reward_scale(cfg: RunConfig, dataset) -> float:
    """With normalize_reward (IQL's default), rewards are scaled by H / (max - min episode
    return), H the episode length (CORL and the IQL paper use 1000, MuJoCo's H), so that returns
    span about H whatever the task. The agent multiplies this by its config's reward_scale.

    Refused on a success-scored dataset (AntMaze): its rewards are sparse 0 / 1, so the rule
    would multiply them by the episode length; the IQL paper and CORL use r - 1 there instead."""
    if cfg.agent.normalize_reward and scored_by_success(dataset.env_id):
        raise ValueError(
            f"--{cfg.algo}.normalize-reward scales rewards so that returns span the episode "
            f"length, for dense locomotion rewards; {cfg.dataset}'s are sparse success rewards: "
            f"pass --task (e.g. iql/antmaze-umaze: r - 1, as the IQL paper) or "
            f"--{cfg.algo}.no-normalize-reward"
        )
    if not cfg.agent.normalize_reward or len(dataset.episode_returns) < 2:
        return 1.0
    horizon = dataset.env_kwargs.get("max_episode_steps") or envs.episode_length(dataset.env_id)
    spread = float(np.max(dataset.episode_returns) - np.min(dataset.episode_returns))
    return horizon / spread if spread > 0 else 1.0

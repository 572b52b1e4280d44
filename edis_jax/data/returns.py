"""Discounted returns-to-go of consecutive episode steps: the mc_return of offline and online
transitions (Cal-QL's calibration bound)."""

from __future__ import annotations

import numpy as np


def returns_to_go(
    rewards,
    terminations,
    truncations,
    discount: float,
    *,
    shift: float = 0.0,
    fail_reward: float | None = None,
) -> np.ndarray:
    """G_t = r_t + discount G_{t+1} within each episode, for flat arrays of consecutive steps.

    shift is added to every reward first (an agent's reward bias over its scale). fail_reward
    (Cal-QL's sparse-reward rule, the published get_return_to_go): an episode whose last reward
    equals it gets (r_last + shift) / (1 - discount) at every step, the value of failing forever.

    An episode ends at a termination, a truncation, or the end of the arrays. After a
    termination the future is zero, so G is exact. After a truncation (time limit, or a dataset
    cut at its step budget) the future is unknown and taken as zero, as CORL's Cal-QL does: G is
    then the discounted sum of the rewards observed, an underestimate when rewards are
    non-negative, which only weakens Cal-QL's calibration (Q of policy actions is bounded
    below by G), never pushes Q above its true value.
    """
    rewards = np.asarray(rewards, np.float64)
    ends = np.logical_or(np.asarray(terminations, bool), np.asarray(truncations, bool))
    if rewards.shape != ends.shape or rewards.ndim != 1:
        raise ValueError(
            f"rewards {rewards.shape}, terminations and truncations must be equal 1-d shapes"
        )
    raw = rewards
    if shift:
        rewards = rewards + shift
    out = np.empty_like(rewards)
    future, fail_value = 0.0, None
    for t in range(len(rewards) - 1, -1, -1):
        if ends[t] or t == len(rewards) - 1:  # the last step of an episode
            future = 0.0
            failed = fail_reward is not None and raw[t] == fail_reward
            fail_value = rewards[t] / (1.0 - discount) if failed else None
        future = rewards[t] + discount * future
        out[t] = future if fail_value is None else fail_value
    return out.astype(np.float32)

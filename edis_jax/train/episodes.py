"""Episodes of the online phase: each seed's running episode (train_return, and the Monte Carlo
returns of its online rows), the true last observation of an episode that autoreset, and the
replay that puts a resumed run's environments where the interrupted run left them.

How a resumed run restores its environments: the online buffer holds every action taken, in
order, per seed (it never wraps). The vector env is reset with the run's seeds and the recorded
actions are replayed through it, which puts every sub-env (physics, time limit, autoreset RNG)
exactly where the interrupted run left it; the replay checks that the observations match the
stored ones. Evaluation envs are created afresh per evaluation from the evaluation's index.
"""

from __future__ import annotations

import jax
import numpy as np
from tqdm.auto import tqdm

from edis_jax.config import RunConfig
from edis_jax.data.buffer import ReplayBuffer
from edis_jax.data.returns import returns_to_go
from edis_jax.storage import checkpoint


class Episodes:
    """The running episode of each seed's sub-env: its return (for train_return) and its
    rewards, whose discounted returns-to-go become the online transitions' mc_return (Cal-QL's
    calibration bound) once it ends. Until then those rows keep mc_return 0, and a time-limit
    truncation counts as zero future, as for the offline data (returns_to_go)."""

    PAD = 1 << 30  # a row index past any buffer's end: write_returns ignores it

    def __init__(self, seeds: int, discount: float, shift: float = 0.0, fail_reward=None):
        self.discount, self.shift, self.fail_reward = discount, shift, fail_reward
        self.rewards: list[list[float]] = [[] for _ in range(seeds)]
        self.last_return = np.full(seeds, np.nan)  # of the latest finished episode

    def step(self, t: int, reward, ended) -> tuple[np.ndarray, np.ndarray] | None:
        """Record online step t; for the episodes it ends, (steps, returns) of shape (seeds, n)
        for state.write_returns, padded with PAD (None when no episode ended)."""
        done = []
        for i, (r, end) in enumerate(zip(reward, ended, strict=True)):
            self.rewards[i].append(float(r))
            if end:
                self.last_return[i] = sum(self.rewards[i])
                # The episode's first transition was online step t + 1 - its length.
                done.append((i, t + 1 - len(self.rewards[i]), np.asarray(self.rewards[i])))
                self.rewards[i] = []
        if not done:
            return None
        # Widths rounded up to a power of two: a handful of compiled shapes per run.
        width = 1 << max(len(r) for _, _, r in done).bit_length()
        steps = np.full((len(ended), width), self.PAD, np.int32)
        returns = np.zeros((len(ended), width), np.float32)
        for i, start, rewards in done:
            n, no_end = len(rewards), np.zeros(len(rewards), bool)
            steps[i, :n] = start + np.arange(n)
            returns[i, :n] = returns_to_go(
                rewards,
                no_end,
                no_end,
                self.discount,
                shift=self.shift,
                fail_reward=self.fail_reward,
            )
        return steps, returns


def restore_envs(
    vec_env, cfg: RunConfig, episodes: Episodes, online: ReplayBuffer, online_step: int, to_env,
    show: bool,
):  # fmt: skip
    """Reset the sub-envs with the run's seeds and replay the first `online_step` actions of the
    `online` buffer (leading seed axis) through them and `episodes`; returns the observation the
    run continues from."""
    obs, _ = vec_env.reset(seed=[train_seed(cfg, i) for i in range(cfg.seeds)])
    if online_step == 0:
        return obs
    stored = jax.device_get(online.data)
    for t in tqdm(range(online_step), desc="replaying env", disable=not show):
        if not np.array_equal(np.asarray(obs, np.float32), stored.obs[:, t]):
            raise checkpoint.CheckpointError(
                f"replaying the environment diverged at online step {t}: the env is not "
                "deterministic under its seed (or mujoco changed version), so this run "
                "cannot be resumed exactly; start it again with --overwrite"
            )
        obs, reward, terminated, truncated, _ = vec_env.step(to_env(stored.action[:, t]))
        # Returns of episodes that ended before the checkpoint are in its buffers already.
        episodes.step(t, reward, terminated | truncated)
    return obs


def final_observations(next_obs, ended, info) -> np.ndarray:
    """With SAME_STEP autoreset, an ended sub-env returns its reset observation; the true last
    observation is in info["final_obs"]."""
    if not np.any(ended):
        return next_obs
    final = np.array(next_obs, copy=True)
    for i in np.flatnonzero(ended):
        final[i] = info["final_obs"][i]
    return final


def train_seed(cfg: RunConfig, i: int) -> int:
    return cfg.seed * 10_007 + i

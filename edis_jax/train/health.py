"""Generator health: how the synthetic transitions of a retrain compare with real data.

Written per seed into metrics.jsonl at every retrain (beside the retrain's own metrics: the
diffusion loss, CEP training and held-out accuracies, the clipped-action fraction), so a run
shows whether its generator deserves the share of the agent's batches it gets.
"""

from __future__ import annotations

import jax
import numpy as np

from edis_jax import envs
from edis_jax.data.buffer import ReplayBuffer
from edis_jax.data.transition import Transition
from edis_jax.envs import simulators

# Rows per seed put through the simulator for the dynamics error: MuJoCo steps them one by one
# on the host (~0.1 ms each), so a few hundred keep it far below a retrain's cost.
DYNAMICS_ROWS = 256


def generator_health(
    samples: Transition,
    real: ReplayBuffer,
    online: ReplayBuffer,
    env_id: str,
    actions: envs.ActionScale,
    *,
    dynamics_rows: int = DYNAMICS_ROWS,
) -> dict[str, np.ndarray]:
    """Per-seed statistics (arrays of shape (seeds,)) of the synthetic `samples` against the
    real data (all leaves with a leading seed axis):

    - reward mean and std, terminal rate: synthetic rows against the filled rows of `real`;
    - dynamics error |s' - s'_true| (mean Euclidean, raw units) of the first `dynamics_rows`
      synthetic rows and of the latest `dynamics_rows` online rows, the simulator set to each
      row's (s, a) (`simulators.simulate`); absent where the env's state cannot be set. Real rows are
      not all exactly 0: Hopper and Walker2d clip observed velocities (see `simulators.mujoco_step`).
    """
    samples = jax.device_get(samples)
    real_reward, real_terminal, real_size = jax.device_get(
        (real.data.reward, real.data.terminal, real.size)
    )
    seeds = samples.reward.shape[0]
    out: dict[str, list] = {}
    for i in range(seeds):
        filled = slice(0, int(real_size[i]))
        row = {
            "synthetic_reward_mean": samples.reward[i].mean(),
            "synthetic_reward_std": samples.reward[i].std(),
            "real_reward_mean": real_reward[i, filled].mean(),
            "real_reward_std": real_reward[i, filled].std(),
            "synthetic_terminal_rate": samples.terminal[i].mean(),
            "real_terminal_rate": real_terminal[i, filled].mean(),
        }
        for name, value in row.items():
            out.setdefault(name, []).append(float(value))
    if simulators.can_simulate(env_id):
        online_rows = _latest_online_rows(online, dynamics_rows)
        for i in range(seeds):
            synthetic = jax.tree.map(lambda x, i=i: x[i, :dynamics_rows], samples)
            real_rows = jax.tree.map(lambda x, i=i: x[i], online_rows)
            for name, rows in (("synthetic", synthetic), ("real", real_rows)):
                action = actions.to_env(rows.action)
                error = simulators.dynamics_error(env_id, rows.obs, action, rows.next_obs)
                out.setdefault(f"{name}_dynamics_error", []).append(error)
    return {name: np.asarray(values, np.float64) for name, values in out.items()}


def _latest_online_rows(online: ReplayBuffer, n: int) -> Transition:
    """The latest n rows of every seed's online buffer (it never wraps; all seeds hold the
    same number of rows)."""
    size = int(np.asarray(jax.device_get(online.size)).min())
    start = max(size - n, 0)
    return jax.device_get(jax.tree.map(lambda x: x[:, start:size], online.data))

"""Episodes as Minari-style dicts of numpy arrays (observations (T+1, ds), actions (T, da),
rewards, terminations, truncations (T,)): the one episode recorder, the rollouts of a host
policy that fill the builder's datasets, and the host policies they roll out.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import numpy as np

from edis_jax import envs
from edis_jax.train import env_step
from edis_jax.train.episodes import final_observations

EPISODE_KEYS = ("actions", "rewards", "terminations", "truncations")


class EpisodeRecorder:
    """One env's episode as it runs: `step` records a transition and, when it ends the episode,
    returns the episode's arrays; `reset` starts the next one. The arrays keep the dtypes of the
    values recorded."""

    def __init__(self, obs):
        self.reset(obs)

    def reset(self, obs) -> None:
        self._observations = [obs]
        self._steps: dict[str, list] = {k: [] for k in EPISODE_KEYS}

    def step(self, action, reward, terminated, truncated, next_obs) -> dict | None:
        """Record one step; `next_obs` is the transition's (the final one when it ends)."""
        for k, v in zip(EPISODE_KEYS, (action, reward, terminated, truncated), strict=True):
            self._steps[k].append(v)
        self._observations.append(next_obs)
        if not (terminated or truncated):
            return None
        return {
            "observations": np.stack(self._observations),
            **{k: np.asarray(v) for k, v in self._steps.items()},
        }


def rollout(
    env_id: str,
    policy_fn: Callable[[np.ndarray], np.ndarray],
    steps: int,
    seed: int,
    num_envs: int = 8,
) -> list[dict]:
    """Exactly `steps` transitions of policy_fn(obs batch) -> action batch (env units), as
    episode dicts.

    `num_envs` sub-envs (seeds seed, seed+1, ...) step side by side so that the policy runs on
    batches. Finished episodes are kept in the order they finish until they hold `steps`
    transitions; the last one kept is cut to fit (marked truncated unless it terminated right
    there) and episodes still running are dropped.
    """
    env = envs.make_vector_env(env_id, num_envs)
    finished: list[dict] = []
    total = 0
    try:
        obs, _ = env.reset(seed=seed)
        recorders = [EpisodeRecorder(o) for o in obs]
        while total < steps:
            action = np.asarray(policy_fn(obs), env.action_space.dtype)
            obs, reward, terminated, truncated, info = env.step(action)
            # SAME_STEP autoreset: obs[i] already starts the next episode when one ended.
            final = final_observations(obs, terminated | truncated, info)
            for i, recorder in enumerate(recorders):
                episode = recorder.step(
                    action[i], float(reward[i]), bool(terminated[i]), bool(truncated[i]), final[i]
                )
                if episode is not None and total < steps:
                    finished.append(_cut(episode, steps - total))
                    total += len(finished[-1]["rewards"])
                if episode is not None:
                    recorder.reset(obs[i])
    finally:
        env.close()
    return finished


def sac_policy(agent, env_id: str, seed: int) -> Callable[[np.ndarray], np.ndarray]:
    """A stochastic host policy obs -> env action from a SAC agent (keys threaded). The agent
    acts in [-1, 1]^da; envs.ActionScale restores the env's bounds."""
    key = jax.random.PRNGKey(seed)
    to_env = envs.ActionScale(env_id).to_env

    def policy(obs: np.ndarray) -> np.ndarray:
        nonlocal key
        key, sub = jax.random.split(key)
        return to_env(np.asarray(env_step.act(agent, sub, np.asarray(obs, np.float32))))

    return policy


def random_policy(env_id: str, seed: int) -> Callable[[np.ndarray], np.ndarray]:
    """Uniform random actions of the env's action space, for one observation or a batch."""
    env = envs.make_env(env_id)
    space = env.action_space
    env.close()
    space.seed(seed)
    return lambda obs: (
        space.sample() if np.ndim(obs) == 1 else np.stack([space.sample() for _ in obs])
    )


def _cut(episode: dict, max_steps: int) -> dict:
    """The episode's first `max_steps` steps; a cut episode ends truncated."""
    n = min(len(episode["rewards"]), max_steps)
    if n == len(episode["rewards"]):
        return episode
    out = {k: v[: n + 1 if k == "observations" else n] for k, v in episode.items()}
    if not out["terminations"][-1]:
        out["truncations"][-1] = True
    return out

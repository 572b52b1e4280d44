"""The online phase's env steps, one driver per --env-backend, behind one face for the run driver
(train/loop.py's online_phase, which does everything between the steps: logs, evaluations,
retrains, checkpoints):

    chunk(t, boundary) -> n     how many steps to take at once from step t (boundary: the next
                                step where the host has work)
    advance(t, n, random_steps) steps t .. t + n - 1 of every seed; returns the last metrics
    last_return()               each seed's latest finished training episode's return
    agent_changed()             the agent changed between steps (a retrain's extra updates)
    close()

`GymnasiumSteps` steps gymnasium's vector env on the host, one device call per step
(train/state.online_step). `JaxSteps` runs every step up to the boundary as one device call
with the env inside (train/jax_online.online_chunk).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from edis_jax import envs
from edis_jax.train import env_step, jax_online
from edis_jax.train import state as S
from edis_jax.train.episodes import Episodes, final_observations, restore_envs


class GymnasiumSteps:
    """Host envs, one sub-env per seed; a resumed run replays its recorded actions through them
    (train/episodes.py). The observation acted on and its action stay on the device between
    steps; one device call per env step."""

    def __init__(self, run):
        cfg = run.cfg
        self.run = run
        self.vec_env = envs.make_vector_env(run.dataset.env_id, cfg.seeds, run.dataset.env_kwargs)
        self.episodes = Episodes(cfg.seeds, cfg.agent.discount, run.return_shift, run.fail_reward)
        obs = restore_envs(
            self.vec_env, cfg, self.episodes, run.state.online, run.progress.online_step,
            run.actions.to_env, run.show,
        )  # fmt: skip
        self.obs = jnp.asarray(obs, jnp.float32)
        self.action = None  # drawn by S.choose_action at the start and after an agent change

    def chunk(self, t: int, boundary: int) -> int:
        return 1

    def advance(self, t: int, n: int, random_steps: int):
        run, cfg = self.run, self.run.cfg
        if self.action is None:
            self.action = S.choose_action(
                run.state.agent, self.obs, run.keys, np.int32(t), t < random_steps
            )
        next_obs, reward, terminated, truncated, info = self.vec_env.step(
            run.actions.to_env(np.asarray(self.action))
        )
        ended = terminated | truncated
        final_obs = final_observations(next_obs, ended, info)
        run.state, self.obs, self.action, metrics = S.online_step(
            run.state,
            self.obs,
            self.action,
            env_step.env_row(next_obs, final_obs, reward, terminated),
            run.keys,
            np.int32(t),
            t + 1 < random_steps,
            utd=cfg.online.utd,
            batch_size=cfg.batch_size,
        )
        finished = self.episodes.step(t, reward, ended)
        if finished is not None:
            run.state = S.write_returns(run.state, *finished)
        return metrics

    def last_return(self) -> np.ndarray:
        return self.episodes.last_return

    def agent_changed(self) -> None:
        self.action = None  # online_step drew it with the agent before the change

    def close(self) -> None:
        self.vec_env.close()


class JaxSteps:
    """The env inside the compiled program: its state is the run state's `env` (checkpointed
    with it, so a resumed run needs no replay), and every step up to the next boundary is one
    device call."""

    def __init__(self, run):
        self.run = run
        self.returns = jax_online.ReturnRule(
            run.cfg.agent.discount, run.return_shift, run.fail_reward
        )

    def chunk(self, t: int, boundary: int) -> int:
        return boundary - t

    def advance(self, t: int, n: int, random_steps: int):
        run, cfg = self.run, self.run.cfg
        run.state, metrics = jax_online.online_chunk(
            run.state, run.keys, np.int32(t), np.int32(n), np.int32(random_steps),
            env=run.jax_env, bounds=run.action_bounds, returns=self.returns,
            utd=cfg.online.utd, batch_size=cfg.batch_size,
        )  # fmt: skip
        return metrics

    def last_return(self) -> np.ndarray:
        return np.asarray(jax.device_get(self.run.state.env.last_return), np.float64)

    def agent_changed(self) -> None:
        pass  # each step draws its action from the agent it finds

    def close(self) -> None:
        pass

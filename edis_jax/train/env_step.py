"""One online env step on the device, the body both online loops compile: the run driver's
(train/state.online_step, every seed in one call) and the dataset builder's behaviour SAC
(datagen/behaviour.py, one env, no seed axis: `one_env_step` and the acting programs here).

Per env step the host makes one device call. The observation acted on and the action taken
are still on the device from the previous call; the env's answer crosses once, packed into
one float32 row (`env_row`); the call stores the transition, runs the updates and returns the
next action, which crosses back once to step the env.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from edis_jax import agents
from edis_jax.data import buffer
from edis_jax.data.transition import Transition


def env_row(next_obs, final_obs, reward, terminated) -> np.ndarray:
    """The env's answer to one step as one float32 array (..., 2 ds + 2): the observation to act
    on next, the transition's next observation (they differ where an episode ended and the
    env reset), the reward and the termination flag."""
    return np.concatenate(
        [next_obs, final_obs, np.asarray(reward)[..., None], np.asarray(terminated)[..., None]],
        axis=-1,
        dtype=np.float32,
    )


def learn_and_act(
    agent, mixture: buffer.Mixture, into: tuple[int, ...], obs, action, row, update_key,
    act_keys, random, *, num_updates: int, batch_size: int,
):  # fmt: skip
    """One env step of one seed: add the transition (obs, action, then `row`'s reward, next
    observation and termination) to the mixture's buffers `into`, run `num_updates` updates of
    the agent on the mixture, and draw the action for `row`'s next observation.

    Returns (agent, mixture, next observation, next action, metrics ({} without updates)).
    """
    obs_dim = obs.shape[-1]
    next_obs, final_obs = row[:obs_dim], row[obs_dim : 2 * obs_dim]
    reward, terminal = row[2 * obs_dim], row[2 * obs_dim + 1]
    transition = Transition(obs, action, reward, final_obs, terminal, jnp.zeros_like(reward))
    buffers = tuple(
        buffer.add(b, transition) if i in into else b for i, b in enumerate(mixture.buffers)
    )
    mixture = mixture.replace(buffers=buffers)
    metrics = {}
    if num_updates:
        agent, metrics = agents.update_chunk(agent, mixture, update_key, num_updates, batch_size)
    return agent, mixture, next_obs, explore(agent, next_obs, *act_keys, random), metrics


def explore(agent, obs, sample_key, uniform_key, random) -> jnp.ndarray:
    """The exploration action for obs: a policy sample, or uniform in [-1, 1] while `random`
    (a bool leaf: SAC's start steps, in the same compiled program)."""
    action = agent.act(sample_key, obs)
    uniform = jax.random.uniform(uniform_key, action.shape, minval=-1.0, maxval=1.0)
    return jnp.where(random, uniform, action)


# ------------------------------------------------------ one agent on one env (behaviour SAC)


@functools.partial(jax.jit, static_argnames=("num_updates", "batch_size"), donate_argnums=(0, 1))
def one_env_step(agent, replay, obs, action, row, key, random, *, num_updates, batch_size):
    """`learn_and_act` for one agent and its one buffer `replay`, keys split from `key`.
    Returns (agent, replay, next obs, next action, next key)."""
    key, step_key = jax.random.split(key)
    update_key, act_key = jax.random.split(step_key)
    agent, mixture, obs, action, _ = learn_and_act(
        agent, buffer.Mixture.of(replay), (0,), obs, action, row, update_key,
        (act_key, act_key), random, num_updates=num_updates, batch_size=batch_size,
    )  # fmt: skip
    return agent, mixture.buffers[0], obs, action, key


@jax.jit
def first_action(agent, key, obs, random):
    """The action `one_env_step` would draw for the first observation of a run."""
    return explore(agent, obs, key, key, random)


@functools.partial(jax.jit, static_argnames=("deterministic",))
def act(agent, key, obs, *, deterministic: bool = False):
    """One agent's action for obs: sampled with `key`, or its mean (key None) if deterministic."""
    return agent.act(key, obs, deterministic=deterministic)

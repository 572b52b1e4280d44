"""The agents IQL, SAC and Cal-QL, one face on three pytrees (as rlpd's learners):

    agent = IQL.create(key, obs_dim, act_dim, config, obs_norm=..., reward_scale=...)
    agent, metrics = agent.update(batch)
    action = agent.act(key, obs, deterministic)  # key may be None when deterministic
    log_density = agent.log_prob(obs, action)
    agent = agent.to_online()  # phase-dependent numbers (Cal-QL's alpha) to their online values

`update_chunk` scans `update` over batches for any of them. The agent's type picks the
algorithm; `create` maps the config's name ("iql", "sac", "calql") to a type, in one place.
"""

from __future__ import annotations

import jax

from edis_jax.agents.calql import CalQL
from edis_jax.agents.iql import IQL
from edis_jax.agents.learner import Agent, update_chunk
from edis_jax.agents.sac import SAC

__all__ = ["AGENTS", "IQL", "Agent", "SAC", "CalQL", "create", "policy", "update_chunk"]

AGENTS = {"iql": IQL, "sac": SAC, "calql": CalQL}


def create(algo: str, key: jax.Array, obs_dim: int, act_dim: int, config, *, offline_steps=0, **kw):
    """A fresh agent of the algorithm named `algo`; `kw` as `Agent.create` (obs_norm,
    reward_scale). offline_steps is the length of the offline phase: the horizon of IQL's cosine
    actor-lr annealing (CORL); SAC and Cal-QL keep constant learning rates."""
    if algo not in AGENTS:
        raise ValueError(f"unknown algo {algo!r}: choose one of {', '.join(AGENTS)}")
    schedule = {"decay_steps": offline_steps} if AGENTS[algo] is IQL else {}
    return AGENTS[algo].create(key, obs_dim, act_dim, config, **kw, **schedule)


def policy(agent) -> jax.tree_util.Partial:
    """The stochastic policy as a pytree callable policy(key, obs) -> action, which can cross
    jit and vmap boundaries (the agent's arrays are its leaves)."""
    return jax.tree_util.Partial(type(agent).act, agent)

"""The agents IQL, SAC and Cal-QL: each module exposes create / update / update_chunk / act /
sample_action / deterministic_action / log_prob / set_online as pure functions on a pytree."""

from __future__ import annotations

import importlib
from types import ModuleType

import jax

ALGOS = ("iql", "sac", "calql")


def get(algo: str) -> ModuleType:
    """The agent module for "iql", "sac" or "calql"."""
    if algo not in ALGOS:
        raise ValueError(f"unknown algo {algo!r}: choose one of {', '.join(ALGOS)}")
    return importlib.import_module(f"edis_jax.agents.{algo}")


def policy(algo: str, agent) -> jax.tree_util.Partial:
    """The stochastic policy as a pytree callable policy(key, obs) -> action, which can cross
    jit and vmap boundaries (the agent's arrays are its leaves)."""
    return jax.tree_util.Partial(get(algo).sample_action, agent)


def eval_policy(algo: str, agent) -> jax.tree_util.Partial:
    """The deterministic policy (the mean action), same calling convention as `policy`."""
    return jax.tree_util.Partial(get(algo).deterministic_action, agent)

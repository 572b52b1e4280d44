"""Environments: gymnasium's (creation, vector envs, evaluation, action units), the termination
rules in jnp, simulators set to an observation, and JAX-native envs as pure reset / step
functions (`make_jax_env`)."""

from edis_jax.envs.gym_envs import (
    ActionScale,
    FlatObservation,
    episode_length,
    episode_outcomes,
    evaluate,
    make_env,
    make_vector_env,
    step_successes,
)
from edis_jax.envs.jax_env import (
    EnvState,
    JaxEnv,
    has_jax_env,
    make_jax_env,
    step_autoreset,
)
from edis_jax.envs.termination import TerminationFn, missing_rule_note, termination_fn

__all__ = [
    "ActionScale",
    "EnvState",
    "FlatObservation",
    "JaxEnv",
    "TerminationFn",
    "episode_length",
    "episode_outcomes",
    "evaluate",
    "has_jax_env",
    "make_env",
    "make_jax_env",
    "make_vector_env",
    "missing_rule_note",
    "step_autoreset",
    "step_successes",
    "termination_fn",
]

"""The known termination rules of gymnasium's tasks in jnp, to label synthetic transitions:
terminal(obs, action, next_obs) from the observation alone."""

from __future__ import annotations

from collections.abc import Callable

import jax.numpy as jnp

TerminationFn = Callable[[jnp.ndarray, jnp.ndarray, jnp.ndarray], jnp.ndarray]


def termination_fn(env_id: str) -> TerminationFn | None:
    """The env's termination rule as terminal(obs, action, next_obs) -> float (1.0 = ended),
    computed from next_obs in jnp (any leading batch shape); None if the rule is not known.

    The rules are gymnasium's v4/v5 `is_healthy` with default arguments; they need the env's
    default observation (positions x, y excluded). Hopper also bounds |velocity| < 100, which
    the observation (velocities clipped to 10) can never violate.
    """
    name, _, version = env_id.rpartition("-v")
    if name in _NEVER_TERMINATE:
        return _never
    if version in ("4", "5") and name in _HEALTHY_RULES:
        return _HEALTHY_RULES[name]
    return None


def missing_rule_note(env_id: str, terminal_rows: int) -> str | None:
    """The line a run that generates synthetic rows prints when its data has terminations that
    its synthetic rows cannot have (no known rule: they are labelled 0, as the published EDIS
    code labels all of them); None where the rule is known or the data never terminates."""
    if terminal_rows == 0 or termination_fn(env_id) is not None:
        return None
    return (
        f"note: {terminal_rows} rows of the data terminate, but edis-jax knows no termination "
        f"rule for {env_id} (envs/termination.py): its synthetic rows are never terminal, so "
        "the agent bootstraps through synthetic failures"
    )


def _never(obs, action, next_obs):
    return jnp.zeros(jnp.shape(next_obs)[:-1], jnp.float32)


def _hopper(obs, action, next_obs):
    # Hopper-v5 defaults: z in (0.7, inf), angle in (-0.2, 0.2), obs[1:] in (-100, 100).
    z, angle = next_obs[..., 0], next_obs[..., 1]
    state_ok = jnp.all(jnp.abs(next_obs[..., 1:]) < 100.0, axis=-1)
    healthy = (z > 0.7) & (jnp.abs(angle) < 0.2) & state_ok
    return (~healthy).astype(jnp.float32)


def _walker2d(obs, action, next_obs):
    # Walker2d-v5 defaults: z in (0.8, 2.0), angle in (-1, 1).
    z, angle = next_obs[..., 0], next_obs[..., 1]
    healthy = (z > 0.8) & (z < 2.0) & (jnp.abs(angle) < 1.0)
    return (~healthy).astype(jnp.float32)


def _ant(obs, action, next_obs):
    # Ant-v5 defaults: finite state and z in [0.2, 1.0] (closed interval, unlike the others).
    z = next_obs[..., 0]
    healthy = jnp.all(jnp.isfinite(next_obs), axis=-1) & (z >= 0.2) & (z <= 1.0)
    return (~healthy).astype(jnp.float32)


def _humanoid(obs, action, next_obs):
    # Humanoid-v5 defaults: z in (1.0, 2.0).
    z = next_obs[..., 0]
    return (~((z > 1.0) & (z < 2.0))).astype(jnp.float32)


def _inverted_pendulum(obs, action, next_obs):
    # InvertedPendulum-v5: ends when the pole angle leaves [-0.2, 0.2] or the state is not finite.
    ok = jnp.all(jnp.isfinite(next_obs), axis=-1) & (jnp.abs(next_obs[..., 1]) <= 0.2)
    return (~ok).astype(jnp.float32)


_HEALTHY_RULES: dict[str, TerminationFn] = {
    "Hopper": _hopper,
    "Walker2d": _walker2d,
    "Ant": _ant,
    "Humanoid": _humanoid,
    "InvertedPendulum": _inverted_pendulum,
}
# Time-limit-only tasks: every episode is truncated, none terminates.
_NEVER_TERMINATE = ("HalfCheetah", "Swimmer", "Reacher", "Pusher", "Pendulum")

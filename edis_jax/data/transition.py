"""The transition pytree every buffer, agent and generator exchanges."""

from __future__ import annotations

import jax.numpy as jnp
from flax import struct


class Transition(struct.PyTreeNode):
    """A batch (or one row) of transitions, float32.

    `terminal` is 1.0 only on termination (the MDP ended), never on truncation (a time limit),
    so bootstrapping stops exactly where the environment says the future is zero.
    `mc_return` is the episode-aware discounted return-to-go (Cal-QL's calibration bound); zeros
    where it is unknown, e.g. online transitions before their episode ends.
    """

    obs: jnp.ndarray
    action: jnp.ndarray
    reward: jnp.ndarray
    next_obs: jnp.ndarray
    terminal: jnp.ndarray
    mc_return: jnp.ndarray

    @classmethod
    def zeros(cls, obs_dim: int, act_dim: int, batch_shape: tuple[int, ...] = ()) -> Transition:
        f = lambda *tail: jnp.zeros((*batch_shape, *tail), jnp.float32)  # noqa: E731
        return cls(f(obs_dim), f(act_dim), f(), f(obs_dim), f(), f())

    @classmethod
    def from_arrays(cls, obs, action, reward, next_obs, terminal, mc_return=None) -> Transition:
        reward = jnp.asarray(reward, jnp.float32)
        return cls(
            obs=jnp.asarray(obs, jnp.float32),
            action=jnp.asarray(action, jnp.float32),
            reward=reward,
            next_obs=jnp.asarray(next_obs, jnp.float32),
            terminal=jnp.asarray(terminal, jnp.float32),
            mc_return=jnp.zeros_like(reward)
            if mc_return is None
            else jnp.asarray(mc_return, jnp.float32),
        )

    @property
    def obs_dim(self) -> int:
        return self.obs.shape[-1]

    @property
    def act_dim(self) -> int:
        return self.action.shape[-1]

    def __len__(self) -> int:
        return self.reward.shape[0]

    def to_vector(self, delta: bool = False) -> jnp.ndarray:
        """x = concat(s, a, r, s'), the diffusion model's data vector (DESIGN.md section 2);
        with `delta`, the last part is s' - s instead."""
        last = self.next_obs - self.obs if delta else self.next_obs
        return jnp.concatenate([self.obs, self.action, self.reward[..., None], last], axis=-1)

    @classmethod
    def from_vector(cls, x: jnp.ndarray, obs_dim: int, act_dim: int, delta=False) -> Transition:
        """Split x = concat(s, a, r, s') (or s' - s with `delta`); terminal and mc_return are
        zero (not modelled)."""
        s, a = x[..., :obs_dim], x[..., obs_dim : obs_dim + act_dim]
        r = x[..., obs_dim + act_dim]
        s_next = x[..., obs_dim + act_dim + 1 :]
        zero = jnp.zeros_like(r)
        return cls(s, a, r, s + s_next if delta else s_next, zero, zero)


def vector_slices(obs_dim: int, act_dim: int) -> dict[str, slice]:
    """Where s, a, r and s' sit inside the data vector x."""
    a0 = obs_dim
    r0 = a0 + act_dim
    return {
        "obs": slice(0, a0),
        "action": slice(a0, r0),
        "reward": slice(r0, r0 + 1),
        "next_obs": slice(r0 + 1, r0 + 1 + obs_dim),
    }

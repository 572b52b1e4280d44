"""Soft actor-critic (Haarnoja et al. 2018) as a pytree: tanh-Gaussian actor, twin or ensemble
critics (optional LayerNorm, RLPD), learned temperature with target entropy -act_dim.

The online learner of the project and of the dataset builder; Cal-QL (calql.py) reuses its
actor, temperature and target pieces.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from edis_jax.agents.learner import Agent, Learner, polyak, scalar
from edis_jax.config.agent_configs import SACConfig
from edis_jax.data.normalizer import Normalizer
from edis_jax.data.transition import Transition
from edis_jax.nets import (
    CriticEnsemble,
    TanhGaussianActor,
    tanh_gaussian_log_prob,
    tanh_gaussian_sample,
)


class SAC(Agent):
    actor: Learner
    critic: Learner
    temperature: Learner  # params = log(alpha), a scalar
    target_critic: Any
    obs_norm: Normalizer
    rng: jax.Array  # update noise (policy samples, ensemble subsets)
    discount: jnp.ndarray
    tau: jnp.ndarray
    target_entropy: jnp.ndarray
    reward_scale: jnp.ndarray  # reward' = reward * reward_scale + reward_bias
    reward_bias: jnp.ndarray
    actor_net: TanhGaussianActor = struct.field(pytree_node=False)
    critic_net: CriticEnsemble = struct.field(pytree_node=False)
    backup_entropy: bool = struct.field(pytree_node=False)

    NAME, CONFIG = "sac", SACConfig

    @property
    def alpha(self) -> jnp.ndarray:
        return jnp.exp(self.temperature.params)

    @classmethod
    def build(
        cls, key, obs_dim: int, act_dim: int, config, obs_norm: Normalizer, reward_scale
    ) -> SAC:
        """`create`'s work, for any config with SAC's fields (Cal-QL builds its SAC part here)."""
        actor_key, critic_key, rng = jax.random.split(key, 3)
        actor_net = TanhGaussianActor(tuple(config.hidden_dims), act_dim)
        critic_dims = config.critic_hidden_dims or config.hidden_dims
        critic_net = CriticEnsemble(
            tuple(critic_dims), num=config.num_qs, layer_norm=config.critic_layer_norm
        )
        obs, action = jnp.zeros((1, obs_dim)), jnp.zeros((1, act_dim))
        critic_params = critic_net.init(critic_key, obs, action)
        return cls(
            actor=Learner.create(actor_net.init(actor_key, obs), config.actor_lr),
            critic=Learner.create(critic_params, config.critic_lr),
            temperature=Learner.create(scalar(jnp.log(config.init_temperature)), config.temp_lr),
            target_critic=jax.tree.map(jnp.copy, critic_params),  # own buffers (donation-safe)
            obs_norm=obs_norm,
            rng=rng,
            discount=scalar(config.discount),
            tau=scalar(config.tau),
            target_entropy=scalar(-act_dim),  # SAC's heuristic: -dim(A)
            reward_scale=scalar(reward_scale * config.reward_scale),
            reward_bias=scalar(config.reward_bias),
            actor_net=actor_net,
            critic_net=critic_net,
            backup_entropy=config.backup_entropy,
        )

    def update(self, batch: Transition) -> tuple[SAC, dict[str, jnp.ndarray]]:
        """One critic step, then one actor and temperature step, then the Polyak target step."""
        rng, critic_key, actor_key = jax.random.split(self.rng, 3)
        agent = self.replace(rng=rng)
        batch = prepare_batch(agent, batch)
        agent, critic_info = update_critic(agent, batch, critic_key)
        agent, actor_info = update_actor_and_temperature(agent, batch.obs, actor_key)
        return update_target(agent), {**critic_info, **actor_info}

    def act(self, key: jax.Array, obs: jnp.ndarray, deterministic: bool = False) -> jnp.ndarray:
        """Action in [-1, 1]^act_dim for obs of shape (..., obs_dim): tanh(mean) or a sample."""
        mean, log_std = self.actor_net.apply(self.actor.params, self.obs_norm.normalize(obs))
        if deterministic:
            return jnp.tanh(mean)
        return tanh_gaussian_sample(key, mean, log_std)[0]

    def log_prob(self, obs: jnp.ndarray, action: jnp.ndarray) -> jnp.ndarray:
        mean, log_std = self.actor_net.apply(self.actor.params, self.obs_norm.normalize(obs))
        return tanh_gaussian_log_prob(mean, log_std, action)

    def to_online(self) -> SAC:
        """Unchanged: SAC has no phase-dependent numbers."""
        return self


# ------------------------------------------------------------------- pieces Cal-QL reuses


def prepare_batch(agent: SAC, batch: Transition) -> Transition:
    """Normalise observations; rewards become reward * scale + bias. The MC return is only
    scaled: the run computes it from reward + bias / scale (and applies the sparse-reward rule),
    so that scaled it is the discounted return of the transformed rewards."""
    norm = agent.obs_norm.normalize
    return batch.replace(
        obs=norm(batch.obs),
        next_obs=norm(batch.next_obs),
        reward=batch.reward * agent.reward_scale + agent.reward_bias,
        mc_return=batch.mc_return * agent.reward_scale,
    )


def update_critic(agent: SAC, batch: Transition, key: jax.Array):
    """Soft TD step on a prepared batch: r + gamma (1 - terminal) (min Q'(s', a') - alpha log pi)."""
    policy_key, subset_key = jax.random.split(key)
    next_action, next_logp = sample_policy(agent, agent.actor.params, batch.next_obs, policy_key)
    next_qs = agent.critic_net.apply(agent.target_critic, batch.next_obs, next_action)
    next_q = pessimistic_q(next_qs, subset_key)
    if agent.backup_entropy:
        next_q = next_q - agent.alpha * next_logp
    target = batch.reward + agent.discount * (1.0 - batch.terminal) * next_q

    def loss_fn(params):
        qs = agent.critic_net.apply(params, batch.obs, batch.action)
        # Sum over the ensemble of per-critic MSEs (CORL): each critic gets its own TD loss.
        return ((qs - target) ** 2).mean(-1).sum(), qs

    (loss, qs), grads = jax.value_and_grad(loss_fn, has_aux=True)(agent.critic.params)
    agent = agent.replace(critic=agent.critic.apply_gradients(grads))
    return agent, {"critic_loss": loss, "q_mean": qs.mean(), "target_q": target.mean()}


def update_actor_and_temperature(agent: SAC, obs: jnp.ndarray, key: jax.Array):
    """Actor: min alpha log pi - Q(s, pi(s)); temperature: match entropy to the target."""
    alpha = agent.alpha

    def actor_loss_fn(params):
        action, logp = sample_policy(agent, params, obs, key)
        q = q_for_actor(agent.critic_net.apply(agent.critic.params, obs, action))
        return (alpha * logp - q).mean(), logp

    (actor_loss, logp), grads = jax.value_and_grad(actor_loss_fn, has_aux=True)(agent.actor.params)
    actor = agent.actor.apply_gradients(grads)

    entropy_gap = jax.lax.stop_gradient(logp + agent.target_entropy).mean()
    temp_loss_fn = lambda log_alpha: -log_alpha * entropy_gap  # noqa: E731
    temp_loss, temp_grad = jax.value_and_grad(temp_loss_fn)(agent.temperature.params)
    temperature = agent.temperature.apply_gradients(temp_grad)
    info = {
        "actor_loss": actor_loss,
        "entropy": -logp.mean(),
        "temperature": alpha,
        "temperature_loss": temp_loss,
    }
    return agent.replace(actor=actor, temperature=temperature), info


def update_target(agent: SAC) -> SAC:
    return agent.replace(target_critic=polyak(agent.target_critic, agent.critic.params, agent.tau))


def sample_policy(agent: SAC, actor_params, obs: jnp.ndarray, key: jax.Array):
    """Reparameterised tanh-Gaussian sample and its log-probability, obs already normalised."""
    mean, log_std = agent.actor_net.apply(actor_params, obs)
    return tanh_gaussian_sample(key, mean, log_std)


def pessimistic_q(qs: jnp.ndarray, key: jax.Array) -> jnp.ndarray:
    """Min over the critics (twin Q); with a larger ensemble, min over a random pair (RLPD)."""
    if qs.shape[0] > 2:
        pair = jax.random.choice(key, qs.shape[0], (2,), replace=False)
        qs = qs[pair]
    return qs.min(0)


def q_for_actor(qs: jnp.ndarray) -> jnp.ndarray:
    """The actor maximises min Q for twin critics, the ensemble mean for larger ones (RLPD)."""
    return qs.min(0) if qs.shape[0] == 2 else qs.mean(0)

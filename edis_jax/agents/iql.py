"""Implicit Q-learning (Kostrikov et al. 2022) as a pytree, following CORL's IQL.

Twin Q, a value net fitted by expectile regression to min Q_target, an advantage-weighted
Gaussian actor (exp-advantage clipped at max_exp_adv), Polyak target Q, and CORL's cosine
annealing of the actor learning rate.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from edis_jax.agents.learner import Agent, Learner, polyak, scalar
from edis_jax.config.agent_configs import IQLConfig
from edis_jax.data.normalizer import Normalizer
from edis_jax.data.transition import Transition
from edis_jax.nets import CriticEnsemble, GaussianActor, ValueNet, gaussian_log_prob


class IQL(Agent):
    actor: Learner
    critic: Learner
    value: Learner
    target_critic: Any
    obs_norm: Normalizer
    discount: jnp.ndarray
    tau: jnp.ndarray
    expectile: jnp.ndarray
    beta: jnp.ndarray
    max_exp_adv: jnp.ndarray
    reward_scale: jnp.ndarray  # reward' = reward * reward_scale + reward_bias
    reward_bias: jnp.ndarray
    actor_decay_steps: jnp.ndarray  # 0 = constant actor lr
    step: jnp.ndarray  # updates done (drives the actor lr schedule)
    actor_net: GaussianActor = struct.field(pytree_node=False)
    critic_net: CriticEnsemble = struct.field(pytree_node=False)
    value_net: ValueNet = struct.field(pytree_node=False)

    NAME, CONFIG = "iql", IQLConfig

    @classmethod
    def build(
        cls, key, obs_dim: int, act_dim: int, config: IQLConfig, obs_norm: Normalizer,
        reward_scale: float, decay_steps: int = 0,
    ) -> IQL:  # fmt: skip
        """`create`'s work. decay_steps: period of the actor's cosine lr annealing (the driver
        passes the offline steps); 0, or config.actor_cosine_decay False, keeps the actor lr
        constant."""
        if decay_steps < 0:
            raise ValueError(f"iql.create: decay_steps must be >= 0, got {decay_steps}")
        # Four keys, the last unused, so that the networks start as they always have.
        actor_key, critic_key, value_key, _ = jax.random.split(key, 4)
        hidden = tuple(config.hidden_dims)
        actor_net = GaussianActor(hidden, act_dim)
        critic_net = CriticEnsemble(hidden, num=2)
        value_net = ValueNet(hidden)
        obs, action = jnp.zeros((1, obs_dim)), jnp.zeros((1, act_dim))
        critic_params = critic_net.init(critic_key, obs, action)
        return cls(
            actor=Learner.create(actor_net.init(actor_key, obs), config.actor_lr),
            critic=Learner.create(critic_params, config.critic_lr),
            value=Learner.create(value_net.init(value_key, obs), config.value_lr),
            target_critic=jax.tree.map(jnp.copy, critic_params),  # own buffers (donation-safe)
            obs_norm=obs_norm,
            discount=scalar(config.discount),
            tau=scalar(config.tau),
            expectile=scalar(config.expectile),
            beta=scalar(config.beta),
            max_exp_adv=scalar(config.max_exp_adv),
            reward_scale=scalar(reward_scale * config.reward_scale),
            reward_bias=scalar(config.reward_bias),
            actor_decay_steps=scalar(decay_steps if config.actor_cosine_decay else 0),
            step=scalar(0),
            actor_net=actor_net,
            critic_net=critic_net,
            value_net=value_net,
        )

    def update(self, batch: Transition) -> tuple[IQL, dict[str, jnp.ndarray]]:
        """CORL's order: V by expectile regression, Q towards r + gamma V(s'), then the AWR
        actor, with V(s') and the advantages taken from the value net before its step."""
        norm = self.obs_norm.normalize
        obs, next_obs = norm(batch.obs), norm(batch.next_obs)
        reward = batch.reward * self.reward_scale + self.reward_bias
        target_q = self.critic_net.apply(self.target_critic, obs, batch.action).min(0)
        next_v = self.value_net.apply(self.value.params, next_obs)

        def value_loss_fn(params):
            v = self.value_net.apply(params, obs)
            return expectile_loss(target_q - v, self.expectile), v

        (value_loss, v), value_grads = jax.value_and_grad(value_loss_fn, has_aux=True)(
            self.value.params
        )
        advantage = target_q - v

        q_target = reward + self.discount * (1.0 - batch.terminal) * next_v

        def critic_loss_fn(params):
            qs = self.critic_net.apply(params, obs, batch.action)
            return ((qs - q_target) ** 2).mean(), qs  # mean over the two critics (CORL)

        (critic_loss, qs), critic_grads = jax.value_and_grad(critic_loss_fn, has_aux=True)(
            self.critic.params
        )

        weights = jnp.minimum(jnp.exp(self.beta * advantage), self.max_exp_adv)

        def actor_loss_fn(params):
            mean, log_std = self.actor_net.apply(params, obs)
            return -(weights * gaussian_log_prob(mean, log_std, batch.action)).mean()

        actor_loss, actor_grads = jax.value_and_grad(actor_loss_fn)(self.actor.params)
        lr_scale = actor_lr_scale(self.step, self.actor_decay_steps)

        critic = self.critic.apply_gradients(critic_grads)
        agent = self.replace(
            value=self.value.apply_gradients(value_grads),
            critic=critic,
            actor=self.actor.apply_gradients(actor_grads, lr_scale),
            target_critic=polyak(self.target_critic, critic.params, self.tau),
            step=self.step + 1.0,
        )
        info = {
            "value_loss": value_loss,
            "critic_loss": critic_loss,
            "actor_loss": actor_loss,
            "q_mean": qs.mean(),
            "v_mean": v.mean(),
            "advantage": advantage.mean(),
            "awr_weight": weights.mean(),
            "actor_lr": agent.actor.lr * lr_scale,
        }
        return agent, info

    def act(self, key: jax.Array, obs: jnp.ndarray, deterministic: bool = False) -> jnp.ndarray:
        """The Gaussian's mean, or a sample clipped to [-1, 1] (CORL)."""
        mean, log_std = self.actor_net.apply(self.actor.params, self.obs_norm.normalize(obs))
        if deterministic:
            return mean
        sample = mean + jnp.exp(log_std) * jax.random.normal(key, mean.shape)
        return jnp.clip(sample, -1.0, 1.0)

    def log_prob(self, obs: jnp.ndarray, action: jnp.ndarray) -> jnp.ndarray:
        """Log-density of the (unclipped) Gaussian policy, the quantity IQL's actor maximises."""
        mean, log_std = self.actor_net.apply(self.actor.params, self.obs_norm.normalize(obs))
        return gaussian_log_prob(mean, log_std, action)

    def to_online(self) -> IQL:
        """Unchanged: CORL's fine-tuning keeps stepping the same actor lr schedule online."""
        return self


# ---------------------------------------------------------------------------------- helpers


def expectile_loss(diff: jnp.ndarray, expectile: jnp.ndarray) -> jnp.ndarray:
    """mean |tau - 1(u < 0)| u^2: the asymmetric L2 whose minimiser is the tau-expectile."""
    weight = jnp.where(diff < 0, 1.0 - expectile, expectile)
    return (weight * diff**2).mean()


def actor_lr_scale(step: jnp.ndarray, decay_steps: jnp.ndarray) -> jnp.ndarray:
    """PyTorch's CosineAnnealingLR(T_max=decay_steps, eta_min=0) factor, as CORL uses it:
    (1 + cos(pi step / T_max)) / 2. It reaches 0 at T_max (the end of the offline phase) and,
    as in CORL's fine-tuning script, keeps following the cosine afterwards, so the online actor
    lr rises again from 0. decay_steps = 0 means a constant lr."""
    safe = jnp.maximum(decay_steps, 1.0)
    cosine = 0.5 * (1.0 + jnp.cos(math.pi * step / safe))
    return jnp.where(decay_steps > 0, cosine, 1.0)

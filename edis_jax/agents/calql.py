"""Cal-QL (Nakamoto et al. 2023) as a pytree: SAC plus the CQL regulariser (Kumar et al. 2020)
whose policy-action Q-values are lower-bounded by the Monte-Carlo return-to-go.

Follows CORL's cal_ql.py: the importance-sampled logsumexp over n uniform actions and n policy
actions at s and at s' (all evaluated at s), the bound applied to both policy-action sets, and
alpha, the calibration switch and the max backup as leaves with offline and online values.
Options of the published Cal-QL(-EDIS) configs: the CQL gap clipped to [min, max], and the
Lagrange-tuned alpha' that holds the gap at a target. The actor, temperature and target updates
are SAC's (sac.py).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import struct

from edis_jax.agents import sac
from edis_jax.agents.learner import Agent, Learner, scalar
from edis_jax.config.agent_configs import CalQLConfig
from edis_jax.data.normalizer import Normalizer
from edis_jax.data.transition import Transition
from edis_jax.nets import tanh_gaussian_sample


class CalQL(Agent):
    sac: sac.SAC  # actor, critics, temperature, targets, normaliser, rng, SAC numbers
    cql_alpha: jnp.ndarray  # in use now
    cql_alpha_online: jnp.ndarray
    cql_temperature: jnp.ndarray
    calibrate: jnp.ndarray  # 1.0 = bound policy Q-values by the MC return, 0.0 = plain CQL
    calibrate_online: jnp.ndarray
    max_backup: jnp.ndarray  # 1.0 = back up the max over n policy actions at s' (CQL option)
    max_backup_online: jnp.ndarray
    cql_clip_min: jnp.ndarray  # the CQL gap is clipped to [min, max] (default -inf, inf)
    cql_clip_max: jnp.ndarray
    cql_target_gap: jnp.ndarray  # Lagrange: the gap alpha' holds
    alpha_prime: Learner  # params = log alpha' (Lagrange); unused without it
    cql_n_actions: int = struct.field(pytree_node=False)
    cql_lagrange: bool = struct.field(pytree_node=False, default=False)

    NAME, CONFIG = "calql", CalQLConfig

    @classmethod
    def build(
        cls, key, obs_dim: int, act_dim: int, config: CalQLConfig, obs_norm: Normalizer,
        reward_scale: float,
    ) -> CalQL:  # fmt: skip
        """`create`'s work: SAC's pieces, then the CQL and calibration numbers."""
        return cls(
            sac=sac.SAC.build(key, obs_dim, act_dim, config, obs_norm, reward_scale),
            cql_alpha=scalar(config.cql_alpha),
            cql_alpha_online=scalar(config.cql_alpha_online),
            cql_temperature=scalar(config.cql_temperature),
            calibrate=scalar(config.calibrate),
            calibrate_online=scalar(config.calibrate_online),
            max_backup=scalar(config.max_target_backup),
            max_backup_online=scalar(config.max_target_backup_online),
            cql_clip_min=scalar(_or(config.cql_clip_diff_min, -math.inf)),
            cql_clip_max=scalar(_or(config.cql_clip_diff_max, math.inf)),
            cql_target_gap=scalar(config.cql_target_action_gap),
            # log alpha' starts at 1 with the critic's lr (published cal_ql_edis.py).
            alpha_prime=Learner.create(scalar(1.0), config.critic_lr),
            cql_n_actions=config.cql_n_actions,
            cql_lagrange=config.cql_lagrange,
        )

    def update(self, batch: Transition) -> tuple[CalQL, dict[str, jnp.ndarray]]:
        """One calibrated-CQL critic step, then SAC's actor, temperature and target steps."""
        learner = self.sac
        rng, critic_key, actor_key = jax.random.split(learner.rng, 3)
        learner = learner.replace(rng=rng)
        batch = sac.prepare_batch(learner, batch)
        agent = self.replace(sac=learner)

        (loss, info), grads = jax.value_and_grad(critic_loss, argnums=1, has_aux=True)(
            agent, learner.critic.params, batch, critic_key
        )
        learner = learner.replace(critic=learner.critic.apply_gradients(grads))
        learner, actor_info = sac.update_actor_and_temperature(learner, batch.obs, actor_key)
        if agent.cql_lagrange:
            agent = agent.replace(alpha_prime=lagrange_step(agent, info["cql_gap"]))
        return agent.replace(sac=sac.update_target(learner)), {**info, **actor_info}

    def act(self, key: jax.Array, obs: jnp.ndarray, deterministic: bool = False) -> jnp.ndarray:
        return self.sac.act(key, obs, deterministic)

    def log_prob(self, obs: jnp.ndarray, action: jnp.ndarray) -> jnp.ndarray:
        return self.sac.log_prob(obs, action)

    def to_online(self) -> CalQL:
        """Switch alpha, calibration and max backup to their online values (same program)."""
        return self.replace(
            cql_alpha=self.cql_alpha_online,
            calibrate=self.calibrate_online,
            max_backup=self.max_backup_online,
        )


# ---------------------------------------------------------------------------------- the loss


def critic_loss(agent: CalQL, critic_params, batch: Transition, key: jax.Array):
    """TD loss + alpha * CQL gap, summed over the critics, on a prepared batch.

    The CQL gap is logsumexp over importance-weighted Q(s, a_i) (a_i: n uniform actions, n
    policy actions at s', n at s) minus Q(s, a_data); the policy-action Q-values are first
    raised to the MC return-to-go where calibration is on.
    """
    learner = agent.sac
    n = agent.cql_n_actions
    act_dim = batch.action.shape[-1]
    next_key, current_key, random_key, subset_key = jax.random.split(key, 4)
    next_actions, next_logp = _policy_samples(learner, batch.next_obs, n, next_key)
    current_actions, current_logp = _policy_samples(learner, batch.obs, n, current_key)
    random_actions = jax.random.uniform(random_key, current_actions.shape, minval=-1.0, maxval=1.0)
    td_target = _td_target(agent, batch, next_actions, next_logp, subset_key)

    # One critic call on the data action and the 3n sampled actions, all at s.
    actions = jnp.concatenate(
        [batch.action[None], random_actions, next_actions, current_actions], axis=0
    )
    obs = jnp.broadcast_to(batch.obs, (*actions.shape[:-1], batch.obs.shape[-1]))
    qs = learner.critic_net.apply(critic_params, obs, actions)  # (critics, 1 + 3n, batch)
    q_data = qs[:, 0]
    q_random, q_next, q_current = qs[:, 1 : 1 + n], qs[:, 1 + n : 1 + 2 * n], qs[:, 1 + 2 * n :]
    q_next, _ = calibration_bound(q_next, batch.mc_return, agent.calibrate)
    q_current, below = calibration_bound(q_current, batch.mc_return, agent.calibrate)

    # Importance weights: uniform density 0.5^act_dim on [-1, 1]^act_dim, policy log-probs.
    log_uniform = act_dim * math.log(0.5)
    weighted = jnp.concatenate(
        [q_random - log_uniform, q_next - next_logp, q_current - current_logp], axis=1
    )
    temp = agent.cql_temperature
    ood = jax.nn.logsumexp(weighted / temp, axis=1) * temp
    cql_gap = jnp.clip(ood - q_data, agent.cql_clip_min, agent.cql_clip_max).mean(-1)  # per critic
    td_loss = ((q_data - td_target) ** 2).mean(-1).sum()
    if agent.cql_lagrange:
        alpha_prime = jax.lax.stop_gradient(lagrange_alpha(agent.alpha_prime.params))
        loss = td_loss + alpha_prime * agent.cql_alpha * (cql_gap - agent.cql_target_gap).sum()
    else:
        loss = td_loss + agent.cql_alpha * cql_gap.sum()
    info = {
        "critic_loss": loss,
        "td_loss": td_loss,
        "cql_gap": cql_gap.mean(),
        "q_mean": q_data.mean(),
        "target_q": td_target.mean(),
        "calibration_rate": below.mean(),  # CORL's bound rate of the policy actions at s
        "cql_alpha": agent.cql_alpha,
    }
    if agent.cql_lagrange:
        info["alpha_prime"] = alpha_prime
    return loss, info


def lagrange_alpha(log_alpha_prime: jnp.ndarray) -> jnp.ndarray:
    """alpha' = exp(log alpha'), clipped to [0, 1e6] as in the published code."""
    return jnp.clip(jnp.exp(log_alpha_prime), 0.0, 1e6)


def lagrange_step(agent: CalQL, cql_gap: jnp.ndarray) -> Learner:
    """One Adam step on -alpha' * cql_alpha * (gap - target), the gap (mean over the critics)
    held fixed: alpha' rises while the gap is above its target and falls below it (CQL's dual
    step; the published code averages the two critics' terms the same way)."""
    gap = jax.lax.stop_gradient(cql_gap)

    def loss_fn(log_alpha_prime):
        alpha_prime = lagrange_alpha(log_alpha_prime)
        return -alpha_prime * agent.cql_alpha * (gap - agent.cql_target_gap)

    return agent.alpha_prime.apply_gradients(jax.grad(loss_fn)(agent.alpha_prime.params))


def calibration_bound(q: jnp.ndarray, mc_return: jnp.ndarray, enabled: jnp.ndarray):
    """(max(q, mc_return) where enabled else q, q < mc_return): the bound is active exactly
    where Q is below the return-to-go. mc_return broadcasts over q's trailing batch axis."""
    below = q < mc_return
    return jnp.where(below & (enabled > 0.5), mc_return, q), below


# ---------------------------------------------------------------------------------- helpers


def _td_target(agent: CalQL, batch: Transition, next_actions, next_logp, key) -> jnp.ndarray:
    """r + gamma (1 - terminal) Q'(s', a'), a' the first policy sample, or with max backup the
    best of the n samples (with its log-prob). Both come from the same n target evaluations, so
    the choice is a leaf."""
    learner = agent.sac
    next_obs = jnp.broadcast_to(batch.next_obs, (*next_actions.shape[:-1], batch.obs.shape[-1]))
    next_q = sac.pessimistic_q(
        learner.critic_net.apply(learner.target_critic, next_obs, next_actions), key
    )  # (n, batch)
    best = jnp.argmax(next_q, axis=0)
    pick = lambda x: jnp.take_along_axis(x, best[None], axis=0)[0]  # noqa: E731
    use_max = agent.max_backup > 0.5
    q = jnp.where(use_max, pick(next_q), next_q[0])
    if learner.backup_entropy:
        q = q - learner.alpha * jnp.where(use_max, pick(next_logp), next_logp[0])
    target = batch.reward + learner.discount * (1.0 - batch.terminal) * q
    return jax.lax.stop_gradient(target)


def _or(value, default):
    return default if value is None else value


def _policy_samples(learner: sac.SAC, obs: jnp.ndarray, n: int, key: jax.Array):
    """n actions per state and their log-probs, (n, batch, act_dim) and (n, batch); one actor
    forward pass, n noise draws. No gradient flows to the actor (CQL detaches them)."""
    mean, log_std = learner.actor_net.apply(learner.actor.params, obs)
    mean, log_std = (jnp.broadcast_to(x, (n, *x.shape)) for x in (mean, log_std))
    actions, logp = tanh_gaussian_sample(key, mean, log_std)
    return jax.lax.stop_gradient(actions), jax.lax.stop_gradient(logp)

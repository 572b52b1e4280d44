"""PyTorch eager reference agents in CORL's structure (IQL, SAC, Cal-QL), for timing.

Written for this benchmark after CORL's single-file implementations (facts, not code): one
`train(batch)` per update that runs each loss, steps each optimiser, Polyak-updates targets
parameter by parameter, and logs every scalar with `.item()`; batches sampled from a tensor
replay buffer with numpy indices. Network sizes come from the same configs the JAX agents use
(CORL's Cal-QL actor has three hidden layers; here it has the config's, as the JAX one does).
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Normal, TanhTransform, TransformedDistribution

from edis_jax.config.agent_configs import CalQLConfig, IQLConfig, SACConfig

LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0


def mlp(sizes, layer_norm: bool = False) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=False)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            if layer_norm:
                layers.append(nn.LayerNorm(b))
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def soft_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    for tp, sp in zip(target.parameters(), source.parameters(), strict=True):
        tp.data.copy_((1 - tau) * tp.data + tau * sp.data)


class ReplayBuffer:
    """Tensors of fixed capacity, sampled with numpy indices (CORL)."""

    def __init__(self, obs_dim: int, act_dim: int, capacity: int):
        z = lambda *shape: torch.zeros((capacity, *shape))  # noqa: E731
        self.obs, self.act, self.rew = z(obs_dim), z(act_dim), z(1)
        self.next_obs, self.done, self.mc = z(obs_dim), z(1), z(1)
        self.capacity, self.ptr, self.size = capacity, 0, 0

    def fill_random(self, rng: np.random.Generator) -> ReplayBuffer:
        for t in (self.obs, self.next_obs, self.rew, self.mc):
            t.copy_(torch.from_numpy(rng.standard_normal(t.shape, dtype=np.float32)))
        self.act.copy_(torch.from_numpy(rng.uniform(-1, 1, self.act.shape).astype(np.float32)))
        self.size = self.capacity
        return self

    def add(self, obs, act, rew, next_obs, done) -> None:
        i = self.ptr
        self.obs[i] = torch.as_tensor(obs, dtype=torch.float32)
        self.act[i] = torch.as_tensor(act, dtype=torch.float32)
        self.rew[i] = float(rew)
        self.next_obs[i] = torch.as_tensor(next_obs, dtype=torch.float32)
        self.done[i] = float(done)
        self.ptr = (self.ptr + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def sample(self, batch_size: int):
        idx = np.random.randint(0, self.size, size=batch_size)
        return (
            self.obs[idx],
            self.act[idx],
            self.rew[idx],
            self.next_obs[idx],
            self.done[idx],
            self.mc[idx],
        )


# ------------------------------------------------------------------------------------ IQL


class GaussianPolicy(nn.Module):
    """tanh-bounded mean, state-independent log-std (CORL IQL)."""

    def __init__(self, obs_dim: int, act_dim: int, hidden):
        super().__init__()
        self.net = mlp((obs_dim, *hidden, act_dim))
        self.log_std = nn.Parameter(torch.zeros(act_dim))

    def forward(self, obs: torch.Tensor) -> torch.distributions.Normal:
        mean = torch.tanh(self.net(obs))
        std = torch.exp(self.log_std.clamp(LOG_STD_MIN, LOG_STD_MAX))
        return torch.distributions.Normal(mean, std)

    @torch.no_grad()
    def act(self, obs: np.ndarray) -> np.ndarray:
        obs = torch.tensor(obs.reshape(1, -1), dtype=torch.float32)
        return self(obs).sample().clamp(-1, 1).cpu().numpy().flatten()


class TwinQ(nn.Module):
    def __init__(self, obs_dim: int, act_dim: int, hidden):
        super().__init__()
        self.q1 = mlp((obs_dim + act_dim, *hidden, 1))
        self.q2 = mlp((obs_dim + act_dim, *hidden, 1))

    def both(self, obs, act):
        x = torch.cat([obs, act], dim=-1)
        return self.q1(x).squeeze(-1), self.q2(x).squeeze(-1)

    def forward(self, obs, act):
        return torch.min(*self.both(obs, act))


class IQL:
    """Implicit Q-learning (Kostrikov et al. 2022) in CORL's update order: V, Q, actor."""

    def __init__(self, obs_dim: int, act_dim: int, cfg: IQLConfig, decay_steps: int = 1_000_000):
        h = cfg.hidden_dims
        self.cfg = cfg
        self.qf = TwinQ(obs_dim, act_dim, h)
        self.q_target = copy.deepcopy(self.qf).requires_grad_(False)
        self.vf = mlp((obs_dim, *h, 1))
        self.actor = GaussianPolicy(obs_dim, act_dim, h)
        self.q_opt = torch.optim.Adam(self.qf.parameters(), lr=cfg.critic_lr)
        self.v_opt = torch.optim.Adam(self.vf.parameters(), lr=cfg.value_lr)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=cfg.actor_lr)
        self.actor_sched = torch.optim.lr_scheduler.CosineAnnealingLR(self.actor_opt, decay_steps)

    def train(self, batch) -> dict:
        obs, act, rew, next_obs, done, _ = batch
        cfg, log = self.cfg, {}
        with torch.no_grad():
            next_v = self.vf(next_obs).squeeze(-1)
            target_q = self.q_target(obs, act)
        # value: expectile regression towards the target Q
        adv = target_q - self.vf(obs).squeeze(-1)
        weight = torch.abs(cfg.expectile - (adv < 0).float())
        v_loss = (weight * adv**2).mean()
        log["value_loss"] = v_loss.item()
        self.v_opt.zero_grad(set_to_none=True)
        v_loss.backward()
        self.v_opt.step()
        # Q: TD towards r + gamma V(s')
        targets = rew.squeeze(-1) + (1 - done.squeeze(-1)) * cfg.discount * next_v
        q1, q2 = self.qf.both(obs, act)
        q_loss = (F.mse_loss(q1, targets) + F.mse_loss(q2, targets)) / 2
        log["q_loss"] = q_loss.item()
        self.q_opt.zero_grad(set_to_none=True)
        q_loss.backward()
        self.q_opt.step()
        soft_update(self.q_target, self.qf, cfg.tau)
        # actor: advantage-weighted regression
        exp_adv = torch.exp(cfg.beta * adv.detach()).clamp(max=cfg.max_exp_adv)
        bc_losses = -self.actor(obs).log_prob(act).sum(-1)
        actor_loss = (exp_adv * bc_losses).mean()
        log["actor_loss"] = actor_loss.item()
        self.actor_opt.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.actor_opt.step()
        self.actor_sched.step()
        return log


# ------------------------------------------------------------------------------------ SAC


class TanhGaussianActor(nn.Module):
    """SAC / Cal-QL policy: a tanh-squashed Gaussian through torch.distributions, as CORL's."""

    def __init__(self, obs_dim: int, act_dim: int, hidden):
        super().__init__()
        self.trunk = mlp((obs_dim, *hidden))
        self.trunk.append(nn.ReLU())
        self.mu = nn.Linear(hidden[-1], act_dim)
        self.log_std = nn.Linear(hidden[-1], act_dim)

    def forward(self, obs: torch.Tensor, deterministic: bool = False):
        h = self.trunk(obs)
        mu, log_std = self.mu(h), self.log_std(h).clamp(LOG_STD_MIN, LOG_STD_MAX)
        dist = TransformedDistribution(Normal(mu, log_std.exp()), TanhTransform(cache_size=1))
        action = torch.tanh(mu) if deterministic else dist.rsample()
        return action, dist.log_prob(action).sum(-1)

    @torch.no_grad()
    def act(self, obs: np.ndarray) -> np.ndarray:
        obs = torch.tensor(obs.reshape(1, -1), dtype=torch.float32)
        return self(obs)[0].cpu().numpy().flatten()


class VectorizedLinear(nn.Module):
    """`num` independent linear layers applied in one batched matmul (CORL SAC-N)."""

    def __init__(self, a: int, b: int, num: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num, a, b))
        self.bias = nn.Parameter(torch.empty(num, 1, b))
        for i in range(num):
            nn.init.kaiming_uniform_(self.weight[i].T, a=math.sqrt(5))
        nn.init.uniform_(self.bias, -1 / math.sqrt(a), 1 / math.sqrt(a))

    def forward(self, x):
        return x @ self.weight + self.bias


class VectorizedCritic(nn.Module):
    def __init__(self, obs_dim: int, act_dim: int, hidden, num: int, layer_norm: bool):
        super().__init__()
        sizes = (obs_dim + act_dim, *hidden, 1)
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=False)):
            layers.append(VectorizedLinear(a, b, num))
            if i < len(sizes) - 2:
                if layer_norm:
                    layers.append(nn.LayerNorm(b))
                layers.append(nn.ReLU())
        self.net, self.num = nn.Sequential(*layers), num

    def forward(self, obs, act):  # (num, batch)
        x = torch.cat([obs, act], dim=-1).unsqueeze(0).repeat_interleave(self.num, dim=0)
        return self.net(x).squeeze(-1)


class SAC:
    """SAC with a vectorised critic ensemble and learned temperature (CORL SAC-N order:
    temperature, actor, critic, targets)."""

    def __init__(self, obs_dim: int, act_dim: int, cfg: SACConfig):
        h = cfg.hidden_dims
        self.cfg = cfg
        self.actor = TanhGaussianActor(obs_dim, act_dim, h)
        self.critic = VectorizedCritic(obs_dim, act_dim, h, cfg.num_qs, cfg.critic_layer_norm)
        self.target_critic = copy.deepcopy(self.critic).requires_grad_(False)
        self.log_alpha = torch.tensor([math.log(cfg.init_temperature)], requires_grad=True)
        self.target_entropy = -float(act_dim)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=cfg.actor_lr)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=cfg.critic_lr)
        self.alpha_opt = torch.optim.Adam([self.log_alpha], lr=cfg.temp_lr)

    def train(self, batch) -> dict:
        obs, act, rew, next_obs, done, _ = batch
        cfg = self.cfg
        # temperature
        with torch.no_grad():
            _, logp = self.actor(obs)
        alpha_loss = (-self.log_alpha * (logp + self.target_entropy)).mean()
        self.alpha_opt.zero_grad(set_to_none=True)
        alpha_loss.backward()
        self.alpha_opt.step()
        alpha = self.log_alpha.exp().detach()
        # actor
        pi, logp = self.actor(obs)
        q_pi = self.critic(obs, pi).min(0).values
        actor_loss = (alpha * logp - q_pi).mean()
        self.actor_opt.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.actor_opt.step()
        # critic
        with torch.no_grad():
            next_a, next_logp = self.actor(next_obs)
            q_next = self.target_critic(next_obs, next_a).min(0).values
            if cfg.backup_entropy:
                q_next = q_next - alpha * next_logp
            target = rew.squeeze(-1) + cfg.discount * (1 - done.squeeze(-1)) * q_next
        q = self.critic(obs, act)
        critic_loss = ((q - target[None]) ** 2).mean(1).sum(0)
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_opt.step()
        with torch.no_grad():
            soft_update(self.target_critic, self.critic, cfg.tau)
        return {
            "alpha_loss": alpha_loss.item(),
            "actor_loss": actor_loss.item(),
            "critic_loss": critic_loss.item(),
            "alpha": alpha.item(),
            "q_mean": q.mean().item(),
            "entropy": -logp.mean().item(),
        }


# --------------------------------------------------------------------------------- Cal-QL


class CalQL:
    """Cal-QL (Nakamoto et al. 2023) in CORL's structure: two critics with separate
    optimisers, CQL's importance-sampled logsumexp over random / current / next policy
    actions, policy-action Q-values lower-bounded by the Monte-Carlo return-to-go."""

    def __init__(self, obs_dim: int, act_dim: int, cfg: CalQLConfig):
        h = cfg.hidden_dims
        self.cfg, self.act_dim = cfg, act_dim
        self.actor = TanhGaussianActor(obs_dim, act_dim, h)
        self.critic_1, self.critic_2 = (
            mlp((obs_dim + act_dim, *h, 1)),
            mlp((obs_dim + act_dim, *h, 1)),
        )
        self.target_1 = copy.deepcopy(self.critic_1).requires_grad_(False)
        self.target_2 = copy.deepcopy(self.critic_2).requires_grad_(False)
        self.log_alpha = torch.tensor([math.log(cfg.init_temperature)], requires_grad=True)
        self.target_entropy = -float(act_dim)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=cfg.actor_lr)
        self.critic_1_opt = torch.optim.Adam(self.critic_1.parameters(), lr=cfg.critic_lr)
        self.critic_2_opt = torch.optim.Adam(self.critic_2.parameters(), lr=cfg.critic_lr)
        self.alpha_opt = torch.optim.Adam([self.log_alpha], lr=cfg.temp_lr)
        self.cql_alpha = cfg.cql_alpha

    @staticmethod
    def _q(net, obs, act):
        """Q for (B, da) or (B, n, da) actions, repeating obs for the latter (CORL)."""
        if act.ndim == 3:
            n = act.shape[1]
            obs = obs.unsqueeze(1).repeat_interleave(n, dim=1)
            return net(torch.cat([obs, act], -1)).squeeze(-1)
        return net(torch.cat([obs, act], -1)).squeeze(-1)

    def _policy_repeat(self, obs, n):
        return self.actor(obs.unsqueeze(1).repeat_interleave(n, dim=1))

    def train(self, batch) -> dict:
        obs, act, rew, next_obs, done, mc = batch
        cfg, log = self.cfg, {}
        new_a, log_pi = self.actor(obs)
        alpha_loss = -(self.log_alpha * (log_pi + self.target_entropy).detach()).mean()
        alpha = self.log_alpha.exp()
        q_new = torch.min(self._q(self.critic_1, obs, new_a), self._q(self.critic_2, obs, new_a))
        policy_loss = (alpha.detach() * log_pi - q_new).mean()
        # critic: TD
        q1, q2 = self._q(self.critic_1, obs, act), self._q(self.critic_2, obs, act)
        with torch.no_grad():
            next_a, next_logp = self.actor(next_obs)
            target_q = torch.min(
                self._q(self.target_1, next_obs, next_a), self._q(self.target_2, next_obs, next_a)
            )
            if cfg.backup_entropy:
                target_q = target_q - alpha * next_logp
            td = rew.squeeze(-1) + (1 - done.squeeze(-1)) * cfg.discount * target_q
        qf1_loss, qf2_loss = F.mse_loss(q1, td), F.mse_loss(q2, td)
        # CQL regulariser
        b, n = obs.shape[0], cfg.cql_n_actions
        rand_a = act.new_empty((b, n, self.act_dim)).uniform_(-1, 1)
        with torch.no_grad():
            cur_a, cur_logp = self._policy_repeat(obs, n)
            nxt_a, nxt_logp = self._policy_repeat(next_obs, n)
        lower = mc.reshape(-1, 1).repeat(1, n)
        cql_losses = []
        for net, q_data in ((self.critic_1, q1), (self.critic_2, q2)):
            q_rand = self._q(net, obs, rand_a)
            q_cur = self._q(net, obs, cur_a)
            q_nxt = self._q(net, obs, nxt_a)
            log[f"bound_rate_{len(cql_losses)}"] = (q_cur < lower).float().mean().item()
            if cfg.calibrate:
                q_cur, q_nxt = torch.maximum(q_cur, lower), torch.maximum(q_nxt, lower)
            random_density = math.log(0.5**self.act_dim)
            cat = torch.cat([q_rand - random_density, q_nxt - nxt_logp, q_cur - cur_logp], dim=1)
            ood = torch.logsumexp(cat / cfg.cql_temperature, dim=1) * cfg.cql_temperature
            cql_losses.append(self.cql_alpha * (ood - q_data).mean())
            log[f"cql_q_rand_{len(cql_losses)}"] = q_rand.mean().item()
            log[f"cql_q_current_{len(cql_losses)}"] = q_cur.mean().item()
            log[f"cql_q_next_{len(cql_losses)}"] = q_nxt.mean().item()
        qf_loss = qf1_loss + qf2_loss + cql_losses[0] + cql_losses[1]
        log.update(
            qf1_loss=qf1_loss.item(),
            qf2_loss=qf2_loss.item(),
            alpha=alpha.item(),
            average_qf1=q1.mean().item(),
            average_qf2=q2.mean().item(),
            average_target_q=target_q.mean().item(),
            policy_loss=policy_loss.item(),
            alpha_loss=alpha_loss.item(),
            log_pi=log_pi.mean().item(),
        )
        self.alpha_opt.zero_grad(set_to_none=True)
        alpha_loss.backward()
        self.alpha_opt.step()
        self.actor_opt.zero_grad(set_to_none=True)
        policy_loss.backward()
        self.actor_opt.step()
        self.critic_1_opt.zero_grad(set_to_none=True)
        self.critic_2_opt.zero_grad(set_to_none=True)
        qf_loss.backward()
        self.critic_1_opt.step()
        self.critic_2_opt.step()
        soft_update(self.target_1, self.critic_1, cfg.tau)
        soft_update(self.target_2, self.critic_2, cfg.tau)
        return log


AGENTS = {"iql": IQL, "sac": SAC, "calql": CalQL}

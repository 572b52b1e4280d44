"""The agents' configurations: IQL, SAC and Cal-QL (validated on construction). Defaults are the
published values (CORL, Cal-QL, the EDIS code), cited where they are set."""

from __future__ import annotations

from dataclasses import dataclass

from edis_jax.config.validation import check, layer_widths, non_negative, positive, unit_interval


@dataclass(frozen=True)
class IQLConfig:
    """IQL (Kostrikov et al. 2022), CORL's defaults for MuJoCo."""

    hidden_dims: tuple[int, ...] = (256, 256)
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    value_lr: float = 3e-4
    discount: float = 0.99
    tau: float = 0.005  # Polyak rate of the target Q
    expectile: float = 0.7
    beta: float = 3.0  # inverse temperature of advantage weighting
    max_exp_adv: float = 100.0  # exp-advantage clip (IQL paper)
    # Cosine decay of the actor lr over the offline phase (CORL). The driver sets the horizon.
    actor_cosine_decay: bool = True
    # Observations and rewards as the agent sees them (every agent has these four): obs
    # standardised by the offline data's mean and std; reward' = reward * H / (max - min
    # episode return) [normalize_reward] * reward_scale + reward_bias.
    normalize_obs: bool = True
    normalize_reward: bool = True  # IQL paper and CORL: returns span about H = episode length
    reward_scale: float = 1.0
    reward_bias: float = 0.0

    def __post_init__(self):
        layer_widths(self.hidden_dims, "--iql.hidden-dims")
        positive(self, "actor_lr", "critic_lr", "value_lr", "beta", "max_exp_adv")
        positive(self, "reward_scale")
        unit_interval(self, "discount", "tau", "expectile")


@dataclass(frozen=True)
class SACConfig:
    """SAC (Haarnoja et al. 2018) with RLPD-style options (ensemble size, LayerNorm critic)."""

    hidden_dims: tuple[int, ...] = (256, 256)
    actor_lr: float = 3e-4
    # CleanRL's sac_continuous_action q_lr. Hopper-v5 from scratch, 2 seeds: 3e-4 reached a best
    # evaluation of 990 / 578 in 100k steps, 1e-3 reached 1000 by 50k / 70k steps.
    critic_lr: float = 1e-3
    # (Each field below has its own comment: tyro gives an uncommented field the comment above.)
    temp_lr: float = 3e-4  # lr of the learned temperature
    discount: float = 0.99  # discount factor
    tau: float = 0.005  # Polyak rate of the target Qs
    num_qs: int = 2  # critics in the ensemble (the target takes the min over them)
    critic_layer_norm: bool = False  # LayerNorm in the critics (RLPD)
    init_temperature: float = 1.0  # initial entropy temperature
    backup_entropy: bool = True  # back up the entropy term in the target (SAC)
    # Steps of uniform random actions before the policy acts, when training from scratch.
    start_steps: int = 5000
    critic_hidden_dims: tuple[int, ...] | None = None  # None: hidden_dims
    normalize_obs: bool = True  # as IQLConfig's four fields
    normalize_reward: bool = False
    reward_scale: float = 1.0
    reward_bias: float = 0.0

    def __post_init__(self):
        layer_widths(self.hidden_dims, "--sac.hidden-dims")
        if self.critic_hidden_dims is not None:
            layer_widths(self.critic_hidden_dims, "--sac.critic-hidden-dims")
        positive(self, "actor_lr", "critic_lr", "temp_lr", "init_temperature", "reward_scale")
        unit_interval(self, "discount", "tau")
        check(self.num_qs >= 2, f"--sac.num-qs must be >= 2, got {self.num_qs}")
        non_negative(self, "start_steps")


@dataclass(frozen=True)
class CalQLConfig:
    """Cal-QL (Nakamoto et al. 2023): SAC + CQL regulariser calibrated by Monte-Carlo returns.

    Defaults follow CORL's cal_ql.py for MuJoCo where the paper is silent.
    """

    hidden_dims: tuple[int, ...] = (256, 256)
    actor_lr: float = 1e-4  # Cal-QL paper, policy lr
    critic_lr: float = 3e-4
    temp_lr: float = 3e-4
    discount: float = 0.99
    tau: float = 0.005
    num_qs: int = 2
    critic_layer_norm: bool = False
    init_temperature: float = 1.0
    backup_entropy: bool = False  # CQL/Cal-QL back up without the entropy term
    cql_alpha: float = 5.0  # offline phase (Cal-QL paper)
    cql_alpha_online: float = 5.0  # online phase; a leaf, switched without recompiling
    cql_n_actions: int = 10  # uniform and policy samples for the importance-sampled logsumexp
    cql_temperature: float = 1.0
    max_target_backup: bool = False
    max_target_backup_online: bool = False  # online phase; a leaf, switched without recompiling
    calibrate: bool = True  # lower-bound policy Q by the MC return-to-go (the "Cal" in Cal-QL)
    # CORL's fine-tuning turns calibration off online, where the MC return of new data is unknown.
    # On, rows of a running episode and synthetic rows bound Q by 0: an overestimate where
    # returns are negative (AntMaze's r - 1, Pendulum), so there it is no lower bound.
    calibrate_online: bool = False
    # Options of the published Cal-QL(-EDIS) configs (published_configs.md); the defaults leave
    # the loss as above. The CQL gap ood - Q(s, a_data) is clipped to [min, max] (None: no clip).
    cql_clip_diff_min: float | None = None
    cql_clip_diff_max: float | None = None
    # Lagrange-tuned alpha (CQL): the penalty is alpha' * cql_alpha * (gap - target_action_gap),
    # alpha' = exp(log alpha') learned to keep the gap at the target (rises while it is above).
    cql_lagrange: bool = False
    cql_target_action_gap: float = 10.0  # published Cal-QL-EDIS default
    critic_hidden_dims: tuple[int, ...] | None = None  # None: hidden_dims (the critic's depth)
    # Sparse rewards (published get_return_to_go): an episode whose last reward equals the
    # reference minimum (AntMaze: the goal never reached) gets mc_return r' / (1 - discount) at
    # every step, the return of failing forever, instead of its discounted sum.
    sparse_reward: bool = False
    normalize_obs: bool = True  # as IQLConfig's four fields
    normalize_reward: bool = False
    reward_scale: float = 1.0
    reward_bias: float = 0.0

    def __post_init__(self):
        layer_widths(self.hidden_dims, "--calql.hidden-dims")
        if self.critic_hidden_dims is not None:
            layer_widths(self.critic_hidden_dims, "--calql.critic-hidden-dims")
        positive(self, "actor_lr", "critic_lr", "temp_lr", "init_temperature", "cql_temperature")
        positive(self, "reward_scale")
        if self.cql_clip_diff_min is not None and self.cql_clip_diff_max is not None:
            check(
                self.cql_clip_diff_min < self.cql_clip_diff_max,
                f"--calql.cql-clip-diff-min ({self.cql_clip_diff_min}) must be below "
                f"--calql.cql-clip-diff-max ({self.cql_clip_diff_max})",
            )
        non_negative(self, "cql_alpha", "cql_alpha_online")
        unit_interval(self, "discount", "tau")
        check(self.num_qs >= 2, f"--calql.num-qs must be >= 2, got {self.num_qs}")
        positive(self, "cql_n_actions")

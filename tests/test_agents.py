"""Agents IQL, SAC, Cal-QL: probe environments, seed handling, no retracing, Cal-QL's bound."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from edis_jax import agents
from edis_jax.agents import calql, iql, sac
from edis_jax.agents.learner import scalar
from edis_jax.config.agent_configs import CalQLConfig, IQLConfig, SACConfig
from edis_jax.data import buffer
from edis_jax.data.normalizer import Normalizer
from edis_jax.data.transition import Transition

ALGOS = ("iql", "sac", "calql")
OBS_DIM, ACT_DIM = 2, 1


def tiny_config(algo: str, **changes):
    # Every test uses these static choices (sizes, backup_entropy), so the compiled update
    # programs are shared between tests; only leaves (numbers) differ.
    if algo == "iql":
        return IQLConfig(hidden_dims=(32, 32), **changes)
    if algo == "sac":
        return SACConfig(hidden_dims=(32, 32), backup_entropy=False, **changes)
    return CalQLConfig(hidden_dims=(32, 32), cql_n_actions=4, **changes)


def probe_data(key, reward_fn, terminal: float, mc_return=None, n: int = 512) -> Transition:
    """Random states and uniform actions; reward_fn(action) -> reward."""
    k_obs, k_act, k_next = jax.random.split(key, 3)
    action = jax.random.uniform(k_act, (n, ACT_DIM), minval=-1.0, maxval=1.0)
    reward = reward_fn(action)
    return Transition.from_arrays(
        jax.random.normal(k_obs, (n, OBS_DIM)),
        action,
        reward,
        jax.random.normal(k_next, (n, OBS_DIM)),
        jnp.full((n,), terminal),
        mc_return=reward if mc_return is None else jnp.full((n,), mc_return),
    )


CHUNK, BATCH = 50, 64


def make_agent(algo: str, key, config, obs_norm=None):
    # Eager on purpose: after the first agent, creation reuses the cached op kernels, whereas
    # a jitted create would compile again for every config.
    return agents.create(algo, key, OBS_DIM, ACT_DIM, config, obs_norm=obs_norm)


@jax.jit
def train_chunk(agent, mixture, key):
    return agents.update_chunk(agent, mixture, key, CHUNK, BATCH)


def train(agent, data: Transition, key, num_updates: int):
    mixture = buffer.Mixture.of(buffer.from_transitions(data))
    for i in range(num_updates // CHUNK):
        agent, metrics = train_chunk(agent, mixture, jax.random.fold_in(key, i))
    return agent, metrics


def q_values(algo: str, agent, obs, action) -> jnp.ndarray:
    """min over the critics of Q(s, a), as the agent sees it (normalised obs)."""
    learner = agent.sac if algo == "calql" else agent
    obs = learner.obs_norm.normalize(obs)
    return learner.critic_net.apply(learner.critic.params, obs, action).min(0)


# ------------------------------------------------------------------------ probe environments

# Constant-reward probe: r = 1 everywhere, never terminal, gamma 0.9, so Q = 1 / (1 - 0.9) = 10
# for every (s, a). tau 0.1 and lr 1e-3 make the targets converge in ~2000 updates.
CONSTANT_REWARD = {"discount": 0.9, "tau": 0.1, "critic_lr": 1e-3}


@pytest.mark.parametrize("algo", ALGOS)
def test_constant_reward_gives_q_of_r_over_one_minus_gamma(algo):
    # Measured after 2000 updates (seed 0): IQL 9.91, SAC 9.74, Cal-QL 10.18 (std <= 0.16).
    # Cal-QL gets the exact MC return (10) as its calibration bound; without the bound CQL's
    # regulariser drags Q below 10 (next test). Tolerance 0.6 = 6%.
    changes = dict(CONSTANT_REWARD, value_lr=1e-3) if algo == "iql" else CONSTANT_REWARD
    key = jax.random.PRNGKey(0)
    data = probe_data(key, lambda a: jnp.ones(a.shape[0]), terminal=0.0, mc_return=10.0)
    agent = make_agent(algo, key, tiny_config(algo, **changes))
    agent, _ = train(agent, data, key, 2000)
    q = q_values(algo, agent, data.obs, data.action)
    assert abs(float(q.mean()) - 10.0) < 0.6, float(q.mean())
    assert float(q.std()) < 0.5


def test_calql_without_calibration_underestimates_the_constant_reward_probe():
    # The same probe with the bound switched off: plain CQL (alpha 5) measured 8.63 after 2000
    # updates; with the bound 10.18. The gap shows the calibration doing its job.
    key = jax.random.PRNGKey(0)
    data = probe_data(key, lambda a: jnp.ones(a.shape[0]), terminal=0.0, mc_return=10.0)
    agent = make_agent("calql", key, tiny_config("calql", **CONSTANT_REWARD))
    agent, metrics = train(agent.replace(calibrate=scalar(0.0)), data, key, 2000)
    assert float(q_values("calql", agent, data.obs, data.action).mean()) < 9.3
    assert float(metrics["calibration_rate"]) > 0.9  # its Q-values sit below the true return


@pytest.mark.parametrize("algo", ALGOS)
def test_one_step_bandit_policy_picks_the_better_action(algo):
    # One state, one-step episodes, reward 1 for a > 0 and 0 for a < 0, uniform behaviour
    # actions: the greedy action must land in the better half. Measured after 1000 updates
    # (seeds 1-3): IQL 0.47-0.54, SAC 0.39-0.41, Cal-QL 0.30-0.32 (still rising); threshold
    # 0.15.
    # Cal-QL runs with alpha 1: at alpha 5 CQL's conservatism swamps a reward gap of size 1
    # (Cal-QL's alpha 5 is meant for MuJoCo's returns of hundreds).
    key = jax.random.PRNGKey(1)
    data = probe_data(key, lambda a: (a[:, 0] > 0).astype(jnp.float32), terminal=1.0)
    data = data.replace(obs=jnp.zeros_like(data.obs), next_obs=jnp.zeros_like(data.obs))
    changes = {"actor_lr": 1e-3, **({"cql_alpha": 1.0} if algo == "calql" else {})}
    agent = make_agent(algo, key, tiny_config(algo, **changes))
    agent, _ = train(agent, data, key, 1000)
    greedy = float(agent.act(key, data.obs[0], deterministic=True)[0])
    assert greedy > 0.15, greedy


# --------------------------------------------------------------------- seeds and no retracing


@pytest.mark.parametrize("algo", ALGOS)
def test_seeds_differ_vmap_equals_separate_runs_and_numbers_never_retrace(algo):
    config = tiny_config(algo)
    data = probe_data(jax.random.PRNGKey(2), lambda a: a[:, 0], terminal=0.0)
    mixture = buffer.Mixture.of(buffer.from_transitions(data))
    init_keys = jax.random.split(jax.random.PRNGKey(3), 2)
    chunk_keys = jax.random.split(jax.random.PRNGKey(4), 2)
    traces = 0

    def chunk(agent, mixture, key):
        nonlocal traces
        traces += 1  # runs only while tracing
        return agents.update_chunk(agent, mixture, key, CHUNK, BATCH)

    run_seeds = jax.jit(jax.vmap(chunk))
    stacked = jax.vmap(lambda k: agents.create(algo, k, OBS_DIM, ACT_DIM, config))(init_keys)
    assert_seeds_differ(algo, stacked)
    mixtures = jax.tree.map(lambda x: jnp.stack([x, x]), mixture)
    trained, metrics = run_seeds(stacked, mixtures, chunk_keys)
    assert_seeds_differ(algo, trained)
    assert all(v.shape == (2,) for v in metrics.values())  # the seed axis is kept

    for i in range(2):
        single = make_agent(algo, init_keys[i], config)
        single, _ = train_chunk(single, mixture, chunk_keys[i])
        seed_i = jax.tree.map(lambda x, i=i: x[i], trained)
        for a, b in zip(jax.tree.leaves(seed_i), jax.tree.leaves(single), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)

    # New numbers, even a different one per seed, reuse the compiled program.
    for variant in number_variants(algo, stacked):
        run_seeds(variant, mixtures, chunk_keys)
    assert traces == 1


def number_variants(algo: str, agent) -> list:
    per_seed = lambda a, b: jnp.array([a, b], jnp.float32)  # noqa: E731
    if algo == "iql":
        variants = [
            agent.replace(beta=per_seed(3.0, 10.0), expectile=per_seed(0.7, 0.9)),
            agent.replace(actor=agent.actor.replace(lr=per_seed(1e-4, 1e-5))),
            agent.replace(actor_decay_steps=per_seed(0.0, 1000.0)),
        ]
    elif algo == "sac":
        variants = [
            agent.replace(actor=agent.actor.replace(lr=per_seed(1e-4, 1e-5))),
            agent.replace(temperature=agent.temperature.replace(params=per_seed(-3.0, 0.0))),
            agent.replace(tau=per_seed(0.5, 0.1), discount=per_seed(0.5, 0.9)),
        ]
    else:
        variants = [
            agent.replace(cql_alpha=per_seed(5.0, 1.0)),
            agent.replace(calibrate_online=per_seed(1.0, 0.0)).to_online(),
            agent.replace(max_backup=per_seed(1.0, 0.0)),
            agent.replace(
                sac=agent.sac.replace(critic=agent.sac.critic.replace(lr=per_seed(1.0, 2.0)))
            ),
        ]
    return [*variants, agent.to_online()]


def assert_seeds_differ(algo, stacked):
    learner = stacked.sac if algo == "calql" else stacked
    for params in (learner.actor.params, learner.critic.params):
        leaves = jax.tree_util.tree_leaves_with_path(params)
        kernels = [x for path, x in leaves if "kernel" in jax.tree_util.keystr(path)]
        assert kernels and all(not np.allclose(k[0], k[1]) for k in kernels)


# ---------------------------------------------------------------------------------- Cal-QL


def test_calibration_bound_is_active_exactly_where_q_is_below_the_return():
    q = jnp.array([[-2.0, 0.0, 3.0], [1.0, 5.0, -4.0]])
    mc = jnp.array([1.0, 1.0, 1.0])
    bounded, below = calql.calibration_bound(q, mc, enabled=scalar(1.0))
    np.testing.assert_array_equal(below, np.asarray(q) < 1.0)
    np.testing.assert_array_equal(bounded, np.maximum(np.asarray(q), 1.0))
    off, _ = calql.calibration_bound(q, mc, enabled=scalar(0.0))
    np.testing.assert_array_equal(off, q)


def test_calql_loss_uses_the_bound_only_where_q_is_below_the_return():
    agent = make_agent("calql", jax.random.PRNGKey(7), tiny_config("calql"))
    batch = probe_data(jax.random.PRNGKey(8), lambda a: a[:, 0], terminal=0.0, n=64)
    key = jax.random.PRNGKey(9)

    @jax.jit
    def loss(mc_return, calibrate):
        prepared = sac.prepare_batch(agent.sac, batch.replace(mc_return=mc_return))
        return calql.critic_loss(
            agent.replace(calibrate=scalar(calibrate)),
            agent.sac.critic.params,
            prepared,
            key,
        )

    huge = jnp.full((64,), 1e6)
    plain, _ = loss(jnp.zeros(64), 0.0)
    never, info_never = loss(-huge, 1.0)  # every Q above the return: the bound is inactive
    always, info_always = loss(huge, 1.0)  # every Q below: the bound replaces them all
    half, info_half = loss(jnp.where(jnp.arange(64) < 32, 1e6, -1e6), 1.0)
    assert float(never) == pytest.approx(float(plain), rel=1e-6)
    assert float(always) > float(plain) + 1e5
    assert float(info_never["calibration_rate"]) == 0.0
    assert float(info_always["calibration_rate"]) == 1.0
    assert float(info_half["calibration_rate"]) == 0.5


def test_to_online_switches_calql_alpha_only_as_leaves():
    config = tiny_config("calql", cql_alpha=5.0, cql_alpha_online=1.0, calibrate_online=False)
    agent = calql.CalQL.create(jax.random.PRNGKey(0), OBS_DIM, ACT_DIM, config).to_online()
    assert float(agent.cql_alpha) == 1.0 and float(agent.calibrate) == 0.0


# -------------------------------------------------------------------------------- IQL pieces


def test_iql_actor_lr_follows_corl_cosine_annealing():
    scale = lambda step, horizon: float(iql.actor_lr_scale(step, scalar(horizon)))  # noqa: E731
    assert scale(0.0, 100) == pytest.approx(1.0)
    assert scale(50.0, 100) == pytest.approx(0.5)
    assert scale(100.0, 100) == pytest.approx(0.0, abs=1e-7)
    assert scale(150.0, 100) == pytest.approx(0.5)  # online: rises again, as in CORL
    assert scale(70.0, 0) == 1.0  # no decay


def test_iql_expectile_loss_minimiser_is_the_expectile():
    x = jnp.array([0.0, 1.0])
    grid = jnp.linspace(-0.5, 1.5, 2001)
    losses = jax.vmap(lambda v: iql.expectile_loss(x - v, scalar(0.9)))(grid)
    assert float(grid[jnp.argmin(losses)]) == pytest.approx(0.9, abs=2e-3)


# ------------------------------------------------------------------------------- interface


@pytest.mark.parametrize("algo", ALGOS)
def test_act_log_prob_and_policy_shapes(algo):
    key = jax.random.PRNGKey(10)
    norm = Normalizer(mean=jnp.array([3.0, -1.0]), std=jnp.array([2.0, 0.5]))
    agent = make_agent(algo, key, tiny_config(algo), obs_norm=norm)
    plain = make_agent(algo, key, tiny_config(algo))
    obs = jax.random.normal(key, (5, OBS_DIM)) * 3.0
    for deterministic in (True, False):
        action = agent.act(key, obs, deterministic)
        assert action.shape == (5, ACT_DIM)
        assert np.all(np.abs(np.asarray(action)) <= 1.0)
        # obs_norm is applied inside act: same as the plain agent on normalised obs.
        np.testing.assert_allclose(
            action, plain.act(key, norm.normalize(obs), deterministic), atol=1e-6
        )
    assert agent.act(key, obs[0], True).shape == (ACT_DIM,)
    assert agent.log_prob(obs, agent.act(key, obs, False)).shape == (5,)
    policy = agents.policy(agent)
    drawn = jax.jit(lambda p, k, o: p(k, o))(policy, key, obs)
    assert drawn.shape == (5, ACT_DIM)
    np.testing.assert_allclose(drawn, agent.act(key, obs, False), atol=1e-6)


def test_bad_input_gives_one_line_errors():
    with pytest.raises(ValueError, match="unknown algo"):
        agents.create("td3", jax.random.PRNGKey(0), 2, 1, IQLConfig())
    with pytest.raises(ValueError, match="needs a SACConfig"):
        sac.SAC.create(jax.random.PRNGKey(0), 2, 1, IQLConfig())
    with pytest.raises(ValueError, match="obs_norm has shape"):
        iql.IQL.create(jax.random.PRNGKey(0), 3, 1, IQLConfig(), obs_norm=Normalizer.identity(2))
    with pytest.raises(ValueError, match="reward_scale"):
        calql.CalQL.create(jax.random.PRNGKey(0), 3, 1, CalQLConfig(), reward_scale=0.0)


# ------------------------------------------------ Cal-QL options of the published task configs


def _calql_loss(agent, batch):
    prepared = sac.prepare_batch(agent.sac, batch)
    return calql.critic_loss(agent, agent.sac.critic.params, prepared, jax.random.PRNGKey(3))


def test_calql_clip_diff_bounds_the_cql_gap_of_every_row():
    agent = make_agent("calql", jax.random.PRNGKey(7), tiny_config("calql"))
    batch = probe_data(jax.random.PRNGKey(8), lambda a: a[:, 0], terminal=0.0, n=16)
    loss = jax.jit(_calql_loss)
    plain, info = loss(agent, batch)
    assert abs(float(info["cql_gap"])) < 50.0  # a small untrained critic: gaps well inside +-50
    same, _ = loss(agent.replace(cql_clip_min=scalar(-1e3)), batch)
    assert float(same) == float(plain)  # a bound no row reaches changes nothing
    alpha = float(agent.cql_alpha)
    for bound in ("cql_clip_min", "cql_clip_max"):
        c = 100.0 if bound == "cql_clip_min" else -100.0  # every row's gap is raised/lowered to c
        clipped, info_c = loss(agent.replace(**{bound: scalar(c)}), batch)
        assert float(info_c["cql_gap"]) == pytest.approx(c)
        # By hand: TD loss plus alpha * (c per critic, two critics).
        assert float(clipped) == pytest.approx(float(info_c["td_loss"]) + alpha * 2 * c, rel=1e-6)
    config = CalQLConfig(cql_clip_diff_min=-200.0)
    created = calql.CalQL.create(jax.random.PRNGKey(0), OBS_DIM, ACT_DIM, config)
    assert float(created.cql_clip_min) == -200.0 and float(created.cql_clip_max) == np.inf


def test_calql_lagrange_alpha_rises_above_the_target_gap_and_falls_below():
    config = tiny_config("calql", cql_lagrange=True, cql_target_action_gap=0.0)
    agent = make_agent("calql", jax.random.PRNGKey(7), config)
    assert agent.cql_lagrange and float(agent.alpha_prime.params) == 1.0  # log alpha' = 1
    step = jax.jit(calql.lagrange_step)
    up = step(agent, scalar(1.0))  # gap 1 above the target 0
    down = step(agent, scalar(-1.0))
    assert float(up.params) > 1.0 > float(down.params)
    # Through update: a target far below / above any gap moves alpha' the same ways.
    batch = probe_data(jax.random.PRNGKey(8), lambda a: a[:, 0], terminal=0.0, n=16)
    update = jax.jit(calql.CalQL.update)
    low = agent.replace(cql_target_gap=scalar(-1e3))
    after, info = update(low, batch)
    assert float(after.alpha_prime.params) > 1.0
    assert (
        float(update(agent.replace(cql_target_gap=scalar(1e3)), batch)[0].alpha_prime.params) < 1.0
    )  # noqa: E501
    # The critic's penalty is alpha' * cql_alpha * (gap - target), per critic, alpha' = e.
    assert float(info["alpha_prime"]) == pytest.approx(np.e, rel=1e-6)
    loss, linfo = jax.jit(_calql_loss)(low, batch)
    penalty = np.e * float(agent.cql_alpha) * 2 * (float(linfo["cql_gap"]) + 1e3)
    assert float(loss) == pytest.approx(float(linfo["td_loss"]) + penalty, rel=1e-5)
    # Without Lagrange, alpha' is never stepped.
    plain = make_agent("calql", jax.random.PRNGKey(7), tiny_config("calql"))
    assert float(update(plain, batch)[0].alpha_prime.params) == 1.0


def test_calql_max_target_backup_takes_the_max_over_the_sampled_actions():
    agent = make_agent("calql", jax.random.PRNGKey(7), tiny_config("calql"))
    batch = sac.prepare_batch(
        agent.sac, probe_data(jax.random.PRNGKey(8), lambda a: a[:, 0], terminal=0.0, n=16)
    )
    next_actions, next_logp = calql._policy_samples(
        agent.sac, batch.next_obs, 4, jax.random.PRNGKey(1)
    )
    obs = jnp.broadcast_to(batch.next_obs, (4, 16, OBS_DIM))
    q = agent.sac.critic_net.apply(agent.sac.target_critic, obs, next_actions).min(0)  # (4, 16)
    key = jax.random.PRNGKey(2)
    best = calql._td_target(
        agent.replace(max_backup=scalar(1.0)), batch, next_actions, next_logp, key
    )  # noqa: E501
    first = calql._td_target(agent, batch, next_actions, next_logp, key)
    gamma = float(agent.sac.discount)
    np.testing.assert_allclose(best, batch.reward + gamma * q.max(0), rtol=1e-6)
    np.testing.assert_allclose(first, batch.reward + gamma * q[0], rtol=1e-6)
    assert np.all(np.asarray(q.max(0)) >= np.asarray(q[0])) and not np.allclose(best, first)


def test_calql_critic_depth_sets_the_critic_only():
    def dense_layers(params):
        return len(
            {jax.tree_util.keystr(p[:-1]) for p, _ in jax.tree_util.tree_leaves_with_path(params)}
        )  # noqa: E501

    plain = make_agent("calql", jax.random.PRNGKey(0), tiny_config("calql"))
    deep = make_agent(
        "calql", jax.random.PRNGKey(0), tiny_config("calql", critic_hidden_dims=(32,) * 5)
    )  # noqa: E501
    assert dense_layers(deep.sac.critic.params) == dense_layers(plain.sac.critic.params) + 3
    assert dense_layers(deep.sac.actor.params) == dense_layers(plain.sac.actor.params)


def test_reward_scale_and_bias_and_the_sparse_mc_return():
    from edis_jax.config import RunConfig
    from edis_jax.data.returns import returns_to_go
    from edis_jax.train import scales

    config = tiny_config("calql", reward_scale=2.0, reward_bias=-1.0)
    agent = calql.CalQL.create(jax.random.PRNGKey(0), OBS_DIM, ACT_DIM, config, reward_scale=3.0)
    batch = probe_data(jax.random.PRNGKey(8), lambda a: a[:, 0], terminal=0.0, n=8)
    prepared = sac.prepare_batch(agent.sac, batch)
    np.testing.assert_allclose(prepared.reward, batch.reward * 6.0 - 1.0, rtol=1e-6)
    np.testing.assert_allclose(prepared.mc_return, batch.mc_return * 6.0, rtol=1e-6)
    # The run's mc_return sums reward + bias / scale, so that scaled it is the return of the
    # transformed rewards; the sparse rule reads the reference minimum (AntMaze: 0).
    cfg = RunConfig(
        algo="calql", calql=config.__class__(reward_scale=2.0, reward_bias=-1.0, sparse_reward=True)
    )  # noqa: E501
    shift, fail = scales.return_options(cfg, 3.0, (0.0, 1.0))
    assert shift == pytest.approx(-1.0 / 6.0) and fail == 0.0
    # Two AntMaze-like episodes: the goal never reached, and reached at the end.
    rewards, ends = [0.0, 0.0, 0.0, 0.0, 0.0, 1.0], [0, 0, 1, 0, 0, 1]
    g = returns_to_go(rewards, ends, np.zeros(6), 0.99, shift=-1.0, fail_reward=0.0)
    np.testing.assert_allclose(g[:3], [-100.0] * 3, rtol=1e-6)  # (0 - 1) / (1 - 0.99)
    np.testing.assert_allclose(g[3:], [-1.0 - 0.99, -1.0, 0.0], rtol=1e-6)
    plain = returns_to_go(rewards, ends, np.zeros(6), 0.99)
    np.testing.assert_allclose(plain, [0, 0, 0, 0.99**2, 0.99, 1.0], rtol=1e-6)

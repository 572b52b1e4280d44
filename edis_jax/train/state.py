"""The device state of a run and the jitted, seed-vmapped functions that advance it.

Every leaf of `RunState` carries a leading seed axis. The host loop (train/loop.py) calls the
functions here once per chunk (offline) or once per environment step (online: `online_step`
alone); everything inside them is one compiled program for all seeds.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import struct

from edis_jax import agents, generator
from edis_jax.config import RunConfig
from edis_jax.data import buffer
from edis_jax.data.normalizer import Normalizer
from edis_jax.data.transition import Transition
from edis_jax.train import env_step
from edis_jax.train.chunks import over_seeds

# Key streams: every random draw is fold_in(seed_key, stream + step), so any step's key is known
# without carrying a key through the run, and a resumed run draws exactly the same numbers.
OFFLINE_STREAM = 0
ONLINE_STREAM = 1 << 28
ACT_STREAM = 4 << 28
RETRAIN_STREAM = 2 << 28
GENERATE_STREAM = 3 << 28
PRETRAIN_STREAM = 5 << 28
RETRAIN_UPDATE_STREAM = 6 << 28

# Mixture weights over (synthetic, online, real) buffers.
SYNTHETIC, ONLINE, REAL = 0, 1, 2


class RunState(struct.PyTreeNode):
    agent: Any
    generator: Any  # an generator.Generator, or None for the baseline
    real: buffer.ReplayBuffer  # offline data + everything seen online
    online: buffer.ReplayBuffer  # online transitions only, in arrival order (never wraps)
    synthetic: buffer.ReplayBuffer  # the generator's latest samples (1 row for the baseline)
    weights: jnp.ndarray  # (3,) batch fractions drawn from (synthetic, online, real)
    # The env inside the compiled program with --env-backend jax (train/jax_online.EnvCarry:
    # the env's state, the observation to act on, the running episode); None with gymnasium,
    # whose envs live on the host (and whose checkpoints therefore hold no env).
    env: Any = None


def seed_keys(cfg: RunConfig) -> jax.Array:
    """One key per seed: fold_in(PRNGKey(cfg.seed), i)."""
    base = jax.random.PRNGKey(cfg.seed)
    return jax.vmap(lambda i: jax.random.fold_in(base, i))(jnp.arange(cfg.seeds))


def step_key(keys: jax.Array, stream: int, step: int) -> jax.Array:
    return jax.vmap(lambda k: jax.random.fold_in(k, stream + step))(keys)


def num_retrains(cfg: RunConfig) -> int:
    """Generator retrains in the online phase: at every step t = k R with 0 < t < T, and at
    t = 1 under Cal-QL-EDIS's published schedule (`retrain_due`)."""
    return sum(retrain_due(cfg, t) for t in range(1, cfg.online_steps))


def retrain_due(cfg: RunConfig, t: int) -> bool:
    """Whether the generator retrains after online step t (t env steps taken)."""
    if not (cfg.edis and 0 < t < cfg.online_steps):
        return False
    first = cfg.online.schedule == "published" and cfg.algo == "calql" and t == 1
    return t % cfg.online.retrain_every == 0 or first


def synthetic_every_update(cfg: RunConfig) -> bool:
    """False under IQL-EDIS's published schedule: its synthetic rows reach only the extra
    updates of retrain steps; every other update draws real data like the baseline."""
    return not (cfg.online.schedule == "published" and cfg.algo == "iql")


def draws_synthetic(cfg: RunConfig) -> bool:
    """Whether any agent update draws synthetic rows. Not the "EDIS without synthetic rows"
    control (synthetic fraction 0): it keeps EDIS's schedule but trains no generator, whose rows
    it would never draw (buffer.sample_mixture picks rows by weight, so a weight-0 buffer's
    contents change no bit of the agent)."""
    return float(synthetic_weights(cfg)[0]) > 0


# Offline-phase batches: the real buffer holds only the offline data then.
OFFLINE_WEIGHTS = (0.0, 0.0, 1.0)


def real_weights(cfg: RunConfig) -> jnp.ndarray:
    """Online batches of real data: the baseline's, and EDIS's before its first retrain."""
    beta = cfg.online.baseline_online_ratio
    return jnp.array([0.0, beta, 1.0 - beta], jnp.float32)


def synthetic_weights(cfg: RunConfig) -> jnp.ndarray:
    """EDIS batches after a retrain: `online.mixture`, or (rho, 1 - rho, 0)."""
    if cfg.online.mixture is not None:
        return jnp.asarray(cfg.online.mixture, jnp.float32)
    rho = cfg.online.synthetic_ratio
    return jnp.array([rho, 1.0 - rho, 0.0], jnp.float32)


def state_bytes(cfg: RunConfig, offline: Transition, reward_scale: float) -> int:
    """The bytes init_state's RunState holds for all seeds, from shapes alone (traced, nothing
    allocated or compiled): buffers, agents, generators and their optimiser states."""
    shapes = jax.eval_shape(lambda: init_state(cfg, offline, reward_scale))
    return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(shapes))


def create_generator(cfg: RunConfig, key, obs_dim: int, act_dim: int) -> generator.Generator:
    """One seed's fresh generator; with warm_lr "continue", its lr cosine spans the run's
    pretraining and all its retrains."""
    return _create_generator(_generator_spec(cfg), key, obs_dim, act_dim)


class GeneratorSpec(NamedTuple):
    """What a fresh generator depends on (hashable: a static argument of fresh_seeds)."""

    diffusion: Any
    energy: Any
    guide: Any
    lr_horizon: int | None  # warm_lr "continue": pretraining plus all retrains; else None


def _generator_spec(cfg: RunConfig) -> GeneratorSpec:
    horizon = None
    if cfg.diffusion.warm_start and cfg.diffusion.warm_lr == "continue":
        horizon = cfg.diffusion.initial_steps + num_retrains(cfg) * cfg.diffusion.train_steps
    return GeneratorSpec(cfg.diffusion, cfg.energy, cfg.guide, horizon)


def _create_generator(spec: GeneratorSpec, key, obs_dim: int, act_dim: int) -> generator.Generator:
    gen = generator.create(key, obs_dim, act_dim, spec.diffusion, spec.energy, spec.guide)
    return gen if spec.lr_horizon is None else generator.with_lr_horizon(gen, spec.lr_horizon)


@dataclasses.dataclass(frozen=True)
class SeedSpec:
    """What a seed's fresh agent and generator depend on besides its key and the observation
    normaliser. RunConfig also holds the run folder, evaluation and logging: keyed on this
    instead, every run with the same agent and generator reuses one compiled program."""

    algo: str
    agent: Any
    obs_dim: int
    act_dim: int
    reward_scale: float
    offline_steps: int
    generator: GeneratorSpec | None  # None without EDIS


@functools.partial(jax.jit, static_argnames=("spec",))
def fresh_seeds(keys: jax.Array, obs_norm: Normalizer, spec: SeedSpec):
    """(agents, generators) of every seed, fresh from its key."""

    def one_seed(key):
        # Known overlap, left for the next change that alters every run's bits anyway: with
        # JAX's partitionable threefry, split(key) is (fold_in(key, 0), fold_in(key, 1)), the keys
        # of offline updates 0 and 1 (OFFLINE_STREAM). A few correlated draws in the first two
        # updates; the mend is a stream of their own for these keys.
        k_agent, k_gen = jax.random.split(key)
        agent = agents.create(
            spec.algo,
            k_agent,
            spec.obs_dim,
            spec.act_dim,
            spec.agent,
            obs_norm=obs_norm,
            reward_scale=spec.reward_scale,
            offline_steps=spec.offline_steps,
        )
        if spec.generator is None:
            return agent, None
        return agent, _create_generator(spec.generator, k_gen, spec.obs_dim, spec.act_dim)

    return jax.vmap(one_seed)(keys)


def init_state(cfg: RunConfig, offline: Transition, reward_scale: float) -> RunState:
    """The state at step 0 for every seed: fresh agents and generators, filled buffers."""
    obs_dim, act_dim = offline.obs_dim, offline.act_dim
    fit = cfg.agent.normalize_obs and len(offline) > 1
    obs_norm = Normalizer.fit(offline.obs) if fit else Normalizer.identity(obs_dim)
    offline = jax.tree.map(jnp.asarray, offline)
    use_edis = cfg.edis and cfg.online_steps > 0
    spec = SeedSpec(
        algo=cfg.algo,
        agent=cfg.agent,
        obs_dim=obs_dim,
        act_dim=act_dim,
        reward_scale=float(reward_scale),
        offline_steps=cfg.offline_steps,
        generator=_generator_spec(cfg) if use_edis else None,
    )
    agent, gen = fresh_seeds(seed_keys(cfg), obs_norm, spec)
    row = Transition.zeros(obs_dim, act_dim)
    capacity_online = max(cfg.online_steps, 1)
    real = buffer.from_transitions(offline, len(offline) + capacity_online)
    synthetic_capacity = cfg.online.num_samples if use_edis else 1
    per_seed = RunState(
        agent=None,
        generator=None,
        real=real,
        online=buffer.create(row, capacity_online),
        synthetic=buffer.create(row, synthetic_capacity),
        weights=jnp.asarray(OFFLINE_WEIGHTS, jnp.float32),
    )
    per_seed = jax.tree.map(lambda x: jnp.broadcast_to(x, (cfg.seeds, *x.shape)), per_seed)
    return per_seed.replace(agent=agent, generator=gen)


# ----------------------------------------------------------------------- jitted seed programs


@functools.partial(jax.jit, static_argnames=("num_updates", "batch_size"))
def update_chunk(state: RunState, keys, *, num_updates: int, batch_size: int):
    """num_updates agent updates per seed on the current mixture: one device call."""

    def one_seed(s: RunState, key):
        mixture = buffer.Mixture((s.synthetic, s.online, s.real), s.weights)
        return agents.update_chunk(s.agent, mixture, key, num_updates, batch_size)

    agent, metrics = jax.vmap(one_seed)(state, keys)
    return state.replace(agent=agent), metrics


@functools.partial(jax.jit, static_argnames=("utd", "batch_size"), donate_argnames=("state",))
def online_step(
    state: RunState,
    obs: jax.Array,
    action: jax.Array,
    row: jax.Array,
    keys: jax.Array,
    t,
    random_next,
    *,
    utd: int,
    batch_size: int,
):
    """Online step t of every seed in one device call (train/env_step.py): store the transition
    (obs, action, the env's answer `row` from env_step.env_row), run `utd` agent updates on the
    current mixture, and draw the actions of step t + 1 (uniform while `random_next`).

    Returns (state, next obs, next action, metrics); the next obs and action stay on the device
    for the next call.
    """

    def one_seed(s: RunState, o, a, r, key):
        return learn_step(s, o, a, r, key, t, random_next, utd=utd, batch_size=batch_size)

    return jax.vmap(one_seed)(state, obs, action, row, keys)


def learn_step(s: RunState, obs, action, row, key, t, random_next, *, utd: int, batch_size: int):
    """Online step t of one seed once the env has answered (`row`, env_step.env_row's layout):
    the body of `online_step` and of the jax backend's compiled chunk (train/jax_online.py).
    Returns (state, next obs, next action, metrics)."""
    mixture = buffer.Mixture((s.synthetic, s.online, s.real), s.weights)
    update_key = jax.random.fold_in(key, ONLINE_STREAM + t)
    agent, mixture, next_obs, next_action, metrics = env_step.learn_and_act(
        s.agent, mixture, (ONLINE, REAL), obs, action, row, update_key,
        _act_keys(key, t + 1), random_next, num_updates=utd, batch_size=batch_size,
    )  # fmt: skip
    synthetic, online, real = mixture.buffers
    s = s.replace(agent=agent, synthetic=synthetic, online=online, real=real)
    return s, next_obs, next_action, metrics


@functools.partial(jax.jit, donate_argnames=("state",))
def write_returns(state: RunState, steps: jax.Array, returns: jax.Array) -> RunState:
    """Set mc_return of the online transitions of finished episodes: steps (seeds, n) are online
    step indices (padding: any index past the buffers' end), returns (seeds, n) their returns-to-go.

    Online step t is row t of `online` and row (offline size) + t of `real`; neither wraps.
    """

    def one_seed(s: RunState, rows, values):
        offline_size = s.real.size - s.online.size
        return s.replace(
            online=buffer.set_mc_return(s.online, rows, values),
            real=buffer.set_mc_return(s.real, rows + offline_size, values),
        )

    return jax.vmap(one_seed)(state, steps, returns)


@jax.jit
def choose_action(agent, obs, keys, t, random):
    """The exploration actions of online step t, for an online phase's first step (or after
    the agent changed outside `online_step`): the draw `online_step` makes for its next step."""

    return jax.vmap(lambda a, o, key: exploration_action(a, o, key, t, random))(agent, obs, keys)


def exploration_action(agent, obs, key, t, random):
    """One seed's exploration action at online step t (uniform while `random`)."""
    return env_step.explore(agent, obs, *_act_keys(key, t), random)


@jax.jit
def greedy_action(agent, obs):
    """Deterministic actions for evaluation, one observation per seed."""
    return jax.vmap(lambda a, o: a.act(None, o, deterministic=True))(agent, obs)


@jax.jit
def with_online_phase(state: RunState, weights: jnp.ndarray) -> RunState:
    """Switch phase-dependent agent leaves (Cal-QL's alpha) and the batch mixture (`weights`,
    the online phase's real-data mix) for the online phase."""
    return state.replace(
        agent=state.agent.to_online(), weights=jnp.broadcast_to(weights, state.weights.shape)
    )


def set_synthetic(state: RunState, samples: Transition, weights: jnp.ndarray) -> RunState:
    """Replace the synthetic buffer by fresh samples (leading seed axis) and set the mixture."""
    synthetic = over_seeds(buffer.from_transitions, samples)
    seeds = samples.reward.shape[0]
    return state.replace(synthetic=synthetic, weights=jnp.broadcast_to(weights, (seeds, 3)))


def _act_keys(key: jax.Array, t) -> jax.Array:
    """The (policy sample, uniform) keys of one seed's action at online step t."""
    return jax.random.split(jax.random.fold_in(key, ACT_STREAM + t))

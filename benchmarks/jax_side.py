"""Timings of edis-jax's own functions at given sizes (no separate JAX implementation here).

Every function builds the package's state (generator, agents, run state) with random data of
Hopper's shapes, compiles the program ahead of time (`jit(...).lower(...).compile()`, so the
long rows run once, not once more as warm-up) and returns milliseconds per call. The programs
are the package's public functions (generator.generate, generator.train_diffusion, generator.train_energies,
update_chunk, the run driver's online step) under one `jax.jit`.
"""

from __future__ import annotations

import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.harness import time_ms
from edis_jax import agents, envs, generator
from edis_jax.config import RunConfig
from edis_jax.config.generator_configs import GUIDES, DiffusionConfig, EnergyConfig
from edis_jax.data import buffer
from edis_jax.data.transition import Transition
from edis_jax.diffusion import model as diffusion_model
from edis_jax.diffusion import sampler
from edis_jax.energy import cep
from edis_jax.train import env_step
from edis_jax.train import state as S


@dataclasses.dataclass
class Timing:
    ms: float
    compile_s: float
    note: str | None = None


def random_transitions(key: jax.Array, n: int, obs_dim: int, act_dim: int) -> Transition:
    k = jax.random.split(key, 5)
    return Transition.from_arrays(
        jax.random.normal(k[0], (n, obs_dim)),
        jax.random.uniform(k[1], (n, act_dim), minval=-1.0, maxval=1.0),
        jax.random.normal(k[2], (n,)),
        jax.random.normal(k[3], (n, obs_dim)),
        jnp.zeros(n),
        jax.random.normal(k[4], (n,)),
    )


def built(make, *args):
    """`make(*args)` as one compiled program: building a network's parameters op by op (eager,
    and worse under vmap) takes 10-20 s on a CPU, most of a tiny-size row's time."""
    return jax.jit(make)(*args)


def compile_ahead(fn, *args) -> tuple:
    """(compiled executable, seconds to compile)."""
    start = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    return compiled, time.perf_counter() - start


def sampler_timing(
    obs_dim: int,
    act_dim: int,
    dcfg: DiffusionConfig,
    ecfg: EnergyConfig,
    n: int,
    guided: bool,
    repeats: int = 1,
    timed_steps: int | None = None,
) -> Timing:
    """`generator.generate` of n rows in one batch (sample_batch = n), all three energies or none.
    With `timed_steps` below dcfg.num_steps, runs that many steps and scales the time by the
    ratio of denoiser calls (the scan's cost per step is the same at every noise level)."""
    full = dcfg.num_steps
    steps = full if timed_steps is None else min(timed_steps, full)
    dcfg = dataclasses.replace(dcfg, sample_batch=n, num_steps=steps)
    guides = GUIDES if guided else ()
    gen = built(
        lambda k: generator.create(k, obs_dim, act_dim, dcfg, ecfg, guides), jax.random.key(0)
    )
    key = jax.random.key(1)
    compiled, compile_s = compile_ahead(lambda g, k: generator.generate(g, k, n), gen, key)
    ms = time_ms(lambda: compiled(gen, key), warmup=0, repeats=repeats)
    if steps == full:
        return Timing(ms, compile_s)
    scale = (2 * full - 1) / (2 * steps - 1)
    return Timing(ms * scale, compile_s, f"JAX timed at {steps} of {full} steps, scaled")


def diffusion_step_timing(data_dim: int, dcfg: DiffusionConfig, repeats: int) -> Timing:
    """One `diffusion.model.train_step` at batch dcfg.batch_size, one jitted call per step."""
    state = diffusion_model.init(jax.random.key(0), data_dim, dcfg)
    batch = jax.random.normal(jax.random.key(1), (dcfg.batch_size, data_dim))
    key = jax.random.key(2)
    compiled, compile_s = compile_ahead(diffusion_model.train_step, state, batch, key)
    return Timing(
        time_ms(lambda: compiled(state, batch, key), warmup=0, repeats=repeats), compile_s
    )


def diffusion_chunk_timing(
    obs_dim: int, act_dim: int, dcfg: DiffusionConfig, steps: int, repeats: int
) -> Timing:
    """`generator.train_diffusion`: `steps` EDM steps in one scan, batches drawn from a device buffer."""
    gen, real, _ = _generator_and_buffers(obs_dim, act_dim, dcfg, EnergyConfig())
    key = jax.random.key(3)

    def run(g, r, k):
        return generator.train_diffusion(g, r, k, steps)

    compiled, compile_s = compile_ahead(run, gen, real, key)
    return Timing(time_ms(lambda: compiled(gen, real, key), warmup=0, repeats=repeats), compile_s)


def cep_timing(
    obs_dim: int, act_dim: int, dcfg: DiffusionConfig, ecfg: EnergyConfig, steps: int, repeats: int
) -> Timing:
    """`steps` CEP steps over all three energies (`generator.train_energies`; steps=1 is one step),
    on a negative bank of the configured shape filled with random rows."""
    gen, _, online = _generator_and_buffers(obs_dim, act_dim, dcfg, ecfg)
    positives, condition = cep.bank_rows(jax.random.key(4), online, gen.codec, ecfg, GUIDES)
    levels = sampler.level_indices(dcfg, ecfg.level_stride)
    saved = jax.random.normal(jax.random.key(5), (len(levels), *condition.values.shape))
    sigmas = sampler.schedule(dcfg).sigmas[jnp.asarray(levels)]
    bank = cep.assemble_bank(positives, saved, sigmas, ecfg, GUIDES)
    policy = agents.policy(
        built(lambda k: make_agent("iql", obs_dim, act_dim, k), jax.random.key(0))
    )
    key = jax.random.key(6)

    def run(g, b, o, p, k):
        return generator.train_energies(g, b, o, p, k, steps)

    compiled, compile_s = compile_ahead(run, gen, bank, online, policy, key)
    args = (gen, bank, online, policy, key)
    return Timing(time_ms(lambda: compiled(*args), warmup=0, repeats=repeats), compile_s)


def agent_chunk_timing(
    algo: str,
    obs_dim: int,
    act_dim: int,
    updates: int,
    repeats: int,
    *,
    seeds: int | None = None,
    config=None,
    batch_size: int = 256,
) -> Timing:
    """`update_chunk` of `updates` updates at `batch_size`; with `seeds`, vmapped over that many
    seeds (own agent, buffer and key each)."""  # fmt: skip

    def make(key):
        k_agent, k_data = jax.random.split(key)
        data = random_transitions(k_data, 10_000, obs_dim, act_dim)
        agent = make_agent(algo, obs_dim, act_dim, k_agent, config)
        return agent, buffer.Mixture.of(buffer.from_transitions(data))

    def run(agent, mixture, key):
        return agents.update_chunk(agent, mixture, key, updates, batch_size)

    if seeds is None:
        agent, mixture = built(make, jax.random.key(0))
        key = jax.random.key(1)
    else:
        agent, mixture = built(jax.vmap(make), jax.random.split(jax.random.key(0), seeds))
        key = jax.random.split(jax.random.key(1), seeds)
        run = jax.vmap(run)
    compiled, compile_s = compile_ahead(run, agent, mixture, key)
    ms = time_ms(lambda: compiled(agent, mixture, key), warmup=0, repeats=repeats)
    return Timing(ms, compile_s)


def sampler_seeds_timing(
    obs_dim: int,
    act_dim: int,
    dcfg: DiffusionConfig,
    ecfg: EnergyConfig,
    n: int,
    seeds: int | None,
    repeats: int,
) -> Timing:
    """Guided `generator.generate` of n rows per seed, vmapped over `seeds` generators (None: one,
    unvmapped)."""
    dcfg = dataclasses.replace(dcfg, sample_batch=n)
    make = lambda k: generator.create(k, obs_dim, act_dim, dcfg, ecfg)  # noqa: E731
    run = lambda g, k: generator.generate(g, k, n)  # noqa: E731
    if seeds is None:
        gen, key = built(make, jax.random.key(0)), jax.random.key(1)
    else:
        gen = built(jax.vmap(make), jax.random.split(jax.random.key(0), seeds))
        key, run = jax.random.split(jax.random.key(1), seeds), jax.vmap(run)
    compiled, compile_s = compile_ahead(run, gen, key)
    return Timing(time_ms(lambda: compiled(gen, key), warmup=0, repeats=repeats), compile_s)


class OnlineStepLoop:
    """The run driver's online step for 1 seed, as train/loop.py makes it: the action back to
    the host, the vector env step, and one `online_step` call (store + `utd` updates + the next
    action). Built and compiled (3 warm-up steps) on creation, so that `run` can be called in
    rounds interleaved with the reference's; `capacity` bounds the steps of all calls together.
    """

    def __init__(self, env_id, algo, utd, capacity, *, config=None, batch_size=256):
        self.utd, self.batch_size = utd, batch_size
        self.vec_env = envs.make_vector_env(env_id, 1)
        self.obs_dim = self.vec_env.single_observation_space.shape[0]
        act_dim = self.vec_env.single_action_space.shape[0]
        cfg = RunConfig(
            algo=algo, seeds=1, edis=False, online_steps=capacity + 3, offline_steps=0,
            batch_size=batch_size,
        )  # fmt: skip
        if config is not None:
            cfg = cfg.replace(**{algo: config})
        offline = random_transitions(jax.random.key(0), 10_000, self.obs_dim, act_dim)
        self.state = S.init_state(cfg, jax.tree.map(np.asarray, offline), 1.0)
        self.keys = S.seed_keys(cfg)
        self.obs = jnp.asarray(self.vec_env.reset(seed=0)[0], jnp.float32)
        self.action = S.choose_action(self.state.agent, self.obs, self.keys, np.int32(0), False)
        self.t = 0
        start = time.perf_counter()
        self.run(3)
        self.compile_s = time.perf_counter() - start

    def _call(self, row, t):
        self.state, self.obs, self.action, metrics = S.online_step(
            self.state, self.obs, self.action, row, self.keys, t, False,
            utd=self.utd, batch_size=self.batch_size,
        )  # fmt: skip
        return metrics

    def run(self, steps: int) -> tuple[float, float]:
        """(ms per step, of which ms in the env step) over `steps` steps."""
        env_s, start = 0.0, time.perf_counter()
        for _ in range(steps):
            action = np.asarray(self.action)  # waits for the previous call: not env time
            env_start = time.perf_counter()
            next_obs, reward, terminated, _, _ = self.vec_env.step(action)
            env_s += time.perf_counter() - env_start
            self._call(env_step.env_row(next_obs, next_obs, reward, terminated), np.int32(self.t))
            self.t += 1
        jax.block_until_ready(self.action)
        return (time.perf_counter() - start) * 1e3 / steps, env_s * 1e3 / steps

    def device_ms(self, steps: int) -> float:
        """ms per call of the same program on inputs already on the device, each waited for."""
        zeros = np.zeros((1, self.obs_dim), np.float32)
        row = jnp.asarray(env_step.env_row(zeros, zeros, np.zeros(1), np.zeros(1)))
        times = [jnp.int32(t) for t in range(self.t, self.t + steps)]
        jax.block_until_ready((row, times))
        start = time.perf_counter()
        for t in times:
            jax.block_until_ready(self._call(row, t))
        self.t += steps
        return (time.perf_counter() - start) * 1e3 / steps

    def close(self) -> None:
        self.vec_env.close()


# ----------------------------------------------------------------------------------- helpers


def make_agent(algo: str, obs_dim: int, act_dim: int, key: jax.Array | None = None, config=None):
    """An agent of the default (or given) config."""
    config = getattr(RunConfig(), algo) if config is None else config
    key = jax.random.key(0) if key is None else key
    return agents.create(algo, key, obs_dim, act_dim, config)


def _generator_and_buffers(obs_dim: int, act_dim: int, dcfg: DiffusionConfig, ecfg: EnergyConfig):
    gen = built(lambda k: generator.create(k, obs_dim, act_dim, dcfg, ecfg), jax.random.key(0))
    real = buffer.from_transitions(random_transitions(jax.random.key(1), 10_000, obs_dim, act_dim))
    online = buffer.from_transitions(random_transitions(jax.random.key(2), 2_000, obs_dim, act_dim))
    return gen, real, online

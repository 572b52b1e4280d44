"""The EDIS generator: retrain the diffusion model and the energies, generate guided samples.

A `Generator` is a pytree: the diffusion train state (recreated at every retrain), the three
energies (created once, trained further at every retrain), the data normaliser and the guidance
scales (w_s, w_a, w_t) as a leaf. `retrain` and `generate` are pure and vmappable over a
leading seed axis; `retrain_with_progress` and `generate_with_progress` do the same for states
that already carry that axis, phase by phase through jitted vmapped chunks with tqdm bars, and
give the same results as `jax.vmap(retrain)` / `jax.vmap(generate)` (every chunk derives its
keys from fold_in(key, step), so chunking does not change the random numbers).

A retrain (DESIGN.md section 2):
1. `prepare`: fit the normaliser on all real data, re-initialise the diffusion model;
2. `train_diffusion`: `train_steps` EDM steps on real data (batches drawn inside the scan);
3. `negative_bank`: one unguided chain per trained energy returns model samples at every CEP
   level (see `edis_jax.energy.cep` for why a bank);
4. `train_energies`: `EnergyConfig.steps` CEP steps on online data and the bank.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import struct
from tqdm.auto import tqdm

from edis_jax.config import GUIDES, DiffusionConfig, EnergyConfig
from edis_jax.data import buffer as buffer_lib
from edis_jax.data.buffer import ReplayBuffer
from edis_jax.data.normalizer import Normalizer
from edis_jax.data.transition import Transition
from edis_jax.diffusion import model as diffusion_lib
from edis_jax.diffusion import sampler
from edis_jax.diffusion.model import DiffusionState
from edis_jax.energy import cep
from edis_jax.energy import model as energy_lib
from edis_jax.energy.cep import NegativeBank, Policy
from edis_jax.energy.guidance import Guidance, make_guidance
from edis_jax.energy.model import EnergySet

TerminalFn = Callable[[jnp.ndarray, jnp.ndarray, jnp.ndarray], jnp.ndarray]


class Generator(struct.PyTreeNode):
    diffusion: DiffusionState
    energies: EnergySet
    normalizer: Normalizer  # over x = concat(s, a, r, s')
    scales: jnp.ndarray  # (3,) = (w_s, w_a, w_t)
    obs_dim: int = struct.field(pytree_node=False)
    act_dim: int = struct.field(pytree_node=False)
    diffusion_cfg: DiffusionConfig = struct.field(pytree_node=False)
    energy_cfg: EnergyConfig = struct.field(pytree_node=False)
    guide: tuple[str, ...] = struct.field(pytree_node=False, default=GUIDES)

    @property
    def data_dim(self) -> int:
        return 2 * self.obs_dim + self.act_dim + 1

    @property
    def guidance(self) -> Guidance | None:
        """g(x, sigma) of the guided energies; None for plain SynthER (empty guide)."""
        return make_guidance(self.energies, self.scales, self.obs_dim, self.act_dim, self.guide)


def create(
    key: jax.Array,
    obs_dim: int,
    act_dim: int,
    diffusion_cfg: DiffusionConfig,
    energy_cfg: EnergyConfig,
    guide: tuple[str, ...] = GUIDES,
) -> Generator:
    """A generator with an untrained diffusion model, fresh energies and an identity normaliser."""
    guide = tuple(guide)
    bad = [g for g in guide if g not in GUIDES]
    if bad or len(set(guide)) != len(guide):
        raise ValueError(
            f"invalid guide {guide}: give distinct names from {', '.join(GUIDES)} (or none)"
        )
    if obs_dim <= 0 or act_dim <= 0:
        raise ValueError(f"obs_dim and act_dim must be > 0, got {obs_dim} and {act_dim}")
    return _create(key, obs_dim, act_dim, diffusion_cfg, energy_cfg, guide)


def retrain(
    gen: Generator, real: ReplayBuffer, online: ReplayBuffer, policy: Policy, key: jax.Array
) -> tuple[Generator, dict[str, jnp.ndarray]]:
    """Refit the normaliser, retrain the diffusion model on `real`, train the energies by CEP on
    `online` (policy(key, raw obs) -> action gives E_a's positives). Pure; vmappable."""
    _check_buffers(gen, real, online)
    key_prepare, key_train, key_bank, key_cep = jax.random.split(key, 4)
    gen = prepare(gen, real, key_prepare)
    sizes = _diffusion_chunk_sizes(gen.diffusion_cfg)
    metrics = {"diffusion_loss": jnp.full((), jnp.nan)}
    if sum(sizes[:-1]):
        gen, _ = train_diffusion(gen, real, key_train, sum(sizes[:-1]))
    if sizes:
        gen, metrics = train_diffusion(gen, real, key_train, sizes[-1])
    if gen.guide:
        bank = negative_bank(gen, online, key_bank)
        gen, cep_metrics = train_energies(gen, bank, online, policy, key_cep, gen.energy_cfg.steps)
        metrics = {**metrics, **cep_metrics}
    return gen, metrics


def generate(
    gen: Generator, key: jax.Array, n: int, *, terminal_fn: TerminalFn | None = None
) -> Transition:
    """n guided synthetic transitions, un-normalised; terminal from terminal_fn(s, a, s') or 0,
    mc_return 0. Runs in batches of <= sample_batch rows (`lax.map`). Pure; vmappable."""
    x, _ = sampler.sample_pure(gen.diffusion, key, n, guidance=gen.guidance)
    return _to_transitions(gen, x, terminal_fn)


# ------------------------------------------------------------------------- retrain pieces


def prepare(gen: Generator, real: ReplayBuffer, key: jax.Array) -> Generator:
    """Fit the normaliser to the filled rows of `real`; a freshly initialised diffusion model."""
    rows = jnp.arange(real.capacity) < real.size
    normalizer = Normalizer.fit(real.data.to_vector(), mask=rows)
    return gen.replace(normalizer=normalizer, diffusion=diffusion_lib.reinit(gen.diffusion, key))


def train_diffusion(
    gen: Generator, real: ReplayBuffer, key: jax.Array, num_steps: int
) -> tuple[Generator, dict[str, jnp.ndarray]]:
    """`num_steps` EDM steps on normalised batches of `real`; metrics: mean loss of the chunk."""

    def batch_fn(k):
        rows = buffer_lib.sample(real, k, gen.diffusion_cfg.batch_size)
        return gen.normalizer.normalize(rows.to_vector())

    diffusion, loss = diffusion_lib.train_chunk(gen.diffusion, batch_fn, key, num_steps)
    return gen.replace(diffusion=diffusion), {"diffusion_loss": loss}


def negative_bank(gen: Generator, online: ReplayBuffer, key: jax.Array) -> NegativeBank:
    """Model samples at every CEP level for the guided energies (one unguided chain)."""
    key_rows, key_chain = jax.random.split(key)
    positives, condition = _bank_rows(gen, online, key_rows)
    levels = _levels(gen)
    _, saved = sampler.sample_pure(
        gen.diffusion, key_chain, condition.values.shape[0], condition=condition, save_at=levels
    )
    return _assemble_bank(gen, positives, saved)


def train_energies(
    gen: Generator,
    bank: NegativeBank,
    online: ReplayBuffer,
    policy: Policy,
    key: jax.Array,
    num_steps: int,
) -> tuple[Generator, dict[str, jnp.ndarray]]:
    """`num_steps` CEP steps; metrics: per-energy loss and accuracy, averaged over the steps."""
    energies, metrics = cep.train_chunk(
        gen.energies, bank, online, gen.normalizer, policy, key, num_steps
    )
    return gen.replace(energies=energies), metrics


# ------------------------------------------------------------------ seed-batched, with bars


def retrain_with_progress(
    gen: Generator,
    real: ReplayBuffer,
    online: ReplayBuffer,
    policy: Policy,
    key: jax.Array,
    *,
    progress: bool = True,
) -> tuple[Generator, dict[str, jnp.ndarray]]:
    """`jax.vmap(retrain)` for states with a leading seed axis (key: one key per seed), run as
    jitted chunks with a tqdm bar per phase. Metrics keep the seed axis."""
    seeds = _num_seeds(gen, key)
    _check_buffers(gen, real, online)
    keys = jax.vmap(lambda k: jax.random.split(k, 4))(key)
    key_prepare, key_train, key_bank, key_cep = (keys[:, i] for i in range(4))
    gen = _prepare_seeds(gen, real, key_prepare)
    sizes = _diffusion_chunk_sizes(gen.diffusion_cfg)
    metrics = {"diffusion_loss": jnp.full((seeds,), jnp.nan)}
    with tqdm(total=sum(sizes), desc=f"diffusion x{seeds}", disable=not progress) as bar:
        for n in sizes:
            gen, metrics = _train_diffusion_seeds(gen, real, key_train, n)
            bar.update(n)
            bar.set_postfix(loss=f"{float(metrics['diffusion_loss'].mean()):.3f}")
    if gen.guide:
        bank_keys = jax.vmap(jax.random.split)(key_bank)
        key_rows, key_chain = bank_keys[:, 0], bank_keys[:, 1]
        positives, condition = _bank_rows_seeds(gen, online, key_rows)
        _, saved = sampler.sample(
            gen.diffusion, key_chain, condition.values.shape[1], condition=condition,
            save_at=_levels(gen), seeds=True, progress=progress, desc="CEP negatives",
        )  # fmt: skip
        bank = _assemble_bank_seeds(gen, positives, saved)
        steps = gen.energy_cfg.steps
        with tqdm(total=steps, desc="CEP", disable=not progress) as bar:
            gen, cep_metrics = _train_energies_seeds(gen, bank, online, policy, key_cep, steps)
            bar.update(steps)
        metrics = {**metrics, **cep_metrics}
    return gen, metrics


def generate_with_progress(
    gen: Generator,
    key: jax.Array,
    n: int,
    *,
    terminal_fn: TerminalFn | None = None,
    progress: bool = True,
) -> Transition:
    """`jax.vmap(generate)` for a generator with a leading seed axis (one key per seed), one
    jitted batch at a time with a tqdm bar. `terminal_fn` is a static jit argument: reuse the
    same function object across calls to avoid recompiling."""
    _num_seeds(gen, key)
    guidance = _guidance_seeds(gen)
    x, _ = sampler.sample(
        gen.diffusion, key, n, guidance=guidance, seeds=True, progress=progress,
        desc="generating",
    )  # fmt: skip
    return _to_transitions_seeds(gen, x, terminal_fn)


# ----------------------------------------------------------------------------------- helpers


@functools.partial(jax.jit, static_argnums=(1, 2, 3, 4, 5))
def _create(key, obs_dim, act_dim, diffusion_cfg, energy_cfg, guide) -> Generator:
    # Jitted: initialising the networks op by op outside jit is slow.
    dim = 2 * obs_dim + act_dim + 1
    key_diffusion, key_energy = jax.random.split(key)
    scales = (energy_cfg.scale_state, energy_cfg.scale_policy, energy_cfg.scale_transition)
    return Generator(
        diffusion=diffusion_lib.init(key_diffusion, dim, diffusion_cfg),
        energies=energy_lib.init(key_energy, dim, energy_cfg),
        normalizer=Normalizer.identity(dim),
        scales=jnp.asarray(scales, jnp.float32),
        obs_dim=obs_dim,
        act_dim=act_dim,
        diffusion_cfg=diffusion_cfg,
        energy_cfg=energy_cfg,
        guide=guide,
    )


def _to_transitions(gen: Generator, x: jnp.ndarray, terminal_fn) -> Transition:
    batch = Transition.from_vector(gen.normalizer.denormalize(x), gen.obs_dim, gen.act_dim)
    if terminal_fn is not None:
        terminal = terminal_fn(batch.obs, batch.action, batch.next_obs)
        batch = batch.replace(terminal=jnp.asarray(terminal, jnp.float32))
    return batch


def _bank_rows(gen: Generator, online: ReplayBuffer, key: jax.Array):
    return cep.bank_rows(key, online, gen.normalizer, gen.energy_cfg, gen.guide)


def _assemble_bank(gen: Generator, positives: Transition, saved: jnp.ndarray) -> NegativeBank:
    sigmas = sampler.schedule(gen.diffusion_cfg).sigmas[jnp.asarray(_levels(gen))]
    return cep.assemble_bank(positives, saved, sigmas, gen.energy_cfg, gen.guide)


def _levels(gen: Generator) -> tuple[int, ...]:
    return sampler.level_indices(gen.diffusion_cfg, gen.energy_cfg.level_stride)


def _diffusion_chunk_sizes(cfg: DiffusionConfig) -> list[int]:
    """Chunks of `train_chunk` steps summing to `train_steps`, the remainder first, so that the
    last chunk, whose mean loss is reported, is a full one in both retrain paths."""
    steps, chunk = cfg.train_steps, cfg.train_chunk
    return [steps % chunk] * bool(steps % chunk) + [chunk] * (steps // chunk)


def _num_seeds(gen: Generator, key: jax.Array) -> int:
    seeds = gen.scales.shape[0] if gen.scales.ndim == 2 else None
    typed = jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)
    key_seeds = key.shape[0] if key.ndim == (1 if typed else 2) else None
    if seeds is None or key_seeds != seeds:
        raise ValueError(
            "the *_with_progress functions take states with a leading seed axis and one key per "
            f"seed: got scales of shape {gen.scales.shape} and keys of shape {key.shape}; "
            "split the key with jax.random.split(key, seeds)"
        )
    return seeds


def _check_buffers(gen: Generator, *buffers: ReplayBuffer) -> None:
    for buf in buffers:
        obs, act = buf.data.obs.shape[-1], buf.data.action.shape[-1]
        if (obs, act) != (gen.obs_dim, gen.act_dim):
            raise ValueError(
                f"buffer rows have obs/action dims ({obs}, {act}) but the generator was created "
                f"for ({gen.obs_dim}, {gen.act_dim}): create it with the dataset's dims"
            )


_jit_steps = functools.partial(jax.jit, static_argnames="num_steps")


@jax.jit
def _prepare_seeds(gen, real, key):
    return jax.vmap(prepare)(gen, real, key)


@_jit_steps
def _train_diffusion_seeds(gen, real, key, num_steps):
    return jax.vmap(lambda g, r, k: train_diffusion(g, r, k, num_steps))(gen, real, key)


@jax.jit
def _bank_rows_seeds(gen, online, key):
    return jax.vmap(_bank_rows)(gen, online, key)


@jax.jit
def _assemble_bank_seeds(gen, positives, saved):
    return jax.vmap(_assemble_bank)(gen, positives, saved)


@_jit_steps
def _train_energies_seeds(gen, bank, online, policy, key, num_steps):
    def one(g, b, o, p, k):
        return train_energies(g, b, o, p, k, num_steps)

    return jax.vmap(one)(gen, bank, online, policy, key)


@jax.jit
def _guidance_seeds(gen):
    return jax.vmap(lambda g: g.guidance)(gen)


@functools.partial(jax.jit, static_argnames="terminal_fn")
def _to_transitions_seeds(gen, x, terminal_fn):
    return jax.vmap(lambda g, x: _to_transitions(g, x, terminal_fn))(gen, x)

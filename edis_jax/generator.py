"""The EDIS generator: retrain the diffusion model and the energies, generate guided samples.

A `Generator` is a pytree: the diffusion train state, the three energies (created once, trained
further at every retrain), the data normaliser and the guidance scales (w_s, w_a, w_t) as a
leaf. Every function here is pure and vmappable over a leading seed axis;
train/generator_phases.py runs the same phases over seeds as jitted chunks with progress bars
(every chunk derives its keys from fold_in(key, step), so chunking does not change the random
numbers).

A retrain (DESIGN.md section 2):
1. `prepare`: from scratch (the published code), fit the normaliser on all real data and
   re-initialise the diffusion model; warm-started (`DiffusionConfig.warm_start`), keep both
   (the normaliser is fitted once, at the model's first training) and restart or continue the
   learning-rate cosine;
2. `train_diffusion`: `train_steps` EDM steps on real data (batches drawn inside the scan);
3. for each of `bank_refreshes` banks: `negative_bank` (one unguided chain returns model
   samples at every CEP level, see `edis_jax.energy.cep`), then its share of the CEP steps;
4. `heldout_accuracy`: each energy's accuracy on online rows and model samples CEP never saw.
`pretrain` trains a warm-started model on the offline data before the online phase.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import struct

from edis_jax.config.generator_configs import GUIDES, DiffusionConfig, EnergyConfig
from edis_jax.data import buffer
from edis_jax.data.buffer import ReplayBuffer
from edis_jax.data.normalizer import Normalizer, TransitionCodec
from edis_jax.data.transition import Transition
from edis_jax.diffusion import model as diffusion_model
from edis_jax.diffusion import sampler
from edis_jax.diffusion.model import DiffusionState
from edis_jax.energy import cep
from edis_jax.energy import model as energy_model
from edis_jax.energy.cep import NegativeBank, Policy
from edis_jax.energy.guidance import Guidance, make_guidance
from edis_jax.energy.model import EnergySet

TerminalFn = Callable[[jnp.ndarray, jnp.ndarray, jnp.ndarray], jnp.ndarray]

# Config numbers that a generator holds as leaves: the guidance scales (`scales`), the energies'
# learning rate (in their Adam state) and clip factor, the diffusion model's peak learning rate.
ENERGY_LEAVES = ("scale_state", "scale_policy", "scale_transition", "lr", "clip_factor")
DIFFUSION_LEAVES = ("lr",)


class Generator(struct.PyTreeNode):
    diffusion: DiffusionState
    energies: EnergySet
    normalizer: Normalizer  # over x = concat(s, a, r, s' or s' - s), see `codec`
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
    def codec(self) -> TransitionCodec:
        """Transitions <-> this model's normalised data vectors."""
        return TransitionCodec(self.normalizer, self.diffusion_cfg.next_obs == "delta")

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
    """A generator with an untrained diffusion model, fresh energies and an identity normaliser.

    The configs' numbers that are leaves (`ENERGY_LEAVES`, `DIFFUSION_LEAVES`) live only in the
    leaves: the static copies keep the configs' structure, with those fields at their defaults,
    so generators that differ only in such numbers share one tree structure (they stack, vmap
    and run one compiled program).
    """
    guide = tuple(guide)
    bad = [g for g in guide if g not in GUIDES]
    if bad or len(set(guide)) != len(guide):
        raise ValueError(
            f"invalid guide {guide}: give distinct names from {', '.join(GUIDES)} (or none)"
        )
    if obs_dim <= 0 or act_dim <= 0:
        raise ValueError(f"obs_dim and act_dim must be > 0, got {obs_dim} and {act_dim}")
    dim = 2 * obs_dim + act_dim + 1
    key_diffusion, key_energy = jax.random.split(key)
    scales = (energy_cfg.scale_state, energy_cfg.scale_policy, energy_cfg.scale_transition)
    diffusion = diffusion_model.init(key_diffusion, dim, diffusion_cfg)
    energies = energy_model.init(key_energy, dim, energy_cfg)
    diffusion_cfg = _structure(diffusion_cfg, DIFFUSION_LEAVES)
    energy_cfg = _structure(energy_cfg, ENERGY_LEAVES)
    return Generator(
        diffusion=diffusion.replace(config=diffusion_cfg),
        energies=energies.replace(config=energy_cfg),
        normalizer=Normalizer.identity(dim),
        scales=jnp.asarray(scales, jnp.float32),
        obs_dim=obs_dim,
        act_dim=act_dim,
        diffusion_cfg=diffusion_cfg,
        energy_cfg=energy_cfg,
        guide=guide,
    )


def retrain(
    gen: Generator, real: ReplayBuffer, online: ReplayBuffer, policy: Policy, key: jax.Array
) -> tuple[Generator, dict[str, jnp.ndarray]]:
    """Train the diffusion model on `real` (afresh, or further when warm-started), train the
    energies by CEP on `online` (policy(key, raw obs) -> action gives E_a's positives) and
    measure them on held-out rows."""
    check_buffers(gen, real, online)
    key_prepare, key_train, key_bank, key_cep = jax.random.split(key, 4)
    gen = prepare(gen, real, key_prepare, gen.diffusion_cfg.train_steps)
    sizes = diffusion_chunk_sizes(gen.diffusion_cfg.train_steps, gen.diffusion_cfg.train_chunk)
    metrics = {}  # train_steps 0 (a pretrained warm model): no step, no diffusion_loss
    if sum(sizes[:-1]):
        gen, _ = train_diffusion(gen, real, key_train, sum(sizes[:-1]))
    if sizes:
        gen, metrics = train_diffusion(gen, real, key_train, sizes[-1])
    if gen.guide:

        def one_bank(gen, r):
            bank = negative_bank(gen, online, jax.random.fold_in(key_bank, r))
            key = jax.random.fold_in(key_cep, r)
            return train_energies(gen, bank, online, policy, key, cep_steps_per_bank(gen))

        refreshes = jnp.arange(gen.energy_cfg.bank_refreshes)
        gen, cep_metrics = jax.lax.scan(one_bank, gen, refreshes)
        key_heldout = jax.random.fold_in(key_bank, gen.energy_cfg.bank_refreshes)
        metrics = {
            **metrics,
            **jax.tree.map(jnp.mean, cep_metrics),
            **heldout_accuracy(gen, online, policy, key_heldout),
        }
    return gen, metrics


def pretrain(gen: Generator, real: ReplayBuffer, key: jax.Array) -> tuple[Generator, dict]:
    """`initial_steps` of diffusion training on `real` (the offline data) before the online
    phase, for a warm-started model."""
    steps = gen.diffusion_cfg.initial_steps
    gen = prepare(gen, real, key, steps)
    return train_diffusion(gen, real, jax.random.fold_in(key, 1), steps)


def generate(
    gen: Generator, key: jax.Array, n: int, *, terminal_fn: TerminalFn | None = None
) -> tuple[Transition, dict[str, jnp.ndarray]]:
    """n guided synthetic transitions, un-normalised, actions clipped to the agents' box
    [-1, 1]; terminal from terminal_fn(s, a, s') or 0, mc_return 0. Metrics: the fraction of
    rows that had an action outside the box. Runs in batches of <= sample_batch rows."""
    x, _ = sampler.sample(gen.diffusion, key, n, guidance=gen.guidance)
    return to_transitions(gen, x, terminal_fn)


# ------------------------------------------------------------------------- retrain pieces


def prepare(gen: Generator, real: ReplayBuffer, key: jax.Array, num_steps: int) -> Generator:
    """Ready the model for `num_steps` of training on `real`. From scratch: a freshly
    initialised model and the normaliser fitted to the filled rows of `real`. Warm-started: the
    same model and, after its first training, the same normaliser (the model's input space must
    not move under it); the lr cosine restarts over `num_steps` ("restart") or keeps the run's
    horizon ("continue", see `with_lr_horizon`)."""
    rows = jnp.arange(real.capacity) < real.size
    fitted = Normalizer.fit(gen.codec.vector(real.data), mask=rows)
    cfg = gen.diffusion_cfg
    if not cfg.warm_start:
        return gen.replace(normalizer=fitted, diffusion=diffusion_model.reinit(gen.diffusion, key))
    fresh = gen.diffusion.step == 0
    normalizer = jax.tree.map(lambda a, b: jnp.where(fresh, a, b), fitted, gen.normalizer)
    diffusion = gen.diffusion
    if cfg.warm_lr == "restart":
        diffusion = diffusion_model.restart_schedule(diffusion, num_steps)
    return gen.replace(normalizer=normalizer, diffusion=diffusion)


def with_lr_horizon(gen: Generator, total_steps: int) -> Generator:
    """Set the cosine of a warm-started model with warm_lr "continue" to run over the whole
    run's `total_steps` of diffusion training (initial steps + every retrain's)."""
    diffusion = gen.diffusion.replace(
        schedule_start=jnp.zeros_like(gen.diffusion.schedule_start),
        schedule_steps=jnp.full_like(gen.diffusion.schedule_steps, max(total_steps, 1)),
    )
    return gen.replace(diffusion=diffusion)


def train_diffusion(
    gen: Generator, real: ReplayBuffer, key: jax.Array, num_steps: int
) -> tuple[Generator, dict[str, jnp.ndarray]]:
    """`num_steps` EDM steps on normalised batches of `real`; metrics: mean loss of the chunk."""

    def batch_fn(k):
        rows = buffer.sample(real, k, gen.diffusion_cfg.batch_size)
        return gen.codec.encode(rows)

    diffusion, loss = diffusion_model.train_chunk(gen.diffusion, batch_fn, key, num_steps)
    return gen.replace(diffusion=diffusion), {"diffusion_loss": loss}


def negative_bank(
    gen: Generator, online: ReplayBuffer, key: jax.Array, *, heldout: bool = False
) -> NegativeBank:
    """Model samples at every CEP level for the guided energies (one unguided chain), for the
    training rows of `online` or, with `heldout`, for its held-out rows."""
    key_rows, key_chain = jax.random.split(key)
    positives, condition = bank_rows(gen, online, key_rows, heldout)
    _, saved = sampler.sample(
        gen.diffusion, key_chain, condition.values.shape[0], condition=condition,
        save_at=cep_levels(gen),
    )  # fmt: skip
    return assemble_bank(gen, positives, saved)


def heldout_accuracy(
    gen: Generator, online: ReplayBuffer, policy: Policy, key: jax.Array
) -> dict[str, jnp.ndarray]:
    """Each guided energy's CEP accuracy on held-out online rows and fresh model samples."""
    key_bank, key_eval = jax.random.split(key)
    bank = negative_bank(gen, online, key_bank, heldout=True)
    return bank_accuracy(gen, bank, online, policy, key_eval)


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
        gen.energies, bank, online, gen.codec, policy, key, num_steps
    )
    return gen.replace(energies=energies), metrics


# ------------------------------------------------------- the pieces' pieces, for train/


def bank_rows(gen: Generator, online: ReplayBuffer, key: jax.Array, heldout: bool):
    """(positives, inpainting condition) of a negative bank (`cep.bank_rows`)."""
    return cep.bank_rows(key, online, gen.codec, gen.energy_cfg, gen.guide, heldout=heldout)


def assemble_bank(gen: Generator, positives: Transition, saved: jnp.ndarray) -> NegativeBank:
    """The bank from the chain's intermediates at `cep_levels` (`cep.assemble_bank`)."""
    sigmas = sampler.schedule(gen.diffusion_cfg).sigmas[jnp.asarray(cep_levels(gen))]
    return cep.assemble_bank(positives, saved, sigmas, gen.energy_cfg, gen.guide)


def bank_accuracy(
    gen: Generator, bank: NegativeBank, online: ReplayBuffer, policy: Policy, key: jax.Array
) -> dict[str, jnp.ndarray]:
    """Each guided energy's CEP accuracy on a held-out bank."""
    return cep.heldout_accuracy(gen.energies, bank, online, gen.codec, policy, key)


def to_transitions(gen: Generator, x: jnp.ndarray, terminal_fn: TerminalFn | None):
    """Sampled vectors x (n, D) as transitions, actions clipped to the box; see `generate`."""
    batch = gen.codec.decode(x, gen.obs_dim, gen.act_dim)
    # The model spills past the box where the data saturates; the agents act in [-1, 1].
    outside = jnp.any(jnp.abs(batch.action) > 1.0, axis=-1)
    batch = batch.replace(action=jnp.clip(batch.action, -1.0, 1.0))
    if terminal_fn is not None:
        terminal = terminal_fn(batch.obs, batch.action, batch.next_obs)
        batch = batch.replace(terminal=jnp.asarray(terminal, jnp.float32))
    return batch, {"clipped_action_frac": jnp.mean(outside.astype(jnp.float32))}


def cep_levels(gen: Generator) -> tuple[int, ...]:
    """The schedule indices the negative chain saves (`sampler.level_indices`)."""
    return sampler.level_indices(gen.diffusion_cfg, gen.energy_cfg.level_stride)


def diffusion_chunk_sizes(steps: int, chunk: int) -> list[int]:
    """Chunks of `chunk` steps summing to `steps`, the remainder first, so that the last chunk,
    whose mean loss is reported, is a full one however the chunks are run."""
    return [steps % chunk] * bool(steps % chunk) + [chunk] * (steps // chunk)


def cep_steps_per_bank(gen: Generator) -> int:
    return gen.energy_cfg.steps // gen.energy_cfg.bank_refreshes


def check_buffers(gen: Generator, *buffers: ReplayBuffer) -> None:
    """Refuse buffers whose rows have other obs/action dims than the generator's."""
    for buf in buffers:
        obs, act = buf.data.obs.shape[-1], buf.data.action.shape[-1]
        if (obs, act) != (gen.obs_dim, gen.act_dim):
            raise ValueError(
                f"buffer rows have obs/action dims ({obs}, {act}) but the generator was created "
                f"for ({gen.obs_dim}, {gen.act_dim}): create it with the dataset's dims"
            )


def _structure(cfg, leaves: tuple[str, ...]):
    """`cfg` with the fields in `leaves` at their defaults: the numbers are read from the
    generator's leaves, never from its static configs."""
    fields = {f.name: f for f in dataclasses.fields(cfg)}
    return dataclasses.replace(cfg, **{name: fields[name].default for name in leaves})

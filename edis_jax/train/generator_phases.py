"""The generator's phases for every seed of a run: `pretrain`, `retrain` and `generate` on
generators with a leading seed axis (one key per seed).

Each phase runs the pure functions of edis_jax/generator.py as seed programs, chunk by chunk
with a progress bar (train/chunks.py), and gives what `jax.vmap` of the pure function gives:
the same keys, split the same way (tests/test_generator_phases.py).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from edis_jax import generator
from edis_jax.data.buffer import ReplayBuffer
from edis_jax.data.transition import Transition
from edis_jax.diffusion import sampler
from edis_jax.energy.cep import NegativeBank, Policy
from edis_jax.generator import Generator, TerminalFn
from edis_jax.train.chunks import PhaseClock, over_seeds, run_chunks


def retrain(
    gen: Generator,
    real: ReplayBuffer,
    online: ReplayBuffer,
    policy: Policy,
    key: jax.Array,
    *,
    progress: bool = True,
    timings: dict[str, float] | None = None,
) -> tuple[Generator, dict[str, jnp.ndarray]]:
    """`jax.vmap(generator.retrain)`, phase by phase with a bar each. Metrics keep the seed
    axis. `timings`, if given, receives the wall seconds of each phase (diffusion,
    cep_negatives, cep, cep_heldout)."""
    seeds = check_seeds(gen, key)
    generator.check_buffers(gen, real, online)
    clock = PhaseClock(timings)
    keys = jax.vmap(lambda k: jax.random.split(k, 4))(key)
    key_prepare, key_train, key_bank, key_cep = (keys[:, i] for i in range(4))
    steps = gen.diffusion_cfg.train_steps
    gen = over_seeds(generator.prepare, gen, real, key_prepare, num_steps=steps)
    desc = f"diffusion x{seeds}"
    gen, metrics = _train_diffusion(gen, real, key_train, steps, desc, progress, clock)
    if not gen.guide:
        return gen, metrics

    def one_bank(gen, r, num_steps):
        fold = jax.vmap(lambda k: jax.random.fold_in(k, r))
        bank = negative_bank(gen, online, fold(key_bank), progress=progress)
        clock.lap("cep_negatives", bank)
        return over_seeds(
            generator.train_energies, gen, bank, online, policy, fold(key_cep),
            num_steps=num_steps,
        )  # fmt: skip

    sizes = [generator.cep_steps_per_bank(gen)] * gen.energy_cfg.bank_refreshes
    gen, cep_metrics = run_chunks(
        one_bank, gen, sizes, desc="CEP", progress=progress, clock=clock, phase="cep"
    )
    refreshes = gen.energy_cfg.bank_refreshes
    key_heldout = jax.vmap(lambda k: jax.random.fold_in(k, refreshes))(key_bank)
    k_split = jax.vmap(jax.random.split)(key_heldout)
    bank = negative_bank(gen, online, k_split[:, 0], heldout=True, progress=progress)
    heldout = over_seeds(generator.bank_accuracy, gen, bank, online, policy, k_split[:, 1])
    clock.lap("cep_heldout", heldout)
    mean = jax.tree.map(lambda *m: jnp.mean(jnp.stack(m), axis=0), *cep_metrics)
    return gen, {**metrics, **mean, **heldout}


def pretrain(
    gen: Generator, real: ReplayBuffer, key: jax.Array, *, progress: bool = True
) -> tuple[Generator, dict[str, jnp.ndarray]]:
    """`jax.vmap(generator.pretrain)`, with a progress bar."""
    seeds = check_seeds(gen, key)
    generator.check_buffers(gen, real)
    steps = gen.diffusion_cfg.initial_steps
    gen = over_seeds(generator.prepare, gen, real, key, num_steps=steps)
    train_key = jax.vmap(lambda k: jax.random.fold_in(k, 1))(key)
    return _train_diffusion(gen, real, train_key, steps, f"pretraining x{seeds}", progress)


def generate(
    gen: Generator,
    key: jax.Array,
    n: int,
    *,
    terminal_fn: TerminalFn | None = None,
    progress: bool = True,
    timings: dict[str, float] | None = None,
) -> tuple[Transition, dict[str, jnp.ndarray]]:
    """`jax.vmap(generator.generate)`, batch by batch with a progress bar. `terminal_fn` is a
    compile-time constant: reuse the same function object across calls to compile once.
    `timings`, if given, receives the wall seconds as "generate"."""
    check_seeds(gen, key)
    clock = PhaseClock(timings)
    guidance = over_seeds(_guidance, gen)
    x, _ = sample(gen.diffusion, key, n, guidance=guidance, progress=progress, desc="generating")
    samples, metrics = over_seeds(generator.to_transitions, gen, x, terminal_fn=terminal_fn)
    clock.lap("generate", samples)
    return samples, metrics


def negative_bank(
    gen: Generator,
    online: ReplayBuffer,
    key: jax.Array,
    *,
    heldout: bool = False,
    progress: bool = True,
) -> NegativeBank:
    """`jax.vmap(generator.negative_bank)`, the chain batch by batch with a progress bar."""
    bank_keys = jax.vmap(jax.random.split)(key)
    positives, condition = over_seeds(
        generator.bank_rows, gen, online, bank_keys[:, 0], heldout=heldout
    )
    _, saved = sample(
        gen.diffusion, bank_keys[:, 1], condition.values.shape[1], condition=condition,
        save_at=generator.cep_levels(gen), progress=progress,
        desc="held-out negatives" if heldout else "CEP negatives",
    )  # fmt: skip
    return over_seeds(generator.assemble_bank, gen, positives, saved)


def sample(
    state,
    key: jax.Array,
    n: int,
    *,
    guidance=None,
    condition: sampler.Condition | None = None,
    save_at: tuple[int, ...] = (),
    progress: bool = True,
    desc: str = "sampling",
) -> tuple[jnp.ndarray, jnp.ndarray | None]:
    """`jax.vmap(sampler.sample)` over a leading seed axis of every argument but n, one batch
    (`sampler.sample_rows`) per call, the bar counting rows. Outputs keep the seed axis."""
    batch, num_batches = sampler.batch_layout(n, state.config.sample_batch)
    if condition is not None:
        pad = lambda c: sampler.pad_condition(c, batch * num_batches)  # noqa: E731
        condition = jax.vmap(pad)(condition)

    def one_batch(_, b, rows):
        return None, over_seeds(
            sampler.sample_rows, state, key, guidance, condition, b,
            in_axes=(0, 0, 0, 0, None), batch=batch, save_at=save_at,
        )  # fmt: skip

    rows = [max(min(batch, n - b * batch), 0) for b in range(num_batches)]
    _, outs = run_chunks(one_batch, None, rows, desc=desc, progress=progress)
    x = jax.lax.slice_in_dim(jnp.concatenate([x for x, _ in outs], axis=1), 0, n, axis=1)
    if not save_at:
        return x, None
    saved = jnp.concatenate([s for _, s in outs], axis=2)
    return x, jax.lax.slice_in_dim(saved, 0, n, axis=2)


def check_seeds(gen: Generator, key: jax.Array) -> int:
    """The number of seeds; refuses a generator without a seed axis or keys that do not match."""
    seeds = gen.scales.shape[0] if gen.scales.ndim == 2 else None
    typed = jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)
    key_seeds = key.shape[0] if key.ndim == (1 if typed else 2) else None
    if seeds is None or key_seeds != seeds:
        raise ValueError(
            "the generator's seed phases take states with a leading seed axis and one key per "
            f"seed: got scales of shape {gen.scales.shape} and keys of shape {key.shape}; "
            "split the key with jax.random.split(key, seeds)"
        )
    return seeds


# ----------------------------------------------------------------------------------- helpers


def _train_diffusion(gen, real, key, steps, desc, progress, clock=None):
    def chunk(gen, _, num_steps):
        return over_seeds(generator.train_diffusion, gen, real, key, num_steps=num_steps)

    sizes = generator.diffusion_chunk_sizes(steps, gen.diffusion_cfg.train_chunk)
    gen, outs = run_chunks(
        chunk, gen, sizes, desc=desc, progress=progress, clock=clock, phase="diffusion",
        postfix=lambda m: {"loss": f"{float(m['diffusion_loss'].mean()):.3f}"},
    )  # fmt: skip
    return gen, (outs[-1] if outs else {})  # no step trains: no diffusion_loss


def _guidance(gen: Generator):
    return gen.guidance

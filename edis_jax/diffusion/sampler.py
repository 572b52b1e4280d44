"""The stochastic Heun sampler (EDM Algorithm 2), with guidance, inpainting and intermediates.

One chain is one `lax.scan` over the noise schedule; the churn (gamma = 0 outside
[S_tmin, S_tmax]) and the last step (sigma_N = 0, Euler only) are selected with `jnp.where`, so
a single compiled step serves the whole schedule.

- guidance g(x, sigma) -> (B, D) is added to the ODE direction d at both Heun evaluations
  (DESIGN.md section 2, "Guidance g").
- a `Condition` overwrites the conditioned dims after every step (inpainting): with their clean
  values, or with the values noised to the step's sigma (`inpainting="noised"`).
- `save_at` returns the chain's state x_i at the schedule indices i (x_i sits at sigma_i): one
  unguided chain gives CEP its negatives at every chosen level at once. Under inpainting the
  saved conditioned dims are the condition, clean or noised to the level.

`sample` runs any n in equal batches of at most `config.sample_batch` rows (`lax.map`), batch b
with key `fold_in(key, b)`; `sample_rows` is one such batch, for a host loop that shows progress
between batches (train/generator_phases.py) and returns the same samples.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import struct

from edis_jax.config.generator_configs import DiffusionConfig
from edis_jax.diffusion import edm
from edis_jax.diffusion.model import DiffusionState, denoiser

Denoiser = Callable[[jnp.ndarray, jnp.ndarray], jnp.ndarray]  # D(x; sigma)
Guidance = Callable[[jnp.ndarray, jnp.ndarray], jnp.ndarray]  # g(x, sigma) -> (B, D)


class Schedule(struct.PyTreeNode):
    sigmas: jnp.ndarray  # (N + 1,), ending with 0
    gammas: jnp.ndarray  # (N,) churn per step
    s_noise: jnp.ndarray  # scalar


class Condition(struct.PyTreeNode):
    """Inpainting: dims where `mask` is 1 are set to `values` after every sampler step."""

    values: jnp.ndarray  # (n, D), normalised space
    mask: jnp.ndarray  # (D,) or (n, D), 1.0 on conditioned dims


def schedule(cfg: DiffusionConfig) -> Schedule:
    sigmas = edm.noise_levels(cfg)
    return Schedule(sigmas, edm.churn(cfg), jnp.asarray(cfg.s_noise, jnp.float32))


def heun_sample(
    denoise: Denoiser,
    key: jax.Array,
    shape: tuple[int, int],
    sched: Schedule,
    *,
    guidance: Guidance | None = None,
    condition: Condition | None = None,
    save_at: tuple[int, ...] = (),
    inpainting: str = "clean",
    resamples: int = 1,
) -> tuple[jnp.ndarray, jnp.ndarray | None]:
    """One chain from sigma_max to 0: returns (x_0 of `shape`, saved (len(save_at), *shape)).

    `inpainting` ("clean" or "noised", `DiffusionConfig.inpainting`) says what the conditioned
    dims are set to after each step; under a condition each step of a row with a conditioned dim
    is taken `resamples` times (`DiffusionConfig.inpaint_resamples`)."""
    num_steps = sched.gammas.shape[0]
    _check_save_at(save_at, num_steps)
    key_init, key_steps = jax.random.split(key)
    noise = jax.random.normal(key_init, shape)
    x = _inpaint(sched.sigmas[0] * noise, condition, inpainting, sched.sigmas[0], lambda: noise)
    levels = jnp.asarray(save_at if save_at else (-1,), jnp.int32)
    saved = jnp.zeros((len(levels), *shape), x.dtype)
    step = functools.partial(_heun_step, denoise, guidance, sched.s_noise)

    def body(carry, inputs):
        x, saved = carry
        index, sigma, sigma_next, gamma, step_key = inputs
        slot = jnp.clip(jnp.searchsorted(levels, index), 0, len(levels) - 1)
        hit = levels[slot] == index
        saved = saved.at[slot].set(jnp.where(hit, x, saved[slot]))

        def advance(x, key):
            # The noised condition's fresh noise comes from a key the step itself never uses.
            fresh = lambda: jax.random.normal(jax.random.fold_in(key, 1), shape)  # noqa: E731
            x = step(x, sigma, sigma_next, gamma, key)
            return _inpaint(x, condition, inpainting, sigma_next, fresh)

        if condition is None or resamples == 1:
            return (advance(x, step_key), saved), None

        def jump(u, x):  # the step, then noise from sigma_next back up to sigma
            key = jax.random.fold_in(step_key, 2 + u)
            back = jnp.sqrt(jnp.maximum(sigma**2 - sigma_next**2, 0.0))
            return advance(x, key) + back * jax.random.normal(jax.random.fold_in(key, 2), shape)

        # Only rows with a conditioned dim jump: an unconditioned row (the CEP bank's E_s rows
        # share the chain with the inpainted ones) takes the plain step, with the plain key.
        jumps = jnp.any(condition.mask > 0, axis=-1, keepdims=True)
        x = jnp.where(jumps, jax.lax.fori_loop(0, resamples - 1, jump, x), x)
        return (advance(x, step_key), saved), None

    inputs = (
        jnp.arange(num_steps),
        sched.sigmas[:-1],
        sched.sigmas[1:],
        sched.gammas,
        jax.random.split(key_steps, num_steps),
    )
    (x, saved), _ = jax.lax.scan(body, (x, saved), inputs)
    return x, (saved if save_at else None)


def sample(
    state: DiffusionState,
    key: jax.Array,
    n: int,
    *,
    guidance: Guidance | None = None,
    condition: Condition | None = None,
    save_at: tuple[int, ...] = (),
) -> tuple[jnp.ndarray, jnp.ndarray | None]:
    """n samples (normalised space) from the EMA model, in batches of <= `sample_batch` rows
    (`lax.map`); returns (x (n, D), saved (len(save_at), n, D) or None).

    `guidance` must be a pytree callable (e.g. `energy.Guidance`, or a `jax.tree_util.Partial`
    of a module-level function) so that it crosses jit boundaries without retracing.
    """
    batch, num_batches = batch_layout(n, state.config.sample_batch)
    condition = pad_condition(condition, batch * num_batches)

    def one_batch(b):
        return sample_rows(state, key, guidance, condition, b, batch, save_at)

    x, saved = jax.lax.map(one_batch, jnp.arange(num_batches))
    x = x.reshape(-1, x.shape[-1])[:n]
    if not save_at:
        return x, None
    saved = jnp.moveaxis(saved, 0, 1)  # (L, num_batches, batch, D)
    return x, saved.reshape(saved.shape[0], -1, saved.shape[-1])[:, :n]


def sample_rows(state, key, guidance, condition, b, batch: int, save_at: tuple[int, ...]):
    """Batch b of a padded request (`pad_condition`): rows [b * batch, (b + 1) * batch), key
    fold_in(key, b). `sample` maps it over the batches; a host loop may call it batch by batch
    and concatenate, for the same samples."""
    condition = _condition_rows(condition, b, batch)
    return heun_sample(
        denoiser(state),
        jax.random.fold_in(key, b),
        (batch, state.data_dim),
        schedule(state.config),
        guidance=guidance,
        condition=condition,
        save_at=save_at,
        inpainting=state.config.inpainting,
        resamples=state.config.inpaint_resamples,
    )


def pad_condition(condition: Condition | None, rows: int) -> Condition | None:
    """The condition padded to `rows` rows: padding rows are sampled and dropped, they keep
    every batch the same shape."""
    if condition is None:
        return None
    values = _pad_rows(condition.values, rows)
    mask = condition.mask if condition.mask.ndim == 1 else _pad_rows(condition.mask, rows)
    return Condition(values, mask)


def batch_layout(n: int, sample_batch: int) -> tuple[int, int]:
    """(rows per batch, number of batches): the fewest batches of at most `sample_batch` rows,
    evened out so that the last one wastes little padding."""
    if n <= 0:
        raise ValueError(f"number of samples must be > 0, got {n}")
    num_batches = -(-n // sample_batch)
    return -(-n // num_batches), num_batches


def level_indices(cfg: DiffusionConfig, stride: int) -> tuple[int, ...]:
    """Schedule indices of the CEP noise levels: every `stride`-th step, ending at sigma_min.

    The published code uses every 16th of 128 steps (8 levels). We take i = stride-1, 2 stride-1,
    ..., N-1 so the levels reach the least noisy one (sigma_min), where guidance acts last, and
    skip sigma_max, where positives and negatives are both pure noise.
    """
    n = cfg.num_steps
    return tuple(range(min(stride, n) - 1, n, min(stride, n)))


# ----------------------------------------------------------------------------------- helpers


def _heun_step(denoise, guidance, s_noise, x, sigma, sigma_next, gamma, key):
    """EDM Algorithm 2, lines 4-11, with the guidance term added to both slopes."""
    sigma_hat = sigma * (1.0 + gamma)
    noise = jnp.sqrt(jnp.maximum(sigma_hat**2 - sigma**2, 0.0)) * s_noise
    x_hat = x + noise * jax.random.normal(key, x.shape)
    d = _slope(denoise, guidance, x_hat, sigma_hat)
    x_euler = x_hat + (sigma_next - sigma_hat) * d
    # The second-order correction exists only where sigma_next > 0; elsewhere the slope is
    # evaluated at a harmless sigma and discarded, keeping one program for every step.
    last = sigma_next <= 0.0
    d_next = _slope(denoise, guidance, x_euler, jnp.where(last, 1.0, sigma_next))
    x_heun = x_hat + (sigma_next - sigma_hat) * 0.5 * (d + d_next)
    return jnp.where(last, x_euler, x_heun)


def _slope(denoise, guidance, x, sigma):
    d = (x - denoise(x, sigma)) / sigma
    return d if guidance is None else d + guidance(x, sigma)


def _inpaint(x, condition: Condition | None, inpainting: str, sigma, noise: Callable):
    """x with the conditioned dims set to their values, clean or noised to `sigma` by `noise()`
    (sigma = 0, the last step, leaves them clean either way)."""
    if condition is None:
        return x
    values = condition.values
    if inpainting == "noised":
        values = values + sigma * noise()
    return jnp.where(condition.mask > 0, values, x)


def _pad_rows(x, rows):
    return jnp.pad(x, [(0, rows - x.shape[0])] + [(0, 0)] * (x.ndim - 1))


def _condition_rows(condition: Condition | None, b, batch: int) -> Condition | None:
    if condition is None:
        return None
    take = lambda a: jax.lax.dynamic_slice_in_dim(a, b * batch, batch)  # noqa: E731
    mask = condition.mask if condition.mask.ndim == 1 else take(condition.mask)
    return Condition(take(condition.values), mask)


def _check_save_at(save_at, num_steps):
    if list(save_at) != sorted(set(save_at)) or any(not 0 <= i < num_steps for i in save_at):
        raise ValueError(
            f"save_at must be increasing schedule indices in [0, {num_steps}), got {save_at}"
        )

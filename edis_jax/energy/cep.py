"""Contrastive energy prediction (CEP, Lu et al. 2023) for the three EDIS energies.

Positives come from the online data, negatives from the diffusion model, both at the same noise
level sigma taken from the sampler's schedule (DESIGN.md section 2, "CEP training"):

- E_s (state): negatives are unconditional samples; at each level, one softmax over all the
  batch's positives and negatives (a binary online-vs-model classifier in InfoNCE form).
- E_t (transition): K negatives per positive, inpainted on the positive's (s, a); one softmax
  per positive over {positive, K negatives}.
- E_a (policy): K negatives per positive, inpainted on the positive's s; the positive carries the
  current policy's action pi(s); one softmax per positive over 1 + K.

Loss: -log softmax(-E)[positive] (low energy = online distribution).

Negative bank. The chain that makes negatives dominates CEP's cost: drawn afresh at every step,
E_t and E_a need B*K = 2560 chain rows each (plus B for E_s) through 2N - 1 = 255 denoiser
passes, ~34 TFLOP per step at paper size (1024x6, 13 MFLOP per row and pass), 20 steps per
retrain. We draw the negatives once per retrain instead: one unguided chain with
`negative_bank` rows per energy (default 2560 = B*K, i.e. P = bank / K = 256 positive groups)
returns its intermediates at every CEP level at once (`save_at`), and each CEP step resamples
B groups from the bank, each at one level, with fresh positive noise and fresh policy actions.
That is 35x fewer chain rows (7.7k instead of 20 x 5.4k per retrain); what the bank and the
CEP steps cost per retrain is measured by benchmarks/retrain_cost.py (docs/performance.md, "Retrain cost").
The price: E_t/E_a see only P distinct positives per retrain (raise `negative_bank`, or
`bank_refreshes`, for more).

Within a softmax group the conditioned dims of the negatives are set to the positive's noised
values, so the classifier can only tell them apart by the dims the model generated (s' for
E_t; a, r, s' for E_a), which matches how the energies are used: at noised x, with gradients
masked to those dims.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax
from flax import struct

from edis_jax.config.generator_configs import GUIDES, EnergyConfig
from edis_jax.data.buffer import ReplayBuffer
from edis_jax.data.normalizer import TransitionCodec
from edis_jax.data.transition import Transition, vector_slices
from edis_jax.diffusion.sampler import Condition
from edis_jax.energy.model import EnergySet, energy, optimizer

Policy = Callable[[jax.Array, jnp.ndarray], jnp.ndarray]  # (key, raw obs (B, ds)) -> action


class NegativeBank(struct.PyTreeNode):
    """Model samples at the CEP levels, drawn once per retrain. An energy that is not trained
    (not in the guide) has None; `positives` are the raw online transitions that E_t and E_a's
    negatives were inpainted on."""

    sigmas: jnp.ndarray  # (L,) the CEP noise levels
    positives: Transition  # (P,) raw online transitions
    state: jnp.ndarray | None  # (L, M, D) unconditional
    policy: jnp.ndarray | None  # (L, P, K, D) inpainted on s
    transition: jnp.ndarray | None  # (L, P, K, D) inpainted on (s, a)

    @property
    def guide(self) -> tuple[str, ...]:
        return tuple(name for name in GUIDES if getattr(self, name) is not None)


def bank_rows(
    key: jax.Array,
    online: ReplayBuffer,
    codec: TransitionCodec,
    cfg: EnergyConfig,
    guide: tuple[str, ...],
    *,
    heldout: bool = False,
) -> tuple[Transition, Condition]:
    """The bank's positives and the inpainting condition of every chain row to sample.

    Rows, in order: the unconditional rows for E_s, then P*K rows inpainted on (s, a) for E_t,
    then P*K rows inpainted on s for E_a (only the energies in `guide`). A training bank has
    P = negative_bank / K positives from the training rows of `online` and `negative_bank` E_s
    rows; a held-out bank (`heldout`) has P = heldout_groups positives from the held-out rows
    and P*K E_s rows.
    """
    groups = cfg.heldout_groups if heldout else _num_groups(cfg)
    positives = online_rows(online, key, groups, cfg, heldout=heldout)
    obs_dim, act_dim = positives.obs_dim, positives.act_dim
    x = codec.encode(positives)
    slices = vector_slices(obs_dim, act_dim)
    dim = x.shape[-1]
    on = lambda *parts: _dims_mask(dim, [slices[p] for p in parts])  # noqa: E731
    masks = {"state": on(), "transition": on("obs", "action"), "policy": on("obs")}
    state_rows = groups * cfg.num_negatives if heldout else cfg.negative_bank
    values, row_masks = [], []
    for name in _chain_order(guide):
        if name == "state":
            rows = jnp.zeros((state_rows, dim), jnp.float32)
        else:
            rows = jnp.repeat(x, cfg.num_negatives, axis=0)
        values.append(rows)
        row_masks.append(jnp.broadcast_to(masks[name], rows.shape))
    return positives, Condition(jnp.concatenate(values), jnp.concatenate(row_masks))


def online_rows(
    online: ReplayBuffer,
    key: jax.Array,
    n: int,
    cfg: EnergyConfig,
    *,
    heldout: bool,
    window: int = 0,
) -> Transition:
    """n rows drawn uniformly from the training rows of `online` (every row but each
    `holdout_every`-th), or from the held-out rows; `window` > 0 keeps to the latest `window`
    rows. The online buffer never wraps, so row index = arrival order."""
    h = cfg.holdout_every
    size = online.size
    start = jnp.maximum(size - window, 0) if window > 0 else jnp.zeros_like(size)
    if heldout:  # rows h-1, 2h-1, ...: ordinal j is row j*h + h-1
        lo, hi = start // h, size // h
        to_row = lambda j: j * h + h - 1  # noqa: E731
    else:  # the rest: ordinal j is row (j // (h-1)) * h + j % (h-1)
        lo, hi = start - start // h, size - size // h
        to_row = lambda j: (j // (h - 1)) * h + j % (h - 1)  # noqa: E731
    ordinal = jax.random.randint(key, (n,), lo, jnp.maximum(hi, lo + 1))
    rows = jnp.clip(to_row(ordinal), 0, online.capacity - 1)
    return jax.tree.map(lambda store: store[rows], online.data)


def assemble_bank(
    positives: Transition,
    saved: jnp.ndarray,
    sigmas: jnp.ndarray,
    cfg: EnergyConfig,
    guide: tuple[str, ...],
) -> NegativeBank:
    """Split the chain's saved intermediates (L, rows, D), in `bank_rows` order, per energy."""
    groups, k = len(positives), cfg.num_negatives
    conditioned = sum(name != "state" for name in guide)
    state_rows = saved.shape[1] - conditioned * groups * k
    parts, start = {}, 0
    for name in _chain_order(guide):
        n = state_rows if name == "state" else groups * k
        block = saved[:, start : start + n]
        parts[name] = block if name == "state" else block.reshape(len(sigmas), groups, k, -1)
        start += n
    return NegativeBank(
        sigmas, positives, parts.get("state"), parts.get("policy"), parts.get("transition")
    )


def train_chunk(
    es: EnergySet,
    bank: NegativeBank,
    online: ReplayBuffer,
    codec: TransitionCodec,
    policy: Policy,
    key: jax.Array,
    num_steps: int,
) -> tuple[EnergySet, dict[str, jnp.ndarray]]:
    """`num_steps` CEP steps in one `lax.scan` (step t uses fold_in(key, t)); mean metrics."""

    def body(es, _):
        return cep_step(es, bank, online, codec, policy, jax.random.fold_in(key, es.step))

    es, metrics = jax.lax.scan(body, es, None, length=num_steps)
    return es, jax.tree.map(jnp.mean, metrics)


def cep_step(
    es: EnergySet,
    bank: NegativeBank,
    online: ReplayBuffer,
    codec: TransitionCodec,
    policy: Policy,
    key: jax.Array,
) -> tuple[EnergySet, dict[str, jnp.ndarray]]:
    """One Adam step on the summed CEP losses of the energies the bank has negatives for."""
    batch = _cep_batch(bank, online, codec, policy, key, es.config)

    def loss_fn(params):
        metrics = {}
        for name in bank.guide:
            loss, acc = _LOSSES[name](es, params[name], batch[name])
            metrics[f"cep_{name}_loss"], metrics[f"cep_{name}_acc"] = loss, acc
        return sum(metrics[f"cep_{n}_loss"] for n in bank.guide), metrics

    grads, metrics = jax.grad(loss_fn, has_aux=True)(es.params)
    updates, opt_state = optimizer().update(grads, es.opt_state, es.params)
    params = optax.apply_updates(es.params, updates)
    return es.replace(params=params, opt_state=opt_state, step=es.step + 1), metrics


def heldout_accuracy(
    es: EnergySet,
    bank: NegativeBank,
    online: ReplayBuffer,
    codec: TransitionCodec,
    policy: Policy,
    key: jax.Array,
) -> dict[str, jnp.ndarray]:
    """Each energy's accuracy on a held-out bank (`bank_rows(heldout=True)`): positives from
    online rows CEP never trained on, negatives from a chain it never saw, every level."""
    rows = 4 * bank.sigmas.shape[0] * len(bank.positives)
    batch = _cep_batch(bank, online, codec, policy, key, es.config, rows=rows, heldout=True)
    return {
        f"cep_{name}_heldout_acc": _LOSSES[name](es, es.params[name], batch[name])[1]
        for name in bank.guide
    }


def state_softmax_loss(e_pos, e_neg, level_pos, level_neg) -> jnp.ndarray:
    """E_s loss: for each positive, -log softmax(-E)[positive] over all the batch's positives and
    negatives at the same noise level (levels are never mixed in one softmax)."""
    logits = -jnp.concatenate([e_pos, e_neg])
    levels = jnp.concatenate([level_pos, level_neg])
    same = level_pos[:, None] == levels[None, :]
    lse = jax.nn.logsumexp(jnp.where(same, logits[None, :], -jnp.inf), axis=1)
    return jnp.mean(e_pos + lse)


def grouped_softmax_loss(e_pos, e_neg) -> jnp.ndarray:
    """E_t / E_a loss: -log softmax over {positive, its K negatives}; e_pos (B,), e_neg (B, K)."""
    logits = -jnp.concatenate([e_pos[:, None], e_neg], axis=1)
    return -jnp.mean(jax.nn.log_softmax(logits, axis=1)[:, 0])


# ----------------------------------------------------------------------------------- helpers


def _state_loss(es, params, b):
    e_pos = energy(es, "state", b["pos"], b["sigma"], params)
    e_neg = energy(es, "state", b["neg"], b["sigma"], params)
    loss = state_softmax_loss(e_pos, e_neg, b["level"], b["level"])
    return loss, jnp.mean(e_pos < e_neg)  # pairs share a level


def _grouped_loss(name):
    def loss(es, params, b):
        e_pos = energy(es, name, b["pos"], b["sigma"], params)
        e_neg = energy(es, name, b["neg"], b["sigma"][:, None], params)
        return grouped_softmax_loss(e_pos, e_neg), jnp.mean(e_pos < e_neg.min(axis=1))

    return loss


_LOSSES = {
    "state": _state_loss,
    "policy": _grouped_loss("policy"),
    "transition": _grouped_loss("transition"),
}


def _cep_batch(
    bank, online, codec, policy, key, cfg: EnergyConfig, *, rows=None, heldout=False
) -> dict:
    """`rows` (default: the CEP batch size) noised positives and their negatives for each
    trained energy, each row at one level; positives from the training or the held-out rows.

    Levels are balanced over the batch: row i gets level (i + offset) mod L."""
    b, num_levels = rows or cfg.batch_size, bank.sigmas.shape[0]
    obs_dim, act_dim = bank.positives.obs_dim, bank.positives.act_dim
    slices = vector_slices(obs_dim, act_dim)
    out = {}
    for name, k in zip(GUIDES, jax.random.split(key, len(GUIDES)), strict=True):
        if getattr(bank, name) is None:
            continue
        k_level, k_rows, k_noise, k_neg, k_policy = jax.random.split(k, 5)
        level = (jnp.arange(b) + jax.random.randint(k_level, (), 0, num_levels)) % num_levels
        sigma = bank.sigmas[level]
        if name == "state":
            raw = online_rows(online, k_rows, b, cfg, heldout=heldout, window=cfg.recent_window)
        else:
            groups = jax.random.randint(k_rows, (b,), 0, len(bank.positives))
            raw = jax.tree.map(lambda a, g=groups: a[g], bank.positives)
        if name == "policy":
            raw = raw.replace(action=policy(k_policy, raw.obs))
        pos = codec.encode(raw)
        pos = pos + sigma[:, None] * jax.random.normal(k_noise, pos.shape)
        if name == "state":
            neg = bank.state[level, jax.random.randint(k_neg, (b,), 0, bank.state.shape[1])]
        else:
            parts = ("obs", "action") if name == "transition" else ("obs",)
            mask = _dims_mask(pos.shape[-1], [slices[p] for p in parts])
            neg = getattr(bank, name)[level, groups]  # (B, K, D)
            neg = jnp.where(mask > 0, pos[:, None, :], neg)
        out[name] = {"pos": pos, "neg": neg, "sigma": sigma, "level": level}
    return out


def _num_groups(cfg: EnergyConfig) -> int:
    return max(cfg.negative_bank // cfg.num_negatives, 1)


def _chain_order(guide):
    return [name for name in ("state", "transition", "policy") if name in guide]


def _dims_mask(dim, slices) -> jnp.ndarray:
    mask = jnp.zeros((dim,), jnp.float32)
    for s in slices:
        mask = mask.at[s].set(1.0)
    return mask

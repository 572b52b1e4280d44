"""`edis-jax diagnose`: does guided sampling give data the three properties of online data?

EDIS (Liu et al. 2024, Sec. 3 and the distribution analysis of Sec. 5) guides a diffusion model so
that its synthetic transitions (s, a, r, s') have (1) states from the online state distribution,
(2) actions from the current policy and (3) next states from the true dynamics. This module
measures each property for batches generated with no guidance (SynthER), with each energy alone
and with all three:

1. `state_mmd`: squared maximum mean discrepancy between generated and target states, unbiased
   estimator, Gaussian RBF kernel k(x, y) = exp(-|x - y|^2 / (2 h^2)) on states standardised by
   the *target's* mean and std, with the fixed bandwidth h = sqrt(obs_dim) (so two independent
   target states typically have k ~ e^-1). Lower is closer; 0 means the same distribution (the
   unbiased estimate can dip slightly below 0).
2. `action_logprob`: the mean log-likelihood of the generated actions under the policy (the
   agents' `log_prob`). Higher means more on-policy.
3. `dynamics_error`: the mean Euclidean distance |s'_gen - s'_true| in raw observation units,
   where s'_true comes from putting the simulator in the generated state and stepping it with the
   generated action (`true_next_obs`). Lower is better; null where the env is not supported.
   Hopper and Walker2d observe velocities clipped to +-10, so rows at the clip cannot be rebuilt
   exactly: the offline-data reference row shows that floor (about 0.05 on a Hopper medium set,
   where 16% of rows touch the clip).

The generator is trained on the offline data (diffusion) and the target data (energies, by CEP),
once; every guidance setting then samples with the same key. The policy is an agent given by the
caller or, by default, behaviour cloning of the target data (`quick_agent`). Reference rows
measure the offline and target data themselves: what replaying them would score.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from edis_jax import agents, generator
from edis_jax.agents import IQL
from edis_jax.config import RunConfig
from edis_jax.config.generator_configs import GUIDANCE_ROWS, GUIDES
from edis_jax.data import buffer
from edis_jax.data.buffer import Mixture
from edis_jax.data.datasets import load_dataset
from edis_jax.data.minari_store import check_dataset_id
from edis_jax.data.normalizer import Normalizer
from edis_jax.data.transition import Transition
from edis_jax.diagnose import alignment
from edis_jax.envs.simulators import dynamics_error, true_next_obs
from edis_jax.train import generator_phases, loop
from edis_jax.train.directory import RUN_MARKER, is_run_dir, read_config

METRICS = ("state_mmd", "action_logprob", "dynamics_error")


def load_policy(run_dir: str):
    """(algo, agent) of seed 0 of the run in run_dir."""
    run_cfg, state = load_run(run_dir)
    return run_cfg.algo, jax.tree.map(lambda x: x[0], state.agent)


def load_run(run_dir: str):

    return loop.load_run(run_dir)


def check_policy_env(run_dir: str, offline) -> None:
    """Refuse, before any work, a --policy run trained on another env than --dataset's."""

    theirs = load_dataset(read_config(Path(run_dir), "--policy").dataset)
    mine, other = offline.transitions, theirs.transitions
    if (theirs.env_id, other.obs_dim, other.act_dim) != (
        offline.env_id,
        mine.obs_dim,
        mine.act_dim,
    ):
        raise ValueError(
            f"--policy {run_dir} acts in {theirs.env_id} (observations {other.obs_dim}, actions "
            f"{other.act_dim}), --dataset is {offline.env_id} data (observations {mine.obs_dim}, "
            f"actions {mine.act_dim}): give a run of the same env"
        )


def load_target(target: str) -> tuple[Transition, str]:
    """TARGET is a dataset id, or a run directory whose online buffer (seed 0) is the target."""

    if Path(target).is_dir() and not is_run_dir(Path(target)):
        raise ValueError(
            f"--target {target} is a folder but not an edis-jax run (no {RUN_MARKER}): "
            "give a run directory (`edis-jax train --out`) or a dataset id (`edis-jax data list`)"
        )
    if Path(target).exists() and not Path(target).is_dir():
        raise ValueError(
            f"--target {target} is a file: give a run directory (`edis-jax train --out`) or a "
            "dataset id (`edis-jax data list`)"
        )
    if not Path(target).is_dir():
        try:
            check_dataset_id(target)
        except ValueError:
            raise ValueError(
                f"--target {target} is neither a run directory (no such folder) nor a dataset id "
                "(ids look like namespace/name-vN): give the --out of an `edis-jax train` or an "
                "id from `edis-jax data list`"
            ) from None
        data = load_dataset(target)
        return data.transitions, data.env_id
    cfg, state = load_run(target)
    online = jax.tree.map(lambda x: x[0], state.online)
    size = int(online.size)
    if size < 2:
        raise ValueError(f"run {target} has no online data yet: train it into the online phase")
    rows = jax.tree.map(lambda x: x[:size], online.data)
    return rows, load_dataset(cfg.dataset).env_id


def run_diagnose(
    offline: Transition,
    target: Transition,
    env_id: str,
    *,
    config: RunConfig,
    algo: str = "iql",
    agent=None,
    policy_steps: int = 2000,
    n: int = 4096,
    guidance: Sequence[str] = GUIDANCE_ROWS,
    scales: Sequence[float] | None = None,
    retrains: int = 1,
    scale_grid: Sequence[float] = (),
    mmd_rows: int = 2000,
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Train a generator on `offline` with energies for `target`, then measure each guidance.

    The diffusion model's real data is `offline` only. `agent` (of `algo`) is the policy; None
    clones the target's behaviour instead (`quick_agent`, an IQL agent: algo becomes "iql"). Every guidance setting samples with the same key (common random
    numbers), so differences between rows come from the guidance, not from sampling noise.
    Returns {"rows": [...], "reference": [...], "retrain": {...}, "env_id", "n", "algo",
    "scales"}; "reference" measures the offline and the target data themselves (what replaying
    them would give), "retrain" holds the generator's training metrics.
    """

    offline, target = _as_jnp(offline), _as_jnp(target)
    k_agent, k_create, k_retrain, k_sample = jax.random.split(jax.random.PRNGKey(seed), 4)
    if agent is None:
        algo, agent = (
            "iql",
            quick_agent(target, config, k_agent, steps=policy_steps, progress=progress),
        )
    gen = generator.create(
        k_create, offline.obs_dim, offline.act_dim, config.diffusion, config.energy
    )
    if scales is not None:
        gen = gen.replace(scales=jnp.asarray(scales, jnp.float32))
    policy = agents.policy(agent)
    gen, retrain_metrics, timings = train_generator(
        gen, offline, target, policy, k_retrain, retrains, progress
    )

    def measure(batch: Transition, target_obs=target.obs) -> dict:
        return {
            "state_mmd": alignment.state_mmd(batch.obs, target_obs, max_rows=mmd_rows, seed=seed),
            "action_logprob": alignment.action_logprob(agent, batch.obs, batch.action),
            "dynamics_error": dynamics_error(env_id, batch.obs, batch.action, batch.next_obs),
            "n": len(batch),
        }

    rows, batches = [], {}
    for name in guidance:
        batches[name], _ = _generate(guided(gen, name), k_sample, n)
        rows.append({"guidance": name, **_finite(measure(batches[name]))})
    for name in ("state", "policy", "transition", "all") if scale_grid else ():
        for w in scale_grid:
            weights = jnp.full((3,), w, jnp.float32)
            batch, _ = _generate(guided(gen, name).replace(scales=weights), k_sample, n)
            rows.append({"guidance": name, "scale": float(w), **_finite(measure(batch))})
    # The target's own row uses one half of it against the other: shared rows would bias MMD.
    half_a, half_b = _split(target, seed)
    reference = [
        {"data": "offline", **_finite(measure(_take(offline, n, seed)))},
        {"data": "target", **_finite(measure(_take(half_a, n, seed), half_b.obs))},
    ]
    retrain = _finite({k: float(v[0]) for k, v in retrain_metrics.items()})
    aligned = None
    if "transition" in gen.guide:  # on the held-out rows of the last retrain's online data
        online = buffer.from_transitions(target)
        found = jax.jit(alignment.transition_alignment)(gen, online, k_sample)
        aligned = {name: np.asarray(v).tolist() for name, v in found.items()}
        unguided = batches.get("none")  # generated above, or now with the same key
        if unguided is None:
            unguided, _ = _generate(guided(gen, "none"), k_sample, n)
        aligned["model_rows_cos"] = _model_rows_cos(gen, env_id, unguided)
    return {
        "rows": rows,
        "reference": reference,
        "retrain": retrain,  # diffusion loss, CEP losses/accuracies of the energies
        "retrains": retrains,
        "transition_alignment": aligned,  # alignment.transition_alignment, per CEP level
        "timings": timings,  # wall seconds per retrain phase, summed over the retrains
        "env_id": env_id,
        "n": n,
        "algo": algo,
        "scales": [float(w) for w in gen.scales],
    }


def train_generator(gen, offline, target, policy, key, retrains: int, progress: bool):
    """The generator after `retrains` retrains of a run whose online data is `target`: the
    warm-started model's pretraining on `offline` first, then retrain k on the offline data plus
    the first k / retrains of `target` (energies on that part). Buffers keep one capacity so
    that every retrain reuses the compiled programs. Returns (generator, the last retrain's
    metrics, wall seconds per phase)."""
    offline, target = _as_jnp(offline), _as_jnp(target)
    cfg = gen.diffusion_cfg
    if cfg.warm_start and cfg.warm_lr == "continue":
        gen = generator.with_lr_horizon(gen, cfg.initial_steps + retrains * cfg.train_steps)
    gen = _with_seed_axis(gen)
    timings: dict[str, float] = {}
    if cfg.warm_start and cfg.initial_steps > 0:
        t0 = time.perf_counter()
        offline_buffer = _with_seed_axis(buffer.from_transitions(offline))
        gen, _ = generator_phases.pretrain(
            gen, offline_buffer, _with_seed_axis(jax.random.fold_in(key, 0)), progress=progress
        )
        jax.block_until_ready(gen)
        timings["pretrain"] = time.perf_counter() - t0
    metrics = {}
    for k in range(1, retrains + 1):
        part = jax.tree.map(lambda x, k=k: x[: len(target) * k // retrains], target)
        both = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), offline, part)
        real = buffer.from_transitions(both, len(offline) + len(target))
        online = buffer.from_transitions(part, len(target))
        gen, metrics = generator_phases.retrain(
            gen,
            *map(_with_seed_axis, (real, online, policy, jax.random.fold_in(key, k))),
            progress=progress,
            timings=timings,
        )
    return _without_seed_axis(gen), metrics, timings


def guided(gen, name: str):
    """The generator guided as a row of the table says: none, one energy, or all."""
    return gen.replace(guide={"none": (), "all": GUIDES}.get(name, (name,)))


def quick_agent(target: Transition, config: RunConfig, key, *, steps: int, progress=True):
    """Behaviour cloning of `target`: the IQL agent with beta = 0 (every AWR weight is 1) trained
    for `steps` updates. A stand-in for the policy that collected the target data; its Gaussian
    log-std is learned, so `action_logprob` also reflects how noisy that policy was."""

    k_create, k_train = jax.random.split(key)
    agent = IQL.create(
        k_create,
        target.obs_dim,
        target.act_dim,
        config.iql,
        obs_norm=Normalizer.fit(target.obs),
        decay_steps=steps,
    )
    agent = agent.replace(beta=jnp.zeros_like(agent.beta))  # a leaf: no config change needed
    mixture = Mixture.of(buffer.from_transitions(target))
    update = jax.jit(agents.update_chunk, static_argnums=(3, 4))
    done = 0
    with tqdm(total=steps, desc="behaviour cloning", leave=False, disable=not progress) as bar:
        while done < steps:
            size = min(500, steps - done)
            key_chunk = jax.random.fold_in(k_train, done)
            agent, _ = update(agent, mixture, key_chunk, size, config.batch_size)
            done += size
            bar.update(size)
    return agent


def format_table(result: dict) -> str:
    """The rows (and the reference rows) as a fixed-width text table; null prints as n/a."""
    header = f"{'guidance':<14}{'state MMD^2':>14}{'action logp':>14}{'dyn. error':>14}{'n':>8}"
    lines = [f"diagnose {result.get('env_id', '')}: generated vs target data", header]
    lines += [_table_line(_row_label(r), r) for r in result["rows"]]
    if result.get("reference"):
        lines.append("-" * len(header))
        lines += [_table_line(f"({r['data']} data)", r) for r in result["reference"]]
    if result.get("timings"):
        lines.append(
            "seconds per phase (all retrains): "
            + ", ".join(f"{k} {v:.1f}" for k, v in result["timings"].items())
        )
    if result.get("transition_alignment"):
        a = result["transition_alignment"]
        lines.append(
            "E_t's gradient vs the needed s' correction (held-out rows), per CEP level "
            "sigma: cos / rank accuracy (chance {:.3f}): ".format(a["chance"])
            + ", ".join(
                f"{s:.3g}: {c:+.3f} / {r:.3f}"
                for s, c, r in zip(a["sigma"], a["cos"], a["rank_acc"], strict=True)
            )
            + f"; guidance this aligned brings s' at best {100 * a['best_cut']:.1f}% closer to the "
            "true next state"
        )
    if (result.get("transition_alignment") or {}).get("model_rows_cos") is not None:
        lines.append(
            "on the unguided chain's own rows (s'_true from the simulator), cos at the last "
            f"level: {result['transition_alignment']['model_rows_cos']:+.3f}"
        )
    if result.get("retrain"):
        lines.append(
            "retrain: "
            + ", ".join(f"{k}={v:.3g}" for k, v in result["retrain"].items() if v is not None)
        )
    return "\n".join(lines)


# ----------------------------------------------------------------------------- helpers


def _with_seed_axis(tree):
    """A leading seed axis of size 1: the generator's seed phases expect one."""
    return jax.tree.map(lambda x: x[None], tree)


def _without_seed_axis(tree):
    return jax.tree.map(lambda x: x[0], tree)


def _model_rows_cos(gen, env_id: str, rows: Transition) -> float | None:
    """alignment.model_rows_alignment on the unguided `rows` (None without a simulator)."""
    true_next = true_next_obs(env_id, np.asarray(rows.obs), np.asarray(rows.action))
    if true_next is None:
        return None
    ok = np.isfinite(true_next).all(-1)
    rows = jax.tree.map(lambda x: x[ok], rows)
    cos = jax.jit(alignment.model_rows_alignment)(
        gen, rows, jnp.asarray(true_next[ok], jnp.float32)
    )
    return float(cos)


@functools.partial(jax.jit, static_argnums=2)
def _generate(gen, key, n: int) -> tuple[Transition, dict]:

    return generator.generate(gen, key, n)


def _row_label(row: dict) -> str:
    scale = row.get("scale")
    return row["guidance"] if scale is None else f"{row['guidance']} w={scale:g}"


def _table_line(label: str, row: dict) -> str:
    cells = ["n/a" if row[m] is None else f"{row[m]:.4g}" for m in METRICS]
    return f"{label:<14}" + "".join(f"{c:>14}" for c in cells) + f"{row['n']:>8}"


def _finite(row: dict) -> dict:
    """NaN or inf (a diverged sampler) become None: JSON has no NaN."""
    return {
        k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()
    }


def _take(data: Transition, n: int, seed: int) -> Transition:
    """Up to n rows of `data`, a fixed-seed subsample when there are more."""
    if len(data) <= n:
        return data
    idx = np.random.default_rng(seed).choice(len(data), n, replace=False)
    return jax.tree.map(lambda x: x[idx], data)


def _split(data: Transition, seed: int) -> tuple[Transition, Transition]:
    """Two disjoint random halves of `data`."""
    idx = np.random.default_rng(seed).permutation(len(data))
    half = len(data) // 2
    return tuple(jax.tree.map(lambda x, rows=rows: x[rows], data) for rows in np.split(idx, [half]))


def _as_jnp(data: Transition) -> Transition:
    return jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), data)

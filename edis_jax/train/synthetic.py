"""The generator's part of the online phase: pretraining the warm-started diffusion model,
each retrain (generator, fresh synthetic buffer, health record), the published schedule's extra
updates on the synthetic mix, and the oracle arm's simulator relabelling. Each function takes the
run (train/loop.py's _Run) and updates its state and progress."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from edis_jax import agents, envs
from edis_jax.config import to_dict
from edis_jax.data.transition import Transition
from edis_jax.envs import simulators
from edis_jax.storage import checkpoint
from edis_jax.train import generator_phases, sharding
from edis_jax.train import state as S
from edis_jax.train.directory import RunDirError, check_generator_source
from edis_jax.train.health import generator_health
from edis_jax.train.records import check_finite


def pretrain_generator(run) -> None:
    """Train the warm-started diffusion model on the offline data before the first online
    step, or take it from --generator-from (`load_pretrained`) or from the run's own folder
    (`resume_pretrained`); either way keep it in the run's
    pretrained_generator/ folder for other runs. A run that trains no generator (it draws no
    synthetic rows) or starts it cold (no initial steps) pretrains nothing."""
    if not run.trains_generator or run.cfg.diffusion.initial_steps == 0:
        return
    t0 = time.perf_counter()
    kept = False  # the run's own folder already holds it
    if run.pretrained is not None:  # its inputs were checked equal to this run's
        (diffusion, normalizer), host, kept = run.pretrained
        digest = pretraining_digest(run)  # this run's own, for runs that take it from here
        gen = run.state.generator.replace(diffusion=diffusion, normalizer=normalizer)
        wall = host["wall_s"]
        run.pretrained = None
    else:
        digest = pretraining_digest(run)
        keys = S.step_key(run.keys, S.PRETRAIN_STREAM, 0)
        gen, _ = generator_phases.pretrain(
            run.state.generator, run.state.real, keys, progress=run.show
        )
        wall = None
    run.state = run.state.replace(generator=jax.block_until_ready(gen))
    # A shared pretraining counts in every arm's time, as a shared offline phase does.
    wall = time.perf_counter() - t0 if wall is None else wall
    run.progress.wall["generator_pretrain"] = wall
    if not kept:
        host = {"inputs_sha256": digest, "wall_s": wall}
        checkpoint.save(
            run.run_dir, 0, (gen.diffusion, gen.normalizer), host, folder=checkpoint.PRETRAINED_DIR
        )


def pretraining_digest(run, settings_from: Path | None = None) -> str:
    """sha256 of all a pretraining computes from: the diffusion settings, the generator before
    it, the real buffer (the offline data, as scaled for the agent) and the pretraining keys.
    The offline phase changes none of them, so a run can compute it before that phase.

    `settings_from`: the run directory whose digest this is compared with. Only the diffusion
    settings its config.json holds enter the digest: a setting added to edis-jax after that run
    was written is left out (its value is checked separately to be the default, which is what
    the older code did), so that a newer edis-jax still takes the older run's pretraining."""
    gen = run.state.generator
    keys = S.step_key(run.keys, S.PRETRAIN_STREAM, 0)
    diffusion = to_dict(run.cfg)["diffusion"]
    if settings_from is not None:
        written = json.loads((settings_from / "config.json").read_text())["diffusion"]
        diffusion = {name: value for name, value in diffusion.items() if name in written}
    settings = json.dumps(diffusion, sort_keys=True)
    arrays = checkpoint.tree_sha256((gen.diffusion, gen.normalizer, run.state.real, keys))
    return hashlib.sha256((settings + arrays).encode()).hexdigest()


def load_pretrained(run) -> None:
    """Read --generator-from's pretrained generator into run.pretrained, for the online phase's
    start, after checking that it was pretrained on exactly this run's inputs (one line naming
    the settings that differ, if it was not)."""
    source_dir = Path(run.cfg.generator_from)
    differ = check_generator_source(run.cfg)
    try:
        parts, host = _read_pretrained(run, source_dir)
    except checkpoint.CheckpointError:
        if not differ:  # damaged, not different
            raise
        parts, host = None, {}
    # The digest leaves out diffusion settings the source's config.json lacks; a differing
    # diffusion setting, written or not, is refused here.
    diffusion_differs = any(d.startswith("diffusion.") for d in differ)
    if diffusion_differs or host.get("inputs_sha256") != pretraining_digest(run, source_dir):
        what = (
            ", ".join(differ)
            if differ
            else "the settings match, so its dataset files or the edis-jax version differ"
        )
        raise RunDirError(
            f"--generator-from {source_dir}: its generator was pretrained on other inputs "
            f"({what}); runs that share a pretraining must match in them"
        )
    run.pretrained = sharding.shard_seeds(parts), host, False


def resume_pretrained(run) -> None:
    """A run resumed before its online phase began takes the generator pretrained earlier into
    run.pretrained: --generator-from's (checked, as at the start), or else the one it pretrained
    itself before it stopped, if that is intact and its digest is this run's: bitwise what
    pretraining again would give, without its cost. Otherwise the online phase pretrains again."""
    cfg = run.cfg
    if run.progress.online_step > 0 or not run.trains_generator or cfg.diffusion.initial_steps == 0:
        return
    if cfg.generator_from is not None:
        load_pretrained(run)
        return
    if not (run.run_dir / checkpoint.PRETRAINED_DIR).is_dir():
        return
    try:
        parts, host = _read_pretrained(run, run.run_dir)
    except checkpoint.CheckpointError:
        return
    if host.get("inputs_sha256") == pretraining_digest(run, run.run_dir):
        run.pretrained = sharding.shard_seeds(parts), host, True


def _read_pretrained(run, source_dir: Path) -> tuple:
    gen = run.state.generator
    parts, host, _ = checkpoint.restore(
        source_dir, (gen.diffusion, gen.normalizer), folder=checkpoint.PRETRAINED_DIR
    )
    return parts, host


def retrain(run) -> None:
    """Retrain every seed's generator on its data, refill its synthetic buffer, and log the
    generator's health (one record per seed, "event": "retrain"). A run that draws no synthetic
    rows (S.draws_synthetic) only switches its batches to the synthetic mix's real part."""
    cfg, p = run.cfg, run.progress
    weights = S.synthetic_weights(cfg) if S.synthetic_every_update(cfg) else S.real_weights(cfg)
    if not run.trains_generator:
        run.state = run.state.replace(weights=jnp.broadcast_to(weights, (cfg.seeds, 3)))
        p.retrains += 1
        return
    timings: dict[str, float] = {}
    keys = S.step_key(run.keys, S.RETRAIN_STREAM, p.online_step)
    policy = agents.policy(run.state.agent)
    gen, metrics = generator_phases.retrain(
        run.state.generator,
        run.state.real,
        run.state.online,
        policy,
        keys,
        progress=run.show,
        timings=timings,
    )
    keys = S.step_key(run.keys, S.GENERATE_STREAM, p.online_step)
    samples, sample_metrics = generator_phases.generate(
        gen,
        keys,
        cfg.online.num_samples,
        terminal_fn=run.terminal_fn,
        progress=run.show,
        timings=timings,
    )
    check_finite(run.run_dir, "online", p.online_step, {**metrics, **sample_metrics})
    finite = jax.device_get(jax.vmap(all_finite)(samples))  # one flag per seed
    check_finite(
        run.run_dir, "online", p.online_step, {"data": np.where(finite, 0.0, np.nan)},
        what="the retrain's generated (synthetic) data",
    )  # fmt: skip
    if cfg.online.relabel == "simulator":
        t0 = time.perf_counter()
        samples = relabel(samples, run.dataset.env_id, run.actions, cfg.seeds)
        timings["relabel"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    health = generator_health(
        samples, run.state.real, run.state.online, run.dataset.env_id, run.actions
    )
    timings["health"] = time.perf_counter() - t0
    run.state = S.set_synthetic(run.state.replace(generator=gen), samples, weights)
    p.retrains += 1
    for phase, seconds in timings.items():
        p.wall[phase] = p.wall.get(phase, 0.0) + seconds
    run.log("online", p.online_step, {**metrics, **sample_metrics, **health}, None,
            event="retrain")  # fmt: skip


def retrain_step_updates(run) -> None:
    """IQL-EDIS's published schedule: `utd_retrain` agent updates on the synthetic mix right
    after a retrain; every other update keeps drawing real data."""
    cfg, p = run.cfg, run.progress
    seeds = cfg.seeds
    keys = S.step_key(run.keys, S.RETRAIN_UPDATE_STREAM, p.online_step)
    mixed = run.state.replace(weights=jnp.broadcast_to(S.synthetic_weights(cfg), (seeds, 3)))
    mixed, _ = S.update_chunk(
        mixed,
        keys,
        num_updates=cfg.online.utd_retrain,
        batch_size=cfg.batch_size,
    )
    run.state = mixed.replace(weights=jnp.broadcast_to(S.real_weights(cfg), (seeds, 3)))
    p.synthetic_updates += cfg.online.utd_retrain


def relabel(samples: Transition, env_id: str, actions: envs.ActionScale, seeds: int) -> Transition:
    """The oracle arm: s', r and terminal of every synthetic row from the simulator set to
    the row's (s, a). Rows the simulator cannot take (non-finite) keep the model's values."""
    host = jax.device_get(samples)
    next_obs, reward, terminal = (np.array(x) for x in (host.next_obs, host.reward, host.terminal))
    for i in range(seeds):
        sim_next, sim_reward, sim_term = simulators.simulate(
            env_id, host.obs[i], actions.to_env(host.action[i])
        )
        ok = np.isfinite(sim_next).all(-1)
        next_obs[i, ok], reward[i, ok], terminal[i, ok] = (
            sim_next[ok],
            sim_reward[ok],
            sim_term[ok],
        )
    return samples.replace(
        next_obs=jnp.asarray(next_obs, jnp.float32),
        reward=jnp.asarray(reward, jnp.float32),
        terminal=jnp.asarray(terminal, jnp.float32),
    )


def all_finite(tree) -> jax.Array:
    return jnp.all(jnp.stack([jnp.isfinite(x).all() for x in jax.tree.leaves(tree)]))

"""Runs that start from another run (`--init-from`): at the end of its offline phase, or, for an
EDIS arm, at its first generator retrain from a baseline's kept state (`--init-at
first-retrain`), and the baseline's side of that: keeping the state there. Until the first
retrain an EDIS arm trains exactly as its baseline does (the same batches, keys and env steps),
so starting there gives bitwise the straight run's results without repeating those steps.
Each function takes the run (train/loop.py's _Run) and updates its state and progress."""

from __future__ import annotations

import time
from pathlib import Path

import jax

from edis_jax.storage import checkpoint
from edis_jax.train import sharding, synthetic
from edis_jax.train import state as S
from edis_jax.train.directory import read_config
from edis_jax.train.records import Progress, as_dict, write_records_file


def start(run) -> None:
    """Start `run` from its --init-from run, where its --init-at says, and checkpoint it."""
    source_dir = Path(run.cfg.init_from)
    take_offline_phase(run, source_dir)
    if run.cfg.init_at == "first-retrain":
        take_first_retrain(run, source_dir)
    run.save(run.global_step())


def take_offline_phase(run, source_dir: Path) -> None:
    """Take the agent (params, optimiser states, normaliser), the offline evaluations and
    records, and the offline time of `source_dir`'s offline phase, and keep that agent in this
    run's offline checkpoint too. Everything else of the offline phase is the same by
    construction: the buffers hold the offline data and the random streams derive from the
    (shared) seed and step."""
    agent, host, _ = checkpoint.restore(source_dir, run.state.agent, folder=checkpoint.OFFLINE_DIR)
    p = run.progress
    p.phase, p.offline_step = "online", host["offline_step"]
    p.evals = [e for e in host["evals"] if e["phase"] == "offline"]
    p.records = [r for r in host["records"] if r["phase"] == "offline"]
    p.wall["offline"] = host["wall"]["offline"]
    run.state = run.state.replace(agent=sharding.shard_seeds(agent))
    write_records_file(run.run_dir, p.records)
    run.save_offline()


def take_first_retrain(run, source_dir: Path) -> None:
    """Pretrain the generator on the offline data (or take it, --generator-from) as the straight
    run does at online step 0 (a run that draws no synthetic rows trains none), take the
    baseline's agent, buffers, batch mixture, records and time at online step
    --online.retrain-every, and make the retrain that is due there."""
    cfg = run.cfg
    synthetic.pretrain_generator(run)  # on run.state.real: the offline data alone, as at 0
    # The source's state as shapes only: a built one would hold a second copy of the buffers.
    source_cfg = read_config(source_dir)
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    template = jax.tree.map(
        lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=device),
        jax.eval_shape(
            lambda: S.init_state(source_cfg, run.offline, run.reward_scale).replace(
                env=run.state.env  # the same backend's (train/loop.py checked)
            )
        ),
    )
    state, host, _ = checkpoint.restore(source_dir, template, folder=checkpoint.FIRST_RETRAIN_DIR)
    state = sharding.shard_seeds(state)
    run.state = run.state.replace(
        agent=state.agent, real=state.real, online=state.online, weights=state.weights,
        env=state.env,
    )  # fmt: skip
    pretrain_wall = run.progress.wall.get("generator_pretrain")
    run.progress = Progress(**host)
    if pretrain_wall is not None:
        run.progress.wall["generator_pretrain"] = pretrain_wall
    write_records_file(run.run_dir, run.progress.records)
    t0 = time.perf_counter()
    synthetic.retrain(run)
    if not S.synthetic_every_update(cfg):
        synthetic.retrain_step_updates(run)
    run.progress.wall["online"] += time.perf_counter() - t0  # as in the straight run's loop


def keep_first_retrain(run) -> None:
    """A baseline's state at online step --online.retrain-every, for EDIS arms to start from."""
    checkpoint.save(
        run.run_dir, run.global_step(), run.state, as_dict(run.progress),
        folder=checkpoint.FIRST_RETRAIN_DIR,
    )  # fmt: skip


def keeps_first_retrain(run, online_step: int) -> bool:
    """Whether a run keeps its state after `online_step`: a baseline with an offline phase
    (which --init-from needs), at the step where EDIS arms of its schedule first retrain."""
    cfg = run.cfg
    return (
        not run.use_edis
        and cfg.offline_steps > 0
        and online_step == cfg.online.retrain_every < cfg.online_steps
    )

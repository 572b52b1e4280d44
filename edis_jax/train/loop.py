"""The run driver: offline phase, then online phase, for all seeds at once.

The host loop only steps gymnasium, logs and saves; every computation is a jitted, seed-vmapped
call from train/state.py. A run writes into its directory:
  .edis-jax-run   the marker that makes it a run directory (--overwrite deletes nothing else)
  config.json     the resolved RunConfig
  metrics.jsonl   one record per log point per seed (no wall-clock values, so a resumed run
                  writes exactly the records an uninterrupted run writes)
  checkpoints/    orbax checkpoints of the whole run (train/state.RunState + host record),
                  and config.json: the config they were written with (resume checks it)
  summary.json    the scores and timings (DESIGN.md section 4)

How a resumed run restores its environments: the online buffer holds every action taken, in
order, per seed (it never wraps). The vector env is reset with the run's seeds and the recorded
actions are replayed through it, which puts every sub-env (physics, time limit, autoreset RNG)
exactly where the interrupted run left it; the replay checks that the observations match the
stored ones. Evaluation envs are created afresh per evaluation from the evaluation's index.

One writer per run: `train` and `resume` hold an exclusive flock on the run folder itself (the
kernel drops it when the process ends, however it ends), and a second one is refused.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from edis_jax import __version__, agents, checkpoint, envs, generator, sharding
from edis_jax.config import RunConfig, from_dict, to_dict
from edis_jax.data import datasets
from edis_jax.data import scores as reference
from edis_jax.data.transition import Transition
from edis_jax.train import env_step
from edis_jax.train import state as S
from edis_jax.train.health import generator_health
from edis_jax.train.loggers import Loggers


class RunDirError(ValueError):
    """The run directory cannot be used as asked; the message says why and what to do."""


class DivergedError(RuntimeError):
    """Training produced NaN or inf; the run stopped before checkpointing it."""


# Written into every run directory, and only by edis-jax: --overwrite deletes no other folder.
RUN_MARKER = ".edis-jax-run"


@dataclass
class Progress:
    """Host-side record of a run, saved as JSON with every checkpoint."""

    phase: str = "offline"  # offline -> online -> done
    offline_step: int = 0
    online_step: int = 0
    retrains: int = 0
    synthetic_updates: int = 0  # agent updates whose batches held synthetic rows (per seed)
    evals: list = field(default_factory=list)  # {"phase", "step", "returns", "scores"} per eval
    records: list = field(default_factory=list)  # the metrics.jsonl records so far
    wall: dict = field(default_factory=lambda: {"offline": 0.0, "online": 0.0})


# ------------------------------------------------------------------------------- entry points


def train(cfg: RunConfig, *, stop_at_online_step: int | None = None, progress: bool = True):
    """Run `cfg` from scratch into cfg.out. Returns the summary dict.

    A refused start changes nothing on disk: the output path, the --init-from source, the
    dataset, its reference scores and the env are checked first, and the run directory is
    built in a staging folder beside cfg.out that replaces it (an older run, with --overwrite)
    only once the new run has its config.json (and, with --init-from, its first checkpoint).

    `stop_at_online_step` ends the process-side loop early without a final save, as a kill
    would (used by the resume tests).
    """
    run_dir = _check_out(cfg)
    existed = run_dir.is_dir()
    with contextlib.ExitStack() as locks:
        if existed:  # the run --overwrite replaces: nobody may be working in it
            locks.enter_context(_locked(run_dir))
        if cfg.init_from is not None:
            check_offline_source(cfg)
        dataset = _load_dataset(cfg)
        run = _Run(cfg, dataset, run_dir, progress)  # checks the rest; writes nothing
        with _staged(run_dir, existed, locks) as staging:
            run.run_dir = staging  # until the swap
            _write_start(staging, cfg)
            if cfg.init_from is not None:
                run.start_from_offline(Path(cfg.init_from))
        run.run_dir = run_dir
        return run.execute(stop_at_online_step)


def _write_start(run_dir: Path, cfg: RunConfig) -> None:
    """What a run holds before its first checkpoint: enough for `resume` to start it."""
    config = json.dumps(to_dict(cfg), indent=2)
    (run_dir / RUN_MARKER).write_text(f"edis-jax {__version__}\n")
    (run_dir / "config.json").write_text(config)
    (run_dir / checkpoint.CHECKPOINT_DIR).mkdir(exist_ok=True)
    (run_dir / checkpoint.CHECKPOINT_DIR / "config.json").write_text(config)


# What two runs must share for one to start its online phase from the other's offline phase.
OFFLINE_FIELDS = (
    "algo", "dataset", "seeds", "seed", "offline_steps", "batch_size", "eval_every",
    "eval_episodes", "log_every", "checkpoint_every", "ref_min_score", "ref_max_score",
)  # fmt: skip


def check_offline_source(cfg: RunConfig) -> RunConfig:
    """The --init-from run's config, after checking that its offline phase is this run's: the
    same dataset, algorithm, seeds and offline settings (agent config included)."""
    source_dir = Path(cfg.init_from)
    source = read_config(source_dir)
    for name in OFFLINE_FIELDS:
        mine, theirs = getattr(cfg, name), getattr(source, name)
        if mine != theirs:
            raise RunDirError(
                f"--init-from {source_dir}: its {name} is {theirs!r}, this run's is {mine!r}; "
                "arms that share an offline phase must match in it"
            )
    if to_dict(cfg)[cfg.algo] != to_dict(source)[cfg.algo]:
        raise RunDirError(
            f"--init-from {source_dir}: its {cfg.algo} agent settings differ from this run's "
            f"(--{cfg.algo}.*); arms that share an offline phase must match in them"
        )
    if cfg.offline_steps == 0:
        raise RunDirError("--init-from needs an offline phase to share: --offline-steps is 0")
    if not (source_dir / checkpoint.OFFLINE_DIR).is_dir():
        raise RunDirError(
            f"--init-from {source_dir}: it has not finished its offline phase (no "
            f"{checkpoint.OFFLINE_DIR}/ folder); finish or resume it first"
        )
    return source


def resume(run_dir: str | Path, *, stop_at_online_step: int | None = None, progress: bool = True):
    """Continue the run in `run_dir` from its latest checkpoint (from its start if it was
    stopped before its first one). Returns the summary dict."""
    run_dir = Path(run_dir)
    cfg = read_config(run_dir)
    with _locked(run_dir):
        _check_checkpoints_match(run_dir, cfg)
        dataset = _load_dataset(cfg)
        run = _Run(cfg, dataset, run_dir, progress)
        if checkpoint.latest_step(run_dir) is not None:
            run.restore()
        else:
            checkpoint.notice(
                f"{run_dir} was stopped before its first checkpoint: starting it from the "
                "beginning with its config.json"
            )
            run._write_records_file()
            if cfg.init_from is not None:
                run.start_from_offline(Path(cfg.init_from))
        return run.execute(stop_at_online_step)


def _check_checkpoints_match(run_dir: Path, cfg: RunConfig) -> None:
    """Refuse a run whose checkpoints are missing or were written under another config."""
    ckpt_dir = run_dir / checkpoint.CHECKPOINT_DIR
    if not ckpt_dir.is_dir():
        raise RunDirError(
            f"{run_dir} has no {checkpoint.CHECKPOINT_DIR}/ folder, so there is nothing to "
            f"resume from: restore the folder, or start the run again with `edis-jax train "
            f"--out {run_dir} --overwrite`"
        )
    written = ckpt_dir / "config.json"
    if not written.is_file():  # runs made before the checkpoints kept their config
        return
    differ = [
        f"{name} {theirs!r} -> {mine!r}"
        for name, theirs, mine in _config_diff(
            json.loads(written.read_text()), json.loads(json.dumps(to_dict(cfg)))
        )
        if name not in ("out", "overwrite")
    ]
    if differ:
        raise RunDirError(
            f"{run_dir}/config.json no longer matches the config its checkpoints were written "
            f"with ({', '.join(differ)}): put those values back (they are in "
            f"{written}), or start a new run with `edis-jax train`"
        )


def _config_diff(old: dict, new: dict, prefix: str = ""):
    """(dotted name, old value, new value) for every field that differs."""
    for name in sorted(set(old) | set(new)):
        a, b = old.get(name), new.get(name)
        if isinstance(a, dict) and isinstance(b, dict):
            yield from _config_diff(a, b, f"{prefix}{name}.")
        elif a != b:
            yield f"{prefix}{name}", a, b


@contextlib.contextmanager
def _locked(run_dir: Path):
    """Hold an exclusive lock on the run folder, or refuse with one line."""
    fd = os.open(run_dir, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise _in_use(run_dir) from None
        yield
    finally:
        os.close(fd)


def _in_use(run_dir: Path) -> RunDirError:
    return RunDirError(
        f"{run_dir} is in use by another `edis-jax train` or `resume`: wait for it to end (or "
        "stop it) first; one run folder takes one writer"
    )


def load_run(run_dir: str | Path):
    """A run's config and its latest checkpointed RunState (leading seed axis), read-only: for
    diagnostics and notebooks. Nothing in the run directory changes."""
    run_dir = Path(run_dir)
    cfg = read_config(run_dir)
    run = _Run(cfg, _load_dataset(cfg), run_dir, progress=False)
    state, _, _ = checkpoint.restore(run_dir, run.state)
    return cfg, state


def read_config(run_dir: Path) -> RunConfig:
    """The config.json of a run directory, or one line saying why it is not one."""
    config_file = run_dir / "config.json"
    if not config_file.is_file():
        raise RunDirError(
            f"{run_dir} is not a run directory (no config.json): give the --out of an earlier "
            "`edis-jax train`"
        )
    try:
        data = json.loads(config_file.read_text())
    except json.JSONDecodeError as e:
        raise RunDirError(
            f"{config_file} is not valid JSON ({e}): restore it, or start the run again with "
            "--overwrite"
        ) from None
    return from_dict(data)


def is_run_dir(path: Path) -> bool:
    """Whether `path` is an edis-jax run directory: it holds the marker, or (runs made before
    the marker) config.json, metrics.jsonl and checkpoints/ together."""
    legacy = ("config.json", "metrics.jsonl")
    return (path / RUN_MARKER).is_file() or (
        all((path / name).is_file() for name in legacy)
        and (path / checkpoint.CHECKPOINT_DIR).is_dir()
    )


def _check_out(cfg: RunConfig) -> Path:
    """The absolute --out path, after refusing one that train cannot build a run in or must not
    replace. Touches nothing."""
    out, run_dir = cfg.out, Path(os.path.abspath(cfg.out))
    if run_dir.exists() and not run_dir.is_dir():
        raise RunDirError(f"--out {out} is a file: give a folder path for --out")
    if run_dir.is_dir() and any(run_dir.iterdir()):
        if not cfg.overwrite:
            raise RunDirError(
                f"run directory {out} already exists: pass --overwrite to replace it, "
                f"`edis-jax resume {out}` to continue it, or choose another --out"
            )
        if not is_run_dir(run_dir):
            raise RunDirError(
                f"{out} exists and is not an edis-jax run directory (no {RUN_MARKER}): refusing "
                "to delete it even with --overwrite; choose another --out"
            )
    if Path.cwd() == run_dir or run_dir in Path.cwd().parents:
        raise RunDirError(
            f"--out {out} holds the current directory, which a new run would replace: run "
            "from outside it"
        )
    # The staging folder goes beside run_dir: the nearest existing folder above must take it.
    above = next(p for p in run_dir.parents if p.exists())
    if not above.is_dir():
        raise RunDirError(f"--out {out} lies below {above}, a file: choose another --out")
    if not os.access(above, os.W_OK | os.X_OK):
        raise RunDirError(
            f"--out {out}: cannot write in {above} (no permission or a read-only disk); "
            "choose a writable --out"
        )
    return run_dir


@contextlib.contextmanager
def _staged(run_dir: Path, existed: bool, locks: contextlib.ExitStack):
    """A new folder beside `run_dir` to build a run in, locked until `locks` closes (the lock
    moves with the folder). On success it takes run_dir's place (an old run_dir is renamed
    away, the new one renamed in, the old one deleted); on failure it is deleted, and run_dir
    and the folders above it are as they were."""
    created = [p for p in reversed(run_dir.parents) if not p.exists()]  # outermost first
    # One staging name per --out: whoever locks it owns the --out until its run is swapped in,
    # so two `train`s into the same new --out cannot both start. An unlocked folder of that
    # name is a leftover of a killed start, which this one takes over.
    staging = run_dir.with_name(f"{run_dir.name}.staging")
    old = run_dir.with_name(f"{run_dir.name}.replaced-{os.getpid()}")
    owned = moved_away = False
    try:
        for folder in created:
            folder.mkdir(exist_ok=True)  # another start into the same folders may make them
        locks.callback(os.close, _claim(staging, run_dir))
        owned = True
        if run_dir.is_dir() != existed:  # another start swapped its run in after our checks
            raise _in_use(run_dir)
        for leftover in staging.iterdir():
            if leftover.is_dir() and not leftover.is_symlink():
                shutil.rmtree(leftover)
            else:
                leftover.unlink()
        yield staging
        if run_dir.exists():
            shutil.rmtree(old, ignore_errors=True)
            run_dir.rename(old)
            moved_away = True
        staging.rename(run_dir)
    except BaseException:
        if moved_away and not run_dir.exists():
            old.rename(run_dir)
        if owned:
            shutil.rmtree(staging, ignore_errors=True)
        for folder in reversed(created):
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    shutil.rmtree(old, ignore_errors=True)


def _claim(staging: Path, run_dir: Path) -> int:
    """Make (or take over) the staging folder and lock it; the open descriptor holds the lock.
    Refused with one line while another start holds it."""
    for _ in range(3):
        with contextlib.suppress(FileExistsError):
            staging.mkdir()
        try:
            fd = os.open(staging, os.O_RDONLY)
        except FileNotFoundError:  # deleted by a failed start between mkdir and open
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise _in_use(run_dir) from None
        # A failed start deletes its staging folder before unlocking it: ours must still be
        # the folder of that name.
        with contextlib.suppress(FileNotFoundError):
            if os.stat(staging).st_ino == os.fstat(fd).st_ino:
                return fd
        os.close(fd)
    raise _in_use(run_dir)


# -------------------------------------------------------------------------------------- run


class _Run:
    def __init__(self, cfg: RunConfig, dataset, run_dir: Path, progress: bool):
        self.cfg, self.dataset, self.run_dir, self.show = cfg, dataset, run_dir, progress
        self.ref = _reference_scores(cfg, dataset)
        self.keys = sharding.shard_seeds(S.seed_keys(cfg))
        self.actions = envs.ActionScale(dataset.env_id)
        offline = dataset.transitions.replace(
            action=self.actions.to_unit(np.asarray(dataset.transitions.action))
        )
        self.reward_scale = _reward_scale(cfg, dataset)
        self.return_shift, self.fail_reward = _return_options(cfg, self.reward_scale, self.ref)
        if self.return_shift or self.fail_reward is not None:
            offline = offline.replace(
                mc_return=datasets.dataset_returns_to_go(
                    dataset,
                    cfg.agent.discount,
                    shift=self.return_shift,
                    fail_reward=self.fail_reward,
                )
            )
        # With several devices the seed axis is split across them; one device: unchanged.
        self.state = sharding.shard_seeds(S.init_state(cfg, offline, self.reward_scale))
        self.progress = Progress()
        self.loggers = Loggers(cfg.log, to_dict(cfg))  # --log: beside metrics.jsonl
        self.use_edis = cfg.edis and cfg.online_steps > 0
        self.terminal_fn = envs.termination_fn(dataset.env_id)
        if cfg.online.relabel == "simulator" and not envs.can_simulate(dataset.env_id):
            raise RunDirError(
                f"--online.relabel simulator needs an env whose simulator can be set to an "
                f"observation (MuJoCo locomotion, Pendulum, AntMaze); {dataset.env_id} is not one: "
                "use --online.relabel none"
            )

    # ----------------------------------------------------------------------- checkpoints

    def save(self, step: int) -> None:
        checkpoint.save(self.run_dir, step, self.state, _asdict(self.progress))

    def start_from_offline(self, source_dir: Path) -> None:
        """Take the agent (params, optimiser states, normaliser), the offline evaluations and
        records, and the offline time of `source_dir`'s offline phase, and checkpoint them here.
        Everything else of the offline phase is the same by construction: the buffers hold the
        offline data and the random streams derive from the (shared) seed and step."""
        agent, host, _ = checkpoint.restore(
            source_dir, self.state.agent, folder=checkpoint.OFFLINE_DIR
        )
        p = self.progress
        p.phase, p.offline_step = "online", host["offline_step"]
        p.evals = [e for e in host["evals"] if e["phase"] == "offline"]
        p.records = [r for r in host["records"] if r["phase"] == "offline"]
        p.wall["offline"] = host["wall"]["offline"]
        self.state = self.state.replace(agent=sharding.shard_seeds(agent))
        self._write_records_file()
        self.save(self._global_step())
        self.save_offline()

    def save_offline(self) -> None:
        """Keep the agent at the end of the offline phase (for `--init-from`) in its own folder,
        which the rolling checkpoints never delete."""
        checkpoint.save(
            self.run_dir, self._global_step(), self.state.agent, _asdict(self.progress),
            folder=checkpoint.OFFLINE_DIR,
        )  # fmt: skip

    def restore(self) -> None:
        self.state, host, _ = checkpoint.restore(self.run_dir, self.state)
        self.progress = Progress(**host)
        # metrics.jsonl may hold records written after the checkpoint: rewrite it from the
        # checkpoint so that the resumed run appends exactly what a straight run would.
        self._write_records_file()

    def _global_step(self) -> int:
        return self.progress.offline_step + self.progress.online_step

    # ------------------------------------------------------------------------- phases

    def execute(self, stop_at_online_step: int | None) -> dict | None:
        if self.progress.phase == "offline":
            self.offline_phase()
        if self.progress.phase == "online":
            finished = self.online_phase(stop_at_online_step)
            if not finished:
                return None
        summary = self.summary()
        (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        return summary

    def offline_phase(self) -> None:
        cfg, p = self.cfg, self.progress
        bar = self._bar(cfg.offline_steps, p.offline_step, "offline updates")
        t0 = time.perf_counter() - p.wall["offline"]
        while p.offline_step < cfg.offline_steps:
            n = min(
                cfg.log_every - p.offline_step % cfg.log_every, cfg.offline_steps - p.offline_step
            )
            keys = S.step_key(self.keys, S.OFFLINE_STREAM, p.offline_step)
            self.state, metrics = S.update_chunk(
                self.state, keys, num_updates=n, batch_size=cfg.batch_size
            )
            metrics = jax.device_get(metrics)
            self._check_finite("offline", p.offline_step + n, metrics)
            before, p.offline_step = p.offline_step, p.offline_step + n
            done = p.offline_step == cfg.offline_steps
            evaluated = self._crossed(before, p.offline_step, cfg.eval_every) or done
            scores = self.evaluate("offline", p.offline_step) if evaluated else None
            self._log("offline", p.offline_step, metrics, scores)
            bar.update(n)
            if scores is not None:
                bar.set_postfix(score=f"{np.mean(scores):.1f}")
            p.wall["offline"] = time.perf_counter() - t0
            if done:
                p.phase = "online" if cfg.online_steps > 0 else "done"
                self.save_offline()
            if done or self._crossed(before, p.offline_step, cfg.checkpoint_every):
                self.save(self._global_step())
        bar.close()
        if p.phase == "offline":  # zero offline steps
            p.phase = "online" if cfg.online_steps > 0 else "done"

    def online_phase(self, stop_at: int | None) -> bool:
        cfg, p = self.cfg, self.progress
        algo, o = cfg.algo, cfg.online
        vec_env = envs.make_vector_env(self.dataset.env_id, cfg.seeds, self.dataset.env_kwargs)
        obs, episodes = self._restore_envs(vec_env)
        if p.online_step == 0:
            self.state = S.with_online_phase(self.state, S.real_weights(cfg))
            if self.use_edis and cfg.diffusion.initial_steps > 0:
                self.pretrain_generator()
            if not p.evals or p.evals[-1]["phase"] != "offline":
                self._log("online", 0, None, self.evaluate("online", 0))
        random_steps = cfg.sac.start_steps if (algo == "sac" and cfg.offline_steps == 0) else 0
        bar = self._bar(cfg.online_steps, p.online_step, "online steps")
        t0 = time.perf_counter() - p.wall["online"]
        # The observation acted on and its action live on the device; one call per env step.
        obs = jnp.asarray(obs, jnp.float32)
        action = None  # drawn by S.choose_action at the start and after an agent change
        while p.online_step < cfg.online_steps:
            if stop_at is not None and p.online_step >= stop_at:
                vec_env.close()
                return False
            t = p.online_step
            if action is None:
                action = S.choose_action(
                    self.state.agent, obs, self.keys, np.int32(t), t < random_steps
                )
            next_obs, reward, terminated, truncated, info = vec_env.step(
                self.actions.to_env(np.asarray(action))
            )
            ended = terminated | truncated
            final_obs = _final_observations(next_obs, ended, info)
            self.state, obs, action, metrics = S.online_step(
                self.state,
                obs,
                action,
                env_step.env_row(next_obs, final_obs, reward, terminated),
                self.keys,
                np.int32(t),
                t + 1 < random_steps,
                utd=o.utd,
                batch_size=cfg.batch_size,
            )
            if self.use_edis and p.retrains > 0 and S.synthetic_every_update(cfg):
                p.synthetic_updates += o.utd  # this step's updates drew the synthetic mix
            finished = episodes.step(t, reward, ended)
            if finished is not None:
                self.state = S.write_returns(self.state, *finished)
            p.online_step = t = t + 1
            bar.update(1)

            scores = None
            evaluating = t % cfg.eval_every == 0 or t == cfg.online_steps
            if evaluating or t % cfg.log_every == 0 or t % cfg.checkpoint_every == 0:
                metrics = jax.device_get(metrics)  # fetched here anyway, to log or to save
                self._check_finite("online", t, metrics)
            if evaluating:
                scores = self.evaluate("online", t)
                bar.set_postfix(score=f"{np.mean(scores):.1f}")
            if t % cfg.log_every == 0 or scores is not None:
                self._log("online", t, metrics, scores, train_return=episodes.last_return)
            if self.use_edis and S.retrain_due(cfg, t):
                self.retrain()
                if not S.synthetic_every_update(cfg):
                    self.retrain_step_updates()
                    action = None  # the agent changed after online_step drew it
            p.wall["online"] = time.perf_counter() - t0
            if t % cfg.checkpoint_every == 0 or t == cfg.online_steps:
                if t == cfg.online_steps:
                    p.phase = "done"
                self.save(self._global_step())
        bar.close()
        vec_env.close()
        p.phase = "done"
        return True

    def pretrain_generator(self) -> None:
        """Train the warm-started diffusion model on the offline data before the first online
        step. Not checkpointed on its own: a run killed before its first online checkpoint
        redoes it with the same keys."""
        t0 = time.perf_counter()
        keys = S.step_key(self.keys, S.PRETRAIN_STREAM, 0)
        gen, _ = generator.pretrain_with_progress(
            self.state.generator, self.state.real, keys, progress=self.show
        )
        self.state = self.state.replace(generator=jax.block_until_ready(gen))
        self.progress.wall["generator_pretrain"] = time.perf_counter() - t0

    def retrain(self) -> None:
        """Retrain every seed's generator on its data, refill its synthetic buffer, and log the
        generator's health (one record per seed, "event": "retrain")."""
        cfg, p = self.cfg, self.progress
        timings: dict[str, float] = {}
        keys = S.step_key(self.keys, S.RETRAIN_STREAM, p.online_step)
        policy = agents.policy(self.state.agent)
        gen, metrics = generator.retrain_with_progress(
            self.state.generator,
            self.state.real,
            self.state.online,
            policy,
            keys,
            progress=self.show,
            timings=timings,
        )
        t0 = time.perf_counter()
        keys = S.step_key(self.keys, S.GENERATE_STREAM, p.online_step)
        samples, sample_metrics = generator.generate_with_progress(
            gen,
            keys,
            cfg.online.num_samples,
            terminal_fn=self.terminal_fn,
            progress=self.show,
        )
        timings["generate"] = _elapsed(t0, samples)
        self._check_finite("online", p.online_step, {**metrics, **sample_metrics})
        finite = jax.device_get(jax.vmap(_all_finite)(samples))  # one flag per seed
        self._check_finite(
            "online", p.online_step, {"data": np.where(finite, 0.0, np.nan)},
            what="the retrain's generated (synthetic) data",
        )  # fmt: skip
        if cfg.online.relabel == "simulator":
            t0 = time.perf_counter()
            samples = self._relabel(samples)
            timings["relabel"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        health = generator_health(
            samples, self.state.real, self.state.online, self.dataset.env_id, self.actions
        )
        timings["health"] = time.perf_counter() - t0
        weights = S.synthetic_weights(cfg) if S.synthetic_every_update(cfg) else S.real_weights(cfg)
        self.state = S.set_synthetic(self.state.replace(generator=gen), samples, weights)
        p.retrains += 1
        for phase, seconds in timings.items():
            p.wall[phase] = p.wall.get(phase, 0.0) + seconds
        self._log("online", p.online_step, {**metrics, **sample_metrics, **health}, None,
                  event="retrain")  # fmt: skip

    def retrain_step_updates(self) -> None:
        """IQL-EDIS's published schedule: `utd_retrain` agent updates on the synthetic mix right
        after a retrain; every other update keeps drawing real data."""
        cfg, p = self.cfg, self.progress
        seeds = cfg.seeds
        keys = S.step_key(self.keys, S.RETRAIN_UPDATE_STREAM, p.online_step)
        mixed = self.state.replace(weights=jnp.broadcast_to(S.synthetic_weights(cfg), (seeds, 3)))
        mixed, _ = S.update_chunk(
            mixed,
            keys,
            num_updates=cfg.online.utd_retrain,
            batch_size=cfg.batch_size,
        )
        self.state = mixed.replace(weights=jnp.broadcast_to(S.real_weights(cfg), (seeds, 3)))
        p.synthetic_updates += cfg.online.utd_retrain

    def _relabel(self, samples: Transition) -> Transition:
        """The oracle arm: s', r and terminal of every synthetic row from the simulator set to
        the row's (s, a). Rows the simulator cannot take (non-finite) keep the model's values."""
        host = jax.device_get(samples)
        next_obs, reward, terminal = (
            np.array(x) for x in (host.next_obs, host.reward, host.terminal)
        )
        for i in range(self.cfg.seeds):
            sim_next, sim_reward, sim_term = envs.simulate(
                self.dataset.env_id, host.obs[i], self.actions.to_env(host.action[i])
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

    # -------------------------------------------------------------------- evaluation

    def evaluate(self, phase: str, step: int) -> np.ndarray:
        """Normalised score per seed (mean over cfg.eval_episodes deterministic episodes)."""
        cfg = self.cfg
        index = len(self.progress.evals)
        agent = self.state.agent

        def policy(obs):
            action = S.greedy_action(agent, jnp.asarray(obs, jnp.float32))
            return self.actions.to_env(np.asarray(action))

        returns, successes = envs.episode_outcomes(
            policy, self.dataset.env_id, cfg.seeds, cfg.eval_episodes,
            seed=_eval_seed(cfg, index), env_kwargs=self.dataset.env_kwargs,
        )  # fmt: skip
        mean_returns = np.asarray(returns, np.float64).mean(axis=1)
        entry = {"phase": phase, "step": step, "returns": mean_returns.tolist()}
        if reference.scored_by_success(self.dataset.env_id):
            # AntMaze: the success rate, normalised with (0, 1) (data/scores.py).
            success_rates = successes.mean(axis=1, dtype=np.float64)
            scores = scores_of(success_rates, self.ref)
            entry["success_rates"] = success_rates.tolist()
        else:
            scores = scores_of(mean_returns, self.ref)
        entry["scores"] = scores.tolist()
        self.progress.evals.append(entry)
        return scores

    # ----------------------------------------------------------------------- logging

    def _log(self, phase, step, metrics, scores, train_return=None, event=None) -> None:
        metrics = {} if metrics is None else jax.device_get(metrics)
        records = []
        for i in range(self.cfg.seeds):
            record = {"phase": phase, "step": int(step), "seed": i}
            if event is not None:
                record.update(event=event, retrain=self.progress.retrains)
            record.update({k: _json_float(np.asarray(v)[i]) for k, v in sorted(metrics.items())})
            if scores is not None:
                record["eval_return"] = _json_float(self.progress.evals[-1]["returns"][i])
                if "success_rates" in self.progress.evals[-1]:
                    record["eval_success_rate"] = self.progress.evals[-1]["success_rates"][i]
                record["eval_score"] = _json_float(scores[i])
            if train_return is not None:
                record["train_return"] = _json_float(train_return[i])
            records.append(record)
        self.progress.records.extend(records)
        with open(self.run_dir / "metrics.jsonl", "a") as f:
            for record in records:
                f.write(json.dumps(record) + "\n")
        self.loggers.write(self.run_dir, records)

    def _write_records_file(self) -> None:
        # Written aside and renamed in: a full disk leaves the old file whole.
        path = self.run_dir / "metrics.jsonl"
        tmp = path.with_name(f"{path.name}.tmp")
        try:
            with open(tmp, "w") as f:
                for record in self.progress.records:
                    f.write(json.dumps(record) + "\n")
            tmp.replace(path)
        finally:
            tmp.unlink(missing_ok=True)

    def _check_finite(self, phase: str, step: int, metrics, what: str = "") -> None:
        """Stop, before anything is logged or checkpointed, when a training metric (losses,
        values: host copies of a log point's metrics) or generated data is NaN or inf. Costs
        nothing extra: only metrics fetched for logging or saving are checked."""
        bad = sorted(
            (name, i)
            for name, value in (metrics or {}).items()
            if name not in _MAY_BE_NAN
            for i in np.flatnonzero(~np.isfinite(np.asarray(value, np.float64).reshape(-1)))
        )
        if not bad:
            return
        names = ", ".join(dict.fromkeys(name for name, _ in bad))
        seeds = sorted({int(i) for _, i in bad})
        last = checkpoint.latest_step(self.run_dir)
        kept = "no checkpoint yet" if last is None else f"the last checkpoint (step {last})"
        raise DivergedError(
            f"training diverged: {what or names} became NaN or inf for seed(s) {seeds} at "
            f"{phase} step {step}; stopped before saving, {kept} is intact: lower the learning "
            "rates (or check the data and reward scale), then start again with --overwrite"
        )

    def _bar(self, total: int, initial: int, desc: str):
        return tqdm(
            total=total,
            initial=initial,
            desc=desc,
            disable=not self.show or total == 0,
            unit="step",
            dynamic_ncols=True,
        )

    @staticmethod
    def _crossed(before: int, after: int, every: int) -> bool:
        return after // every > before // every

    # -------------------------------------------------------------------- environments

    def _restore_envs(self, vec_env):
        """Reset the sub-envs with the run's seeds and replay the recorded online actions."""
        cfg, p = self.cfg, self.progress
        obs, _ = vec_env.reset(seed=[_train_seed(cfg, i) for i in range(cfg.seeds)])
        episodes = _Episodes(cfg.seeds, cfg.agent.discount, self.return_shift, self.fail_reward)
        if p.online_step == 0:
            return obs, episodes
        stored = jax.device_get(self.state.online.data)
        for t in tqdm(range(p.online_step), desc="replaying env", disable=not self.show):
            if not np.array_equal(np.asarray(obs, np.float32), stored.obs[:, t]):
                raise checkpoint.CheckpointError(
                    f"replaying the environment diverged at online step {t}: the env is not "
                    "deterministic under its seed (or mujoco changed version), so this run "
                    "cannot be resumed exactly; start it again with --overwrite"
                )
            obs, reward, terminated, truncated, _ = vec_env.step(
                self.actions.to_env(stored.action[:, t])
            )
            # Returns of episodes that ended before the checkpoint are in its buffers already.
            episodes.step(t, reward, terminated | truncated)
        return obs, episodes

    # --------------------------------------------------------------------------- summary

    def summary(self) -> dict:
        cfg, p = self.cfg, self.progress
        offline = [e for e in p.evals if e["phase"] == "offline"]
        offline_eval = offline[-1] if offline else p.evals[0]
        all_scores = np.array([e["scores"] for e in p.evals])  # (evals, seeds)
        online_scores = np.array([e["scores"] for e in p.evals if e["phase"] == "online"])
        env_steps = cfg.online_steps * cfg.seeds
        updates = (cfg.offline_steps + cfg.online_steps * cfg.online.utd) * cfg.seeds
        # Generator phases (pretraining, and inside the online time, each retrain phase) are
        # broken out beside offline / online / total.
        total = p.wall["offline"] + p.wall["online"] + p.wall.get("generator_pretrain", 0.0)
        wall = {**p.wall, "total": total}
        return {
            "algo": cfg.algo,
            "edis": bool(self.use_edis),
            "guide": list(cfg.guide) if self.use_edis else [],
            "dataset": cfg.dataset,
            "env_id": self.dataset.env_id,
            "seeds": cfg.seeds,
            "preset": cfg.preset,
            "offline_steps": cfg.offline_steps,
            "online_steps": cfg.online_steps,
            "offline_score": _stats(offline_eval["scores"]),
            "final_score": _stats(p.evals[-1]["scores"]),
            # Area under the online learning curve: the score averaged over online evaluations.
            "auc_score": _stats(online_scores.mean(axis=0)) if len(online_scores) else None,
            "best_score": _stats(all_scores.max(axis=0)),
            "wall_time_s": wall,
            # all seeds together; the online phase's time includes generator retrains
            "env_steps_per_s": env_steps / p.wall["online"] if p.wall["online"] > 0 else None,
            "updates_per_s": updates / wall["total"] if wall["total"] > 0 else None,
            "retrains": p.retrains,
            "synthetic_updates": p.synthetic_updates,
        }


class _Episodes:
    """The running episode of each seed's sub-env: its return (for train_return) and its
    rewards, whose discounted returns-to-go become the online transitions' mc_return (Cal-QL's
    calibration bound) once it ends. Until then those rows keep mc_return 0, and a time-limit
    truncation counts as zero future, as for the offline data (datasets.returns_to_go)."""

    PAD = 1 << 30  # a row index past any buffer's end: write_returns ignores it

    def __init__(self, seeds: int, discount: float, shift: float = 0.0, fail_reward=None):
        self.discount, self.shift, self.fail_reward = discount, shift, fail_reward
        self.rewards: list[list[float]] = [[] for _ in range(seeds)]
        self.last_return = np.full(seeds, np.nan)  # of the latest finished episode

    def step(self, t: int, reward, ended) -> tuple[np.ndarray, np.ndarray] | None:
        """Record online step t; for the episodes it ends, (steps, returns) of shape (seeds, n)
        for state.write_returns, padded with PAD (None when no episode ended)."""
        done = []
        for i, (r, end) in enumerate(zip(reward, ended, strict=True)):
            self.rewards[i].append(float(r))
            if end:
                self.last_return[i] = sum(self.rewards[i])
                # The episode's first transition was online step t + 1 - its length.
                done.append((i, t + 1 - len(self.rewards[i]), np.asarray(self.rewards[i])))
                self.rewards[i] = []
        if not done:
            return None
        # Widths rounded up to a power of two: a handful of compiled shapes per run.
        width = 1 << max(len(r) for _, _, r in done).bit_length()
        steps = np.full((len(ended), width), self.PAD, np.int32)
        returns = np.zeros((len(ended), width), np.float32)
        for i, start, rewards in done:
            n, no_end = len(rewards), np.zeros(len(rewards), bool)
            steps[i, :n] = start + np.arange(n)
            returns[i, :n] = datasets.returns_to_go(
                rewards,
                no_end,
                no_end,
                self.discount,
                shift=self.shift,
                fail_reward=self.fail_reward,
            )
        return steps, returns


# ----------------------------------------------------------------------------- helpers


def scores_of(returns, ref: tuple[float, float]) -> np.ndarray:
    return np.asarray(reference.normalized_score(returns, *ref), np.float64)


# Metrics that are NaN by design: no diffusion training chunk ran (a pretrained, warm-started
# generator with --diffusion.train-steps 0).
_MAY_BE_NAN = ("diffusion_loss",)


def _all_finite(tree) -> jax.Array:
    return jnp.all(jnp.stack([jnp.isfinite(x).all() for x in jax.tree.leaves(tree)]))


def _json_float(value) -> float | None:
    """A float for metrics.jsonl; NaN and inf become null (strict JSON has neither)."""
    value = float(value)
    return value if np.isfinite(value) else None


def _elapsed(t0: float, ready) -> float:
    jax.block_until_ready(ready)
    return time.perf_counter() - t0


def _stats(values) -> dict:
    """Mean, std and per-seed values for summary.json; NaN and inf become null (strict JSON)."""
    v = np.asarray(values, np.float64)
    return {
        "mean": _json_float(v.mean()),
        "std": _json_float(v.std()),
        "per_seed": [_json_float(x) for x in v],
    }


def _asdict(progress: Progress) -> dict:
    return {k: getattr(progress, k) for k in Progress.__dataclass_fields__}


def _train_seed(cfg: RunConfig, i: int) -> int:
    return cfg.seed * 10_007 + i


def _eval_seed(cfg: RunConfig, index: int) -> int:
    return 1_000_003 + cfg.seed * 10_007 + index * cfg.seeds * cfg.eval_episodes


def _final_observations(next_obs, ended, info) -> np.ndarray:
    """With SAME_STEP autoreset, an ended sub-env returns its reset observation; the true last
    observation is in info["final_obs"]."""
    if not np.any(ended):
        return next_obs
    final = np.array(next_obs, copy=True)
    for i in np.flatnonzero(ended):
        final[i] = info["final_obs"][i]
    return final


def _load_dataset(cfg: RunConfig):
    # mc_return (Cal-QL's bound) is discounted as the agent discounts.
    return datasets.load_dataset(cfg.dataset, discount=cfg.agent.discount)


def _reference_scores(cfg: RunConfig, dataset) -> tuple[float, float]:
    """--ref-min-score/--ref-max-score, else (0, 1) for a success-scored env (AntMaze: its
    dataset's reference returns do not apply to a success rate), else the dataset's."""
    if cfg.ref_min_score is not None:
        return cfg.ref_min_score, cfg.ref_max_score
    if reference.scored_by_success(dataset.env_id):
        return reference.SUCCESS_REF_SCORES
    if dataset.ref_min_score is None or dataset.ref_max_score is None:
        raise reference.ReferenceScoreError(
            f"dataset {cfg.dataset} has no reference scores: pass --ref-min-score and "
            "--ref-max-score (e.g. random and expert returns)"
        )
    return dataset.ref_min_score, dataset.ref_max_score


def _return_options(cfg: RunConfig, data_scale: float, ref: tuple[float, float]):
    """(shift, fail_reward) of mc_return (datasets.returns_to_go): the agent sees reward * S + b
    and scales mc_return by S, so mc_return sums reward + b / S. Sparse rewards (Cal-QL): an
    episode ending on the reference minimum's reward failed (the published get_return_to_go)."""
    agent = cfg.agent
    shift = agent.reward_bias / (data_scale * agent.reward_scale)
    fail = ref[0] if getattr(agent, "sparse_reward", False) else None
    return shift, fail


def _reward_scale(cfg: RunConfig, dataset) -> float:
    """With normalize_reward (IQL's default), rewards are scaled by H / (max - min episode
    return), H the episode length (CORL and the IQL paper use 1000, MuJoCo's H), so that returns
    span about H whatever the task. The agent multiplies this by its config's reward_scale."""
    if not cfg.agent.normalize_reward or len(dataset.episode_returns) < 2:
        return 1.0
    horizon = dataset.env_kwargs.get("max_episode_steps") or envs.episode_length(dataset.env_id)
    spread = float(np.max(dataset.episode_returns) - np.min(dataset.episode_returns))
    return horizon / spread if spread > 0 else 1.0

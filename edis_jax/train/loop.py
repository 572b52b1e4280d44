"""The run driver: offline phase, then online phase, for all seeds at once.

The host loop only steps gymnasium, evaluates, logs and saves; every computation is a jitted,
seed-vmapped call from train/state.py. The run directory's policy is train/directory.py, the
episode bookkeeping and the env replay on resume train/episodes.py, the generator's retrains
train/synthetic.py, and what a run records train/records.py.
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from edis_jax import envs
from edis_jax.config import RunConfig, to_dict
from edis_jax.config.tasks import TASKS
from edis_jax.data import datasets
from edis_jax.data.scores import normalized_score, scored_by_success
from edis_jax.envs import simulators
from edis_jax.storage import checkpoint
from edis_jax.train import arms, jax_online, online_steps, scales, sharding, synthetic
from edis_jax.train import state as S
from edis_jax.train.directory import (
    RunDirError,
    check_checkpoints_match,
    check_first_retrain_source,
    check_generator_source,
    check_offline_source,
    check_out,
    check_resumable,
    locked,
    read_config,
    staged,
    write_start,
)
from edis_jax.train.loggers import Loggers
from edis_jax.train.records import (
    Progress,
    as_dict,
    check_finite,
    json_float,
    summary,
    write_records_file,
)

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
    run_dir = check_out(cfg)
    existed = run_dir.is_dir()
    with contextlib.ExitStack() as locks:
        if existed:  # the run --overwrite replaces: nobody may be working in it
            locks.enter_context(locked(run_dir))
        if cfg.init_at == "first-retrain":
            check_first_retrain_source(cfg)
        elif cfg.init_from is not None:
            check_offline_source(cfg)
        if cfg.generator_from is not None and cfg.edis:  # read before the long work, too
            check_generator_source(cfg)
        dataset = _load_dataset(cfg)
        _check_task(cfg, dataset)
        cfg = _with_env_backend(cfg, dataset)
        run = _Run(cfg, dataset, run_dir, progress)  # checks the rest; writes nothing
        if cfg.generator_from is not None and run.trains_generator:
            synthetic.load_pretrained(run)
        with staged(run_dir, existed, locks) as staging:
            run.run_dir = staging  # until the swap
            write_start(staging, cfg)
            if cfg.init_from is not None:
                arms.start(run)
        run.run_dir = run_dir
        return run.execute(stop_at_online_step)


def resume(run_dir: str | Path, *, stop_at_online_step: int | None = None, progress: bool = True):
    """Continue the run in `run_dir` from its latest checkpoint (from its start if it was
    stopped before its first one). Returns the summary dict."""
    run_dir = Path(run_dir)
    cfg = read_config(run_dir)
    check_resumable(run_dir)
    with locked(run_dir):
        check_checkpoints_match(run_dir, cfg)
        dataset = _load_dataset(cfg)
        _with_env_backend(cfg, dataset)  # that its backend can run here
        run = _Run(cfg, dataset, run_dir, progress)
        if checkpoint.latest_step(run_dir) is not None:
            run.restore()
        else:
            checkpoint.notice(
                f"{run_dir} was stopped before its first checkpoint: starting it from the "
                "beginning with its config.json"
            )
            write_records_file(run_dir, run.progress.records)
            if cfg.init_from is not None:
                arms.start(run)
        synthetic.resume_pretrained(run)
        return run.execute(stop_at_online_step)


def load_run(run_dir: str | Path):
    """A run's config and its latest checkpointed RunState (leading seed axis), read-only: for
    diagnostics and notebooks. Nothing in the run directory changes."""
    run_dir = Path(run_dir)
    cfg = read_config(run_dir)
    run = _Run(cfg, _load_dataset(cfg), run_dir, progress=False)
    state, _, _ = checkpoint.restore(run_dir, run.state)
    return cfg, state


# -------------------------------------------------------------------------------------- run


class _Run:
    def __init__(self, cfg: RunConfig, dataset, run_dir: Path, progress: bool):
        self.cfg, self.dataset, self.run_dir, self.show = cfg, dataset, run_dir, progress
        self.ref = scales.reference_scores(cfg, dataset)
        self.actions = envs.ActionScale(dataset.env_id)
        offline = dataset.transitions.replace(
            action=self.actions.to_unit(np.asarray(dataset.transitions.action))
        )
        self.reward_scale = scales.reward_scale(cfg, dataset)
        self.return_shift, self.fail_reward = scales.return_options(
            cfg, self.reward_scale, self.ref
        )
        if self.return_shift or self.fail_reward is not None:
            offline = offline.replace(
                mc_return=datasets.dataset_returns_to_go(
                    dataset,
                    cfg.agent.discount,
                    shift=self.return_shift,
                    fail_reward=self.fail_reward,
                )
            )
        self.offline = offline  # as the agent sees it (train/arms.py builds a source's state)
        _check_fits(cfg, offline, self.reward_scale)
        self.keys = sharding.shard_seeds(S.seed_keys(cfg))
        # With several devices the seed axis is split across them; one device: unchanged.
        self.state = sharding.shard_seeds(S.init_state(cfg, offline, self.reward_scale))
        if cfg.env_backend == "jax":  # the env is part of the run's state (train/jax_online.py)
            self.jax_env = jax_online.training_env(dataset.env_id)
            self.action_bounds = jax_online.ActionBounds.of(dataset.env_id)
            self.state = jax_online.with_env(self.state, self.jax_env, self.keys)
        self.progress = Progress()
        self.loggers = Loggers(cfg.log, to_dict(cfg))  # --log: beside metrics.jsonl
        self.use_edis = cfg.edis and cfg.online_steps > 0
        self.trains_generator = self.use_edis and S.draws_synthetic(cfg)
        self.pretrained = None  # a generator pretrained earlier, until the online phase takes it
        self.terminal_fn = envs.termination_fn(dataset.env_id)
        terminal_rows = int(np.sum(np.asarray(offline.terminal) > 0))
        if self.trains_generator and (
            note := envs.missing_rule_note(dataset.env_id, terminal_rows)
        ):
            print(note)
        if cfg.online.relabel == "simulator" and not simulators.can_simulate(dataset.env_id):
            raise RunDirError(
                f"--online.relabel simulator needs an env whose simulator can be set to an "
                f"observation (MuJoCo locomotion, Pendulum, AntMaze); {dataset.env_id} is not one: "
                "use --online.relabel none"
            )

    # ----------------------------------------------------------------------- checkpoints

    def save(self, step: int) -> None:
        checkpoint.save(self.run_dir, step, self.state, as_dict(self.progress))

    def save_offline(self) -> None:
        """Keep the agent at the end of the offline phase (for `--init-from`) in its own folder,
        which the rolling checkpoints never delete."""
        checkpoint.save(
            self.run_dir, self.global_step(), self.state.agent, as_dict(self.progress),
            folder=checkpoint.OFFLINE_DIR,
        )  # fmt: skip

    def restore(self) -> None:
        self.state, host, _ = checkpoint.restore(self.run_dir, self.state)
        self.progress = Progress(**host)
        # metrics.jsonl may hold records written after the checkpoint: rewrite it from the
        # checkpoint so that the resumed run appends exactly what a straight run would.
        write_records_file(self.run_dir, self.progress.records)

    def global_step(self) -> int:
        return self.progress.offline_step + self.progress.online_step

    # ------------------------------------------------------------------------- phases

    def execute(self, stop_at_online_step: int | None) -> dict | None:
        result = None
        try:
            if self.progress.phase == "offline":
                self.offline_phase()
            if self.progress.phase == "online" and not self.online_phase(stop_at_online_step):
                return None
            result = summary(self.cfg, self.progress, self.dataset.env_id, self.use_edis)
            (self.run_dir / "summary.json").write_text(json.dumps(result, indent=2))
            return result
        finally:
            self.loggers.close(finished=result is not None)

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
            check_finite(self.run_dir, "offline", p.offline_step + n, metrics)
            before, p.offline_step = p.offline_step, p.offline_step + n
            done = p.offline_step == cfg.offline_steps
            evaluated = self._crossed(before, p.offline_step, cfg.eval_every) or done
            scores = self.evaluate("offline", p.offline_step) if evaluated else None
            self.log("offline", p.offline_step, metrics, scores)
            bar.update(n)
            if scores is not None:
                bar.set_postfix(score=f"{np.mean(scores):.1f}")
            p.wall["offline"] = time.perf_counter() - t0
            if done:
                p.phase = "online" if cfg.online_steps > 0 else "done"
                self.save_offline()
            if done or self._crossed(before, p.offline_step, cfg.checkpoint_every):
                self.save(self.global_step())
        bar.close()
        if p.phase == "offline":  # zero offline steps
            p.phase = "online" if cfg.online_steps > 0 else "done"

    def online_phase(self, stop_at: int | None) -> bool:
        cfg, p = self.cfg, self.progress
        o = cfg.online
        steps = self.online_steps_driver()
        if p.online_step == 0:
            self.state = S.with_online_phase(self.state, S.real_weights(cfg))
            synthetic.pretrain_generator(self)
            if not p.evals or p.evals[-1]["phase"] != "offline":
                self.log("online", 0, None, self.evaluate("online", 0))
        random_steps = cfg.sac.start_steps if (cfg.algo == "sac" and cfg.offline_steps == 0) else 0
        bar = self._bar(cfg.online_steps, p.online_step, "online steps")
        t0 = time.perf_counter() - p.wall["online"]
        while p.online_step < cfg.online_steps:
            if stop_at is not None and p.online_step >= stop_at:
                steps.close()
                return False
            t = p.online_step
            n = steps.chunk(t, self._next_boundary(t, stop_at))
            metrics = steps.advance(t, n, random_steps)
            if self.use_edis and p.retrains > 0 and S.synthetic_every_update(cfg):
                p.synthetic_updates += o.utd * n  # these steps' updates drew the synthetic mix
            p.online_step = t = t + n
            bar.update(n)

            scores = None
            evaluating = t % cfg.eval_every == 0 or t == cfg.online_steps
            if evaluating or t % cfg.log_every == 0 or t % cfg.checkpoint_every == 0:
                metrics = jax.device_get(metrics)  # fetched here anyway, to log or to save
                check_finite(self.run_dir, "online", t, metrics)
            if evaluating:
                scores = self.evaluate("online", t)
                bar.set_postfix(score=f"{np.mean(scores):.1f}")
            if t % cfg.log_every == 0 or scores is not None:
                self.log("online", t, metrics, scores, train_return=steps.last_return())
            if self.use_edis and S.retrain_due(cfg, t):
                synthetic.retrain(self)
                if not S.synthetic_every_update(cfg):
                    synthetic.retrain_step_updates(self)
                    steps.agent_changed()
            p.wall["online"] = time.perf_counter() - t0
            if arms.keeps_first_retrain(self, t):
                arms.keep_first_retrain(self)
            if t % cfg.checkpoint_every == 0 or t == cfg.online_steps:
                if t == cfg.online_steps:
                    p.phase = "done"
                self.save(self.global_step())
        bar.close()
        steps.close()
        p.phase = "done"
        return True

    def online_steps_driver(self):
        """The online phase's env steps: on the host (gymnasium) or inside the compiled
        program (jax), per the run's --env-backend (train/online_steps.py)."""
        if self.cfg.env_backend == "jax":
            return online_steps.JaxSteps(self)
        return online_steps.GymnasiumSteps(self)

    def _next_boundary(self, t: int, stop_at: int | None) -> int:
        """The first online step after t where the host has work: a log, evaluation, retrain,
        kept state or checkpoint, the phase's end, or `stop_at`."""
        cfg = self.cfg
        everies = (cfg.eval_every, cfg.log_every, cfg.checkpoint_every, cfg.online.retrain_every)
        ends = [cfg.online_steps, *((t // every + 1) * every for every in everies)]
        if stop_at is not None and stop_at > t:
            ends.append(stop_at)
        if S.retrain_due(cfg, t + 1):  # Cal-QL-EDIS's published first retrain, at step 1
            ends.append(t + 1)
        return min(ends)

    # -------------------------------------------------------------------- evaluation

    def evaluate(self, phase: str, step: int) -> np.ndarray:
        """Normalised score per seed (mean over cfg.eval_episodes deterministic episodes)."""
        cfg = self.cfg
        index = len(self.progress.evals)
        agent = self.state.agent

        if cfg.env_backend == "jax":  # every episode of every seed in one device call
            returns = jax_online.evaluate(
                agent, jax.random.PRNGKey(_eval_seed(cfg, index)), env=self.jax_env,
                bounds=self.action_bounds, episodes=cfg.eval_episodes,
            )  # fmt: skip
            returns, successes = jax.device_get(returns), None  # no JAX env scores by success
        else:

            def policy(obs):
                action = S.greedy_action(agent, jnp.asarray(obs, jnp.float32))
                return self.actions.to_env(np.asarray(action))

            returns, successes = envs.episode_outcomes(
                policy, self.dataset.env_id, cfg.seeds, cfg.eval_episodes,
                seed=_eval_seed(cfg, index), env_kwargs=self.dataset.env_kwargs,
            )  # fmt: skip
        mean_returns = np.asarray(returns, np.float64).mean(axis=1)
        entry = {"phase": phase, "step": step, "returns": mean_returns.tolist()}
        if scored_by_success(self.dataset.env_id):
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

    def log(self, phase, step, metrics, scores, train_return=None, event=None) -> None:
        metrics = {} if metrics is None else jax.device_get(metrics)
        records = []
        for i in range(self.cfg.seeds):
            record = {"phase": phase, "step": int(step), "seed": i}
            if event is not None:
                record.update(event=event, retrain=self.progress.retrains)
            record.update({k: json_float(np.asarray(v)[i]) for k, v in sorted(metrics.items())})
            if scores is not None:
                record["eval_return"] = json_float(self.progress.evals[-1]["returns"][i])
                if "success_rates" in self.progress.evals[-1]:
                    record["eval_success_rate"] = self.progress.evals[-1]["success_rates"][i]
                record["eval_score"] = json_float(scores[i])
            if train_return is not None:
                record["train_return"] = json_float(train_return[i])
            records.append(record)
        self.progress.records.extend(records)
        with open(self.run_dir / "metrics.jsonl", "a") as f:
            for record in records:
                f.write(json.dumps(record) + "\n")
        self.loggers.write(self.run_dir, records)

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


# ----------------------------------------------------------------------------- helpers


def scores_of(returns, ref: tuple[float, float]) -> np.ndarray:
    return np.asarray(normalized_score(returns, *ref), np.float64)


def _eval_seed(cfg: RunConfig, index: int) -> int:
    return 1_000_003 + cfg.seed * 10_007 + index * cfg.seeds * cfg.eval_episodes


def _check_task(cfg: RunConfig, dataset) -> None:
    """Refuse a --task applied to another env's dataset or with another --algo: its values were
    tuned for that env and algorithm, and config.json would record a task the run is not."""
    if cfg.task is None:
        return
    task_algo = TASKS[cfg.task]["algo"]
    if cfg.algo != task_algo:
        raise RunDirError(
            f"--task {cfg.task} is tuned for --algo {task_algo}, but --algo is {cfg.algo}: drop "
            f"--algo, or choose a {cfg.algo} task (`edis-jax tasks` lists them)"
        )
    task_env = TASKS[cfg.task]["env"]
    if task_env.rsplit("-v", 1)[0] != dataset.env_id.rsplit("-v", 1)[0]:
        raise RunDirError(
            f"--task {cfg.task} is tuned for {task_env}, but --dataset {cfg.dataset} is "
            f"{dataset.env_id} data: give a {task_env} dataset (the task's own is "
            f"{TASKS[cfg.task]['dataset']}), or drop --task and set the values you want with "
            f"flags (`edis-jax tasks {cfg.task}` lists them)"
        )


def _with_env_backend(cfg: RunConfig, dataset) -> RunConfig:
    """cfg with its --env-backend resolved (train/jax_online.resolve_backend), refused in one
    line where it cannot run; an --init-at first-retrain arm must use its baseline's, whose env
    state (or replay) it continues."""
    try:
        backend = jax_online.resolve_backend(cfg.env_backend, dataset.env_id, dataset.env_kwargs)
    except ValueError as err:
        raise RunDirError(str(err)) from None
    if cfg.init_at == "first-retrain":
        source = read_config(Path(cfg.init_from), "--init-from").env_backend
        if source != backend:
            raise RunDirError(
                f"--init-from {cfg.init_from} stepped its envs with --env-backend {source}, this "
                f"run would use {backend}: an arm continues its baseline's envs, so pass "
                f"--env-backend {source}"
            )
    return cfg.replace(env_backend=backend)


def _check_fits(cfg: RunConfig, offline, reward_scale: float) -> None:
    """Refuse, before anything is allocated, a run whose state alone (seeds x buffers, networks
    and optimiser states) exceeds the memory the seeds share; the working memory of the
    compiled programs comes on top, so a run that passes may still not fit."""
    available = sharding.device_memory_bytes()
    if available is None:
        return
    limit, where = available
    need = S.state_bytes(cfg, offline, reward_scale)
    if need > limit:
        per_seed = need / cfg.seeds
        fit = int(limit // per_seed)
        raise RunDirError(
            f"--seeds {cfg.seeds} needs {need / 2**30:.1f} GiB for the run's state alone "
            f"({per_seed / 2**20:.1f} MiB per seed: buffers of {len(offline)} offline + "
            f"{cfg.online_steps} online rows, networks, optimiser states), more than the "
            f"{limit / 2**30:.1f} GiB of {where}: use at most --seeds {max(fit, 0)} (fewer "
            "to leave room for the computation), or smaller sizes"
        )


def _load_dataset(cfg: RunConfig):
    # mc_return (Cal-QL's bound) is discounted as the agent discounts.
    return datasets.load_dataset(cfg.dataset, discount=cfg.agent.discount)

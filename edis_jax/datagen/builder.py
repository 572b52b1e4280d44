"""D4RL-style datasets for any gymnasium continuous-control env, written as Minari datasets.

Kinds (after D4RL, Fu et al. 2020):
- random: uniform random actions.
- medium: a SAC behaviour policy whose return, with actions sampled as the rollout samples
  them, is the closest found to `medium_fraction` (default 1/3) of the expert return; rolled
  out stochastically. SAC trains until a stochastic evaluation reaches the target; the policies
  of that last evaluation interval (kept every eval_every / MEDIUM_SNAPSHOTS steps) are then
  bisected for the crossing, and the evaluated one closest to the target is kept.
- medium-replay: every transition SAC collected up to its first (stochastic) evaluation at the
  medium target (its replay buffer); its size is set by the training, not by `steps`.
- expert: SAC trained, continuing from the medium policy, until its evaluation return stops
  improving (`plateau`) or `expert_steps` env steps in all; rolled out stochastically.
- medium-expert: `steps` medium transitions followed by `steps` expert ones (2 x steps, as D4RL).

"A fraction f of the expert return" is measured from the random policy's return:
target = R_random + f (R_expert - R_random), i.e. a normalised score of 100 f. For tasks whose
random return is near zero (Hopper: -20 against 3234) this is f R_expert; for tasks with
negative returns (Pendulum) it is the only reading that makes sense.

The expert return is, in order: `expert_return` if given; D4RL's published expert score for
Hopper, HalfCheetah, Walker2d and Ant; otherwise an expert is trained first (SAC until its
deterministic evaluation return reaches a plateau, at most `expert_steps` steps; its final
evaluation over `eval_episodes` episodes), and then also serves as the expert of the expert
kinds. The metadata's expert_stop says which ended the training.

Reference scores: D4RL's constants for those four tasks (edis_jax.data.scores); for other envs
ref_min = the random policy's mean return and ref_max = the expert return above, each over
`eval_episodes` (>= 10) episodes. `ref_min_score`/`ref_max_score` override both. A random
dataset of an env without D4RL constants or --expert-return has no ref_max; `edis-jax data
scores` can add it later.

Every rollout is cut at exactly `steps` transitions; a cut episode ends with truncation = True.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time

import gymnasium as gym
import numpy as np

from edis_jax import envs
from edis_jax.config.agent_configs import SACConfig
from edis_jax.data import minari_store
from edis_jax.data.scores import d4rl_ref_scores
from edis_jax.datagen import selection
from edis_jax.datagen.behaviour import evaluate_agent, train_sac_online
from edis_jax.datagen.options import DEFAULTS, KINDS, MIN_REF_EPISODES, make_command
from edis_jax.datagen.rollout import random_policy, rollout, sac_policy
from edis_jax.train.jax_online import resolve_backend

# Policies kept per evaluation interval of the medium run: the crossing of the target is then
# found to within eval_every / 8 steps (SAC on Pendulum goes from -1100 to -250 in 1000 steps)
# by log2(8) = 3 more evaluations.
MEDIUM_SNAPSHOTS = 8


def make_dataset(
    env_id: str,
    kind: str,
    steps: int,
    dataset_id: str,
    seed: int = 0,
    *,
    medium_fraction: float = DEFAULTS["medium_fraction"],
    expert_return: float | None = None,
    expert_steps: int = DEFAULTS["expert_steps"],
    max_train_steps: int = DEFAULTS["max_train_steps"],
    eval_every: int = DEFAULTS["eval_every"],
    eval_episodes: int = MIN_REF_EPISODES,
    ref_min_score: float | None = None,
    ref_max_score: float | None = None,
    sac_critic_lr: float | None = None,
    plateau_window: int = DEFAULTS["plateau_window"],
    plateau_tol: float = DEFAULTS["plateau_tol"],
    env_backend: str = DEFAULTS["env_backend"],
    sac_config=None,
    overwrite: bool = False,
    progress: bool = True,
) -> dict:
    """Build the dataset and write it under MINARI_DATASETS_PATH; returns a summary dict
    (id, path, kind, env_id, transitions, episodes, mean_return, reference scores, build info,
    timings in seconds)."""
    options = dict(
        medium_fraction=medium_fraction, expert_return=expert_return, expert_steps=expert_steps,
        max_train_steps=max_train_steps, eval_every=eval_every, eval_episodes=eval_episodes,
        ref_min_score=ref_min_score, ref_max_score=ref_max_score, sac_critic_lr=sac_critic_lr,
        plateau_window=plateau_window, plateau_tol=plateau_tol, env_backend=env_backend,
    )  # fmt: skip
    _validate(env_id, kind, steps, dataset_id, overwrite, **options)
    if kind != "random":  # the behaviour SAC's env, named in the rebuilding command
        options["env_backend"] = resolve_backend(env_backend, env_id, None)
    # One writer per id for the whole build: a second `data make` of the id is refused at once,
    # not after its own build, and the id is checked free again under the lock.
    with minari_store.writer(dataset_id):
        minari_store.check_new(dataset_id, overwrite)
        return _build(env_id, kind, steps, dataset_id, seed, options, sac_config, overwrite,
                      progress)  # fmt: skip


def _build(env_id, kind, steps, dataset_id, seed, options, sac_config, overwrite, progress):
    eval_episodes, expert_return = options["eval_episodes"], options["expert_return"]
    ref_min_score, ref_max_score = options["ref_min_score"], options["ref_max_score"]
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    build: dict = {"kind": kind, "env_id": env_id, "steps": steps, "seed": seed}

    t0 = time.perf_counter()
    d4rl = d4rl_ref_scores(env_id)
    if d4rl is not None:
        random_return = d4rl[0]
        build["ref_source"] = "D4RL d4rl/infos.py"
    else:
        random_return = _mean_return(
            env_id, random_policy(env_id, seed + 1), eval_episodes, seed + 1
        )
        build["ref_source"] = f"random policy / expert, {eval_episodes} episodes each"
    timings["reference_s"] = time.perf_counter() - t0

    if kind == "random":
        t0 = time.perf_counter()
        episodes = rollout(env_id, random_policy(env_id, seed), steps, seed)
        timings["rollout_s"] = time.perf_counter() - t0
    else:
        episodes, expert_return, info = _behaviour_episodes(
            env_id, kind, steps, seed, random_return, timings, sac_config, progress, **options
        )
        build.update(info)

    ref_min, ref_max = d4rl if d4rl is not None else (random_return, expert_return)
    if ref_min_score is not None:
        ref_min, ref_max = ref_min_score, ref_max_score
        build["ref_source"] = "given"
    if ref_max is not None and not ref_max > ref_min:
        print(
            f"warning: the expert return {ref_max:.1f} is not above the random return "
            f"{ref_min:.1f}, so no ref_max_score is stored: train longer (--expert-steps) or "
            "add scores later with `edis-jax data scores`"
        )
        ref_max = None

    build["command"] = make_command(env_id, kind, steps, dataset_id, seed, **options)
    t0 = time.perf_counter()
    path = minari_store.write_dataset(
        dataset_id,
        env_id,
        episodes,
        ref_min_score=ref_min,
        ref_max_score=ref_max,
        description=f"D4RL-style {kind} dataset of {env_id} built by `edis-jax data make`",
        algorithm_name="uniform random" if kind == "random" else "SAC (edis_jax)",
        build_info=build,
        overwrite=overwrite,
    )
    timings["write_s"] = time.perf_counter() - t0
    timings["total_s"] = time.perf_counter() - t_start
    returns = np.array([float(np.sum(ep["rewards"])) for ep in episodes])
    return {
        "id": dataset_id,
        "path": str(path),
        "kind": kind,
        "env_id": env_id,
        "transitions": int(sum(len(ep["rewards"]) for ep in episodes)),
        "episodes": len(episodes),
        "mean_return": float(returns.mean()),
        "ref_min_score": ref_min,
        "ref_max_score": ref_max,
        "build": build,
        "timings": timings,
    }


# ------------------------------------------------------------------------- behaviour (SAC)


def _behaviour_episodes(
    env_id, kind, steps, seed, random_return, timings, sac_config, progress, *,
    medium_fraction, expert_return, expert_steps, max_train_steps, eval_every, eval_episodes,
    sac_critic_lr, plateau_window, plateau_tol, env_backend, **_refs,
):  # fmt: skip
    """Train SAC as the kind needs and roll it out. Returns (episodes, expert return, info)."""
    sac_config = SACConfig() if sac_config is None else sac_config
    if sac_critic_lr is not None:
        sac_config = dataclasses.replace(sac_config, critic_lr=sac_critic_lr)
    train = dict(
        eval_every=eval_every, eval_episodes=eval_episodes, progress=progress, config=sac_config,
        env_backend=env_backend,
    )  # fmt: skip
    info: dict = {}
    d4rl = d4rl_ref_scores(env_id)

    def train_expert(steps_, seed_, agent=None):
        # Evaluations before learning starts (uniform random actions) say nothing of a plateau.
        after = sac_config.start_steps if agent is None else 0
        stop = selection.plateau_stop(plateau_window, plateau_tol, after)
        run = train_sac_online(env_id, steps_, seed=seed_, agent=agent, stop_when=stop, **train)
        plateaued = stop(run.evals)
        # The curve the rule saw (step, deterministic mean return), to judge the stop later.
        info["expert_evals"] = [(step, round(r, 1)) for step, r in run.evals]
        info["expert_stop"] = (
            f"plateau at step {run.steps} (window >= {plateau_window} evaluations, tol "
            f"{plateau_tol} of the return spread)"
            if plateaued
            else f"cap reached ({steps_} steps)"
        )
        return run

    t0 = time.perf_counter()
    expert = None
    if expert_return is not None:
        info["expert_return_source"] = "given"
    elif d4rl is not None:
        expert_return, info["expert_return_source"] = d4rl[1], "D4RL ref_max_score"
    else:
        # No published expert score: train the expert first; its return sets the target.
        expert = train_expert(expert_steps, seed + 1000)
        expert_return = selection.last_eval(expert)
        info["expert_return_source"] = f"SAC trained {expert.steps} steps (seed {seed + 1000})"
    target = random_return + medium_fraction * (expert_return - random_return)
    info.update(expert_return=float(expert_return), medium_target=float(target))

    # Stochastic evaluations: the medium dataset samples its actions, and its mean return is
    # what should land on the target (the mean action usually scores higher).
    replay = kind == "medium-replay"
    every = max(1, eval_every // MEDIUM_SNAPSHOTS)
    medium = train_sac_online(
        env_id, max_train_steps, seed=seed, stop_when=selection.reaches(target),
        eval_stochastic=True,
        snapshot_every=None if replay else every,
        record_episodes=replay, **train,
    )  # fmt: skip
    medium_step, medium_agent = medium.steps, medium.agent
    medium_return = selection.last_eval(medium)
    if medium_return < target:
        info["medium_target_reached"] = False
        info["medium_selection"] = "the final policy (target not reached)"
        print(
            f"warning: SAC reached {medium_return:.1f} < target {target:.1f} within "
            f"{max_train_steps} steps; the medium policy is the final one (raise --max-train-steps)"
        )
    elif replay:
        # The replay buffer up to the first evaluation at the target, as D4RL's medium-replay.
        info["medium_selection"] = "the first evaluation at or above the target"
    else:
        evaluate = functools.partial(
            evaluate_agent, env_id=env_id, episodes=eval_episodes, seed=seed, stochastic=True
        )
        medium_step, medium_agent, medium_return, info["medium_selection"] = (
            selection.closest_policy(medium, target, evaluate, every)
        )
    info.update(medium_train_steps=medium_step, medium_eval_return=float(medium_return))
    if kind in ("expert", "medium-expert") and expert is None:
        expert = train_expert(max(expert_steps - medium_step, 1), seed, medium_agent)
        info["expert_train_steps"] = medium_step + expert.steps
    if expert is not None:
        info["expert_eval_return"] = selection.last_eval(expert)
    timings["train_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    if kind == "medium-replay":
        to_env = envs.ActionScale(env_id).to_env
        episodes = [{**ep, "actions": to_env(ep["actions"])} for ep in medium.episodes]
    else:
        episodes = []
        if kind in ("medium", "medium-expert"):
            episodes += rollout(env_id, sac_policy(medium_agent, env_id, seed), steps, seed + 2)
        if kind in ("expert", "medium-expert"):
            episodes += rollout(env_id, sac_policy(expert.agent, env_id, seed), steps, seed + 3)
    timings["rollout_s"] = time.perf_counter() - t0
    return episodes, expert_return, info


def _mean_return(env_id: str, policy_fn, episodes: int, seed: int) -> float:
    returns = envs.evaluate(policy_fn, env_id, num_envs=episodes, episodes=1, seed=seed)
    return float(returns.mean())


def _check_fits_memory(kind, steps, max_train_steps, obs_dim, act_dim) -> None:
    """Refuse, before the build, a dataset whose rows alone (float32 observation, next
    observation, action, reward and flags) exceed this machine's RAM: it is held whole."""
    rows = {"medium-expert": 2 * steps, "medium-replay": max_train_steps}.get(kind, steps)
    need = rows * (2 * obs_dim + act_dim + 3) * 4
    ram = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    if need > ram:
        flag, value = ("--max-train-steps", max_train_steps) if kind == "medium-replay" else (
            "--steps", steps)  # fmt: skip
        raise ValueError(
            f"{rows} rows of {obs_dim} observations and {act_dim} actions need {need / 2**30:.0f} "
            f"GiB, more than this machine's {ram / 2**30:.0f} GiB of RAM, which holds the dataset "
            f"while it is built: use at most {flag} {int(value * ram / need)}"
        )


def _validate(env_id, kind, steps, dataset_id, overwrite, **options):
    if kind not in KINDS:
        raise ValueError(f"unknown --kind {kind!r}: choose one of {', '.join(KINDS)}")
    for name in ("steps", "expert_steps", "max_train_steps", "eval_every"):
        value = steps if name == "steps" else options[name]
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be a positive integer, got {value}")
    window = options["plateau_window"]
    if not isinstance(window, int) or window < 1:
        raise ValueError(f"--plateau-window must be a positive integer, got {window}")
    if not options["plateau_tol"] >= 0:
        raise ValueError(f"--plateau-tol must be >= 0, got {options['plateau_tol']}")
    if options["sac_critic_lr"] is not None and not options["sac_critic_lr"] > 0:
        raise ValueError(f"--sac-critic-lr must be > 0, got {options['sac_critic_lr']}")
    if not 0.0 < options["medium_fraction"] <= 1.0:
        raise ValueError(f"--medium-fraction must be in (0, 1], got {options['medium_fraction']}")
    if options["eval_episodes"] < MIN_REF_EPISODES:
        raise ValueError(
            f"--eval-episodes must be >= {MIN_REF_EPISODES} (reference scores average at least "
            f"that many episodes), got {options['eval_episodes']}"
        )
    lo, hi = options["ref_min_score"], options["ref_max_score"]
    if (lo is None) != (hi is None):
        raise ValueError("give both --ref-min-score and --ref-max-score, or neither")
    if lo is not None and not hi > lo:
        raise ValueError("--ref-max-score must be above --ref-min-score")
    if options["env_backend"] not in ("auto", "gymnasium", "jax"):
        raise ValueError(
            f"--env-backend must be auto, gymnasium or jax, got {options['env_backend']!r}"
        )
    env = envs.make_env(env_id)  # fails early, with the fix, for an unknown env id
    space, obs_dim = env.action_space, gym.spaces.flatdim(env.observation_space)
    env.close()
    if not isinstance(space, gym.spaces.Box):
        raise ValueError(
            f"{env_id} has a {type(space).__name__} action space: only Box is supported"
        )
    _check_fits_memory(kind, steps, options["max_train_steps"], obs_dim, space.shape[0])
    minari_store.check_new(dataset_id, overwrite)

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
import time
from collections.abc import Callable

import gymnasium as gym
import numpy as np

from edis_jax import envs
from edis_jax.data import datasets
from edis_jax.data.scores import d4rl_ref_scores

KINDS = ("random", "medium", "medium-replay", "expert", "medium-expert")
MIN_REF_EPISODES = 10  # episodes behind each reference score (the task's minimum)
# Defaults of make_dataset's options, also used to write the shortest rebuilding command.
DEFAULTS = {
    "medium_fraction": 1 / 3,
    "expert_return": None,
    "expert_steps": 1_000_000,  # the cap: D4RL's experts are SAC for 1M steps
    "max_train_steps": 1_000_000,
    "eval_every": 2000,  # often enough that SAC stops close to the medium target
    "eval_episodes": MIN_REF_EPISODES,
    "ref_min_score": None,
    "ref_max_score": None,
    # The behaviour SAC's critic lr; None: SACConfig's. local/hopper/medium-v0 (shipped) was
    # built when that default was 3e-4, and its rebuild command says so.
    "sac_critic_lr": None,
    # The expert's plateau rule (`plateau`). Window 3: at eval_every 2000 that is 6000 steps
    # without progress, the longest flat stretch of SAC on Pendulum after it has learned; the
    # window grows to a quarter of the evaluations so far, so slow learners (steps to the best
    # return in the 100k) also get a patience of a quarter of their run. Tolerance 1% of the
    # return spread seen: the expert return sets ref_max_score, so an expert stopped 1% early
    # moves normalised scores by about 1 point, less than their spread over seeds.
    "plateau_window": 3,
    "plateau_tol": 0.01,
}
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
        plateau_window=plateau_window, plateau_tol=plateau_tol,
    )  # fmt: skip
    _validate(env_id, kind, steps, dataset_id, overwrite, **options)
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    build: dict = {"kind": kind, "env_id": env_id, "steps": steps, "seed": seed}

    t0 = time.perf_counter()
    d4rl = d4rl_ref_scores(env_id)
    if d4rl is not None:
        random_return = d4rl[0]
        build["ref_source"] = "D4RL d4rl/infos.py"
    else:
        random_policy = _random_policy(env_id, seed + 1)
        random_return = _mean_return(env_id, random_policy, eval_episodes, seed + 1)
        build["ref_source"] = f"random policy / expert, {eval_episodes} episodes each"
    timings["reference_s"] = time.perf_counter() - t0

    if kind == "random":
        t0 = time.perf_counter()
        episodes = rollout(env_id, _random_policy(env_id, seed), steps, seed)
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

    t0 = time.perf_counter()
    path = datasets.write_dataset(
        dataset_id,
        env_id,
        episodes,
        ref_min_score=ref_min,
        ref_max_score=ref_max,
        description=f"D4RL-style {kind} dataset of {env_id} built by `edis-jax data make`",
        algorithm_name="uniform random" if kind == "random" else "SAC (edis_jax)",
        build_info={
            **build,
            "command": make_command(env_id, kind, steps, dataset_id, seed, **options),
        },
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


def make_command(env_id: str, kind: str, steps: int, dataset_id: str, seed: int, **options) -> str:
    """The command line that rebuilds a dataset (stored in its metadata); options left at their
    defaults are not written."""
    words = [f"edis-jax data make --env {env_id} --kind {kind} --steps {steps}"]
    words.append(f"--id {dataset_id} --seed {seed}")
    for name, value in options.items():
        if value is not None and value != DEFAULTS[name]:
            words.append(f"--{name.replace('_', '-')} {value}")
    return " ".join(words)


def rollout(
    env_id: str,
    policy_fn: Callable[[np.ndarray], np.ndarray],
    steps: int,
    seed: int,
    num_envs: int = 8,
) -> list[dict]:
    """Exactly `steps` transitions of policy_fn(obs batch) -> action batch, as Minari-style
    episode dicts (observations (T+1, ds), actions (T, da), rewards, terminations,
    truncations (T,)).

    `num_envs` sub-envs (seeds seed, seed+1, ...) step side by side so that the policy runs on
    batches. Finished episodes are kept in the order they finish until they hold `steps`
    transitions; the last one kept is cut to fit (marked truncated unless it terminated right
    there) and episodes still running are dropped.
    """
    env = envs.make_vector_env(env_id, num_envs)
    finished: list[dict] = []
    total = 0
    try:
        obs, _ = env.reset(seed=seed)
        running = [_new_episode(o) for o in obs]
        while total < steps:
            action = np.asarray(policy_fn(obs), env.action_space.dtype)
            obs, reward, terminated, truncated, info = env.step(action)
            for i, episode in enumerate(running):
                ended = bool(terminated[i] or truncated[i])
                # SAME_STEP autoreset: obs[i] already starts the next episode when one ended.
                episode["observations"].append(info["final_obs"][i] if ended else obs[i])
                episode["actions"].append(action[i])
                episode["rewards"].append(float(reward[i]))
                episode["terminations"].append(bool(terminated[i]))
                episode["truncations"].append(bool(truncated[i]))
                if ended and total < steps:
                    finished.append(_finish_episode(episode, steps - total))
                    total += len(finished[-1]["rewards"])
                if ended:
                    running[i] = _new_episode(obs[i])
    finally:
        env.close()
    return finished


# ------------------------------------------------------------------------- behaviour (SAC)


def _behaviour_episodes(
    env_id, kind, steps, seed, random_return, timings, sac_config, progress, *,
    medium_fraction, expert_return, expert_steps, max_train_steps, eval_every, eval_episodes,
    sac_critic_lr, plateau_window, plateau_tol, **_refs,
):  # fmt: skip
    """Train SAC as the kind needs and roll it out. Returns (episodes, expert return, info)."""
    from edis_jax.config import SACConfig
    from edis_jax.train.behaviour import evaluate_agent, reaches, train_sac_online

    sac_config = SACConfig() if sac_config is None else sac_config
    if sac_critic_lr is not None:
        sac_config = dataclasses.replace(sac_config, critic_lr=sac_critic_lr)
    train = dict(
        eval_every=eval_every, eval_episodes=eval_episodes, progress=progress, config=sac_config
    )
    info: dict = {}
    d4rl = d4rl_ref_scores(env_id)

    def train_expert(steps_, seed_, agent=None):
        # Evaluations before learning starts (uniform random actions) say nothing of a plateau.
        after = sac_config.start_steps if agent is None else 0
        stop = _plateau_stop(plateau_window, plateau_tol, after)
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
        expert_return = _last_eval(expert)
        info["expert_return_source"] = f"SAC trained {expert.steps} steps (seed {seed + 1000})"
    target = random_return + medium_fraction * (expert_return - random_return)
    info.update(expert_return=float(expert_return), medium_target=float(target))

    # Stochastic evaluations: the medium dataset samples its actions, and its mean return is
    # what should land on the target (the mean action usually scores higher).
    replay = kind == "medium-replay"
    every = max(1, eval_every // MEDIUM_SNAPSHOTS)
    medium = train_sac_online(
        env_id, max_train_steps, seed=seed, stop_when=reaches(target), eval_stochastic=True,
        snapshot_every=None if replay else every,
        record_episodes=replay, **train,
    )  # fmt: skip
    medium_step, medium_agent, medium_return = medium.steps, medium.agent, _last_eval(medium)
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
        medium_step, medium_agent, medium_return, info["medium_selection"] = _closest_policy(
            medium, target, evaluate, every
        )
    info.update(medium_train_steps=medium_step, medium_eval_return=float(medium_return))
    if kind in ("expert", "medium-expert") and expert is None:
        expert = train_expert(max(expert_steps - medium_step, 1), seed, medium_agent)
        info["expert_train_steps"] = medium_step + expert.steps
    if expert is not None:
        info["expert_eval_return"] = _last_eval(expert)
    timings["train_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    if kind == "medium-replay":
        to_env = _unit_to_env_actions(env_id)
        episodes = [{**ep, "actions": to_env(ep["actions"])} for ep in medium.episodes]
    else:
        episodes = []
        if kind in ("medium", "medium-expert"):
            episodes += rollout(env_id, _sac_policy(medium_agent, env_id, seed), steps, seed + 2)
        if kind in ("expert", "medium-expert"):
            episodes += rollout(env_id, _sac_policy(expert.agent, env_id, seed), steps, seed + 3)
    timings["rollout_s"] = time.perf_counter() - t0
    return episodes, expert_return, info


def _closest_policy(run, target: float, evaluate: Callable, every: int):
    """The policy of a run stopped at its first evaluation at or above `target` whose return is
    closest to it, from the policies it kept since the evaluation before (run.snapshots):
    (step, agent, return, how it was found)."""
    policies = [*run.snapshots, (run.steps, run.agent)]
    known = {len(policies) - 1: _last_eval(run)}
    if len(run.evals) > 1 and policies[0][0] == run.evals[-2][0]:
        known[0] = run.evals[-2][1]  # the evaluation before, below the target
    known = bisect_crossing(known, target, lambda i: evaluate(policies[i][1]))
    best = closest_to_target(known, target)
    how = (
        f"closest to the target of {len(known)} evaluated policies between steps "
        f"{policies[0][0]} and {run.steps} (kept every {every} steps, bisected for the "
        "crossing)"
    )
    return *policies[best], known[best], how


def plateau(returns, window: int, tol: float) -> bool:
    """Whether an evaluation curve has stopped improving: the best of its last w evaluations
    is at most `tol` x (max - min of all of them) above the best of the ones before, with
    w = max(window, len(returns) // 4) (so patience grows with the run). False until there
    are more than w evaluations."""
    r = np.asarray(returns, np.float64)
    w = max(window, len(r) // 4)
    if len(r) <= w:
        return False
    return bool(r[-w:].max() - r[:-w].max() <= tol * (r.max() - r.min()))


def bisect_crossing(
    known: dict[int, float], target: float, evaluate: Callable[[int], float]
) -> dict[int, float]:
    """Policies 0..n-1 in training order, the last one's return (known[n-1]) at or above
    `target` and possibly the first's below it: evaluate the middle ones by bisection until
    two neighbours straddle the target (a crossing). Returns every return known then."""
    known = dict(known)
    lo = 0 if 0 in known and known[0] < target else -1
    hi = max(known)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        known[mid] = evaluate(mid)
        lo, hi = (lo, mid) if known[mid] >= target else (mid, hi)
    return known


def closest_to_target(returns: dict[int, float], target: float) -> int:
    """The key of the return closest to `target`; on a tie the smaller key (less training)."""
    return min(returns, key=lambda k: (abs(returns[k] - target), k))


def _plateau_stop(window: int, tol: float, after: int):
    """A stop_when: `plateau` of the evaluations made after step `after`."""
    return lambda evals: plateau([r for step, r in evals if step > after], window, tol)


def _sac_policy(agent, env_id: str, seed: int) -> Callable[[np.ndarray], np.ndarray]:
    """A stochastic host policy obs -> env action from a SAC agent (jitted, keys threaded).
    The agent acts in [-1, 1]^da (edis_jax.train.behaviour); the env's bounds are restored."""
    import jax

    sample = jax.jit(lambda agent, key, obs: agent.act(key, obs))
    key = jax.random.PRNGKey(seed)
    to_env = _unit_to_env_actions(env_id)

    def policy(obs: np.ndarray) -> np.ndarray:
        nonlocal key
        key, sub = jax.random.split(key)
        return to_env(np.asarray(sample(agent, sub, np.asarray(obs, np.float32))))

    return policy


def _unit_to_env_actions(env_id: str) -> Callable[[np.ndarray], np.ndarray]:
    env = envs.make_env(env_id)
    low, high = env.action_space.low, env.action_space.high
    env.close()
    if np.all(low == -1.0) and np.all(high == 1.0):
        return lambda unit: unit
    return lambda unit: (low + (np.asarray(unit) + 1.0) * (high - low) / 2.0).astype(low.dtype)


def _last_eval(run) -> float:
    return float(run.evals[-1][1]) if run.evals else float("-inf")


# ---------------------------------------------------------------------------------- helpers


def _random_policy(env_id: str, seed: int) -> Callable[[np.ndarray], np.ndarray]:
    env = envs.make_env(env_id)
    space = env.action_space
    env.close()
    space.seed(seed)
    # Works for a single observation and for a batch (leading axis) alike.
    return lambda obs: (
        space.sample() if np.ndim(obs) == 1 else np.stack([space.sample() for _ in obs])
    )


def _mean_return(env_id: str, policy_fn, episodes: int, seed: int) -> float:
    returns = envs.evaluate(policy_fn, env_id, num_envs=episodes, episodes=1, seed=seed)
    return float(returns.mean())


def _new_episode(obs) -> dict:
    return {
        "observations": [obs],
        "actions": [],
        "rewards": [],
        "terminations": [],
        "truncations": [],
    }


def _finish_episode(episode: dict, max_steps: int) -> dict:
    """numpy arrays of the episode's first `max_steps` steps; a cut episode ends truncated."""
    n = min(len(episode["rewards"]), max_steps)
    out = {k: np.asarray(v[: n + 1 if k == "observations" else n]) for k, v in episode.items()}
    if n < len(episode["rewards"]) and not out["terminations"][-1]:
        out["truncations"][-1] = True
    return out


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
    env = envs.make_env(env_id)  # fails early, with the fix, for an unknown env id
    space = env.action_space
    env.close()
    if not isinstance(space, gym.spaces.Box):
        raise ValueError(
            f"{env_id} has a {type(space).__name__} action space: only Box is supported"
        )
    datasets.check_dataset_id(dataset_id)
    target = datasets.dataset_path(dataset_id)
    if target.exists() and not overwrite:
        raise ValueError(
            f"dataset {dataset_id!r} already exists at {target}: choose another --id "
            "(e.g. bump the -vN version) or pass --overwrite"
        )

"""The options of `edis-jax data make`: the dataset kinds, the defaults of make_dataset's options
(the CLI's too) and the command that rebuilds a dataset. Kept apart from the builder so that the
CLI reads them without importing JAX.
"""

from __future__ import annotations

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
    # The behaviour SAC's env (datagen/behaviour.py): auto is jax on an accelerator where the
    # env has an exact JAX version, gymnasium otherwise. The rebuilding command names the one
    # used, so that a rebuild on another machine kind trains on the same.
    "env_backend": "auto",
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

"""The Minari store under MINARI_DATASETS_PATH: where a dataset lives, reading a stored one
(refused when its files disagree with its metadata), writing one (atomically: a dataset appears
under its id only once complete; one writer per id), and what its metadata says about its env.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import uuid
import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np

from edis_jax.data.env_packages import make_gym_env, register_env_package, requirements
from edis_jax.data.observations import flatten_observations, unflatten_observations
from edis_jax.storage import file_locks
from edis_jax.storage.output_paths import check_writable_folder, nearest_existing


def check_dataset_id(dataset_id: str) -> None:
    """Raise a one-line ValueError unless the id is a valid Minari id with a version."""
    from minari.dataset.minari_dataset import parse_dataset_id

    try:
        parse_dataset_id(dataset_id)
    except (ValueError, TypeError):
        raise ValueError(
            f"malformed dataset id {dataset_id!r}: ids look like namespace/name-vN, "
            "e.g. local/hopper/medium-v0"
        ) from None


def dataset_path(dataset_id: str) -> Path:
    """Where the dataset lives (or would live) under MINARI_DATASETS_PATH."""
    return datasets_root() / dataset_id


def datasets_root() -> Path:
    """MINARI_DATASETS_PATH, else Minari's default, as Minari finds it; unlike Minari's own
    lookup it creates nothing, so that a store that cannot be written is reported, not hit."""
    return Path(os.environ.get("MINARI_DATASETS_PATH") or Path.home() / ".minari" / "datasets")


# Where the store's writer locks live: a hidden folder, which Minari's listing skips.
LOCKS_DIR = ".edis-jax-locks"
# The metadata key that holds the sha256 of every episode file, written with the dataset.
CHECKSUMS_KEY = "edis_jax_checksums"


@contextlib.contextmanager
def writer(dataset_id: str, wait: bool = False):
    """Be the one writer of `dataset_id` for the block: another `data make` (or install, or
    `data scores`) of the same id is refused at once with one line (with `wait`, waited for).
    Locks nest within one process. Refuses a store folder that cannot be written, before any
    work."""
    if dataset_id in _held:
        yield
        return
    root = datasets_root()
    _check_writable(root)
    lock = root / LOCKS_DIR / f"{dataset_id}.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    refusal = ValueError(
        f"dataset {dataset_id!r} is being written by another edis-jax command: wait for it to "
        "end, or choose another --id; one dataset id takes one writer"
    )
    with file_locks.held(lock, refusal, wait):
        _held.add(dataset_id)
        try:
            yield
        finally:
            _held.discard(dataset_id)


_held: set[str] = set()  # the ids whose writer lock this process holds


def _check_writable(root: Path) -> None:
    check_writable_folder(
        nearest_existing(root), f"the dataset store {root} (MINARI_DATASETS_PATH)",
        "set MINARI_DATASETS_PATH to a writable folder",
    )  # fmt: skip


def read_minari_episodes(dataset_id: str) -> list[dict]:
    """A stored dataset's episodes as dicts of numpy arrays (observations (T+1, ds) in the flat
    layout, actions (T, da), rewards, terminations, truncations (T,)). Refused with one line
    when its files disagree with its metadata: a file missing or changed (by the checksums
    edis-jax stores), or fewer or more episodes or steps than the metadata counts."""
    import minari

    metadata = raw_metadata(dataset_id)
    _check_files(dataset_id, metadata)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            minari_dataset = minari.load_dataset(dataset_id)
            episodes = [_episode_arrays(ep) for ep in minari_dataset.iterate_episodes()]
    except (ValueError, KeyError, OSError) as e:
        raise ValueError(
            f"cannot read dataset {dataset_id!r} at {dataset_path(dataset_id)} ({e}): "
            + rebuild_hint(dataset_id, metadata)
        ) from None
    counted = (metadata.get("total_episodes"), metadata.get("total_steps"))
    found = (len(episodes), sum(len(ep["rewards"]) for ep in episodes))
    if counted[0] is not None and counted != found:
        raise ValueError(
            f"dataset {dataset_id!r} at {dataset_path(dataset_id)} is damaged: its metadata "
            f"counts {counted[0]} episodes and {counted[1]} steps, its files hold {found[0]} and "
            f"{found[1]}: " + rebuild_hint(dataset_id, metadata)
        )
    return episodes


def raw_metadata(dataset_id: str) -> dict:
    path = dataset_path(dataset_id) / "data" / "metadata.json"
    try:
        with open(path) as f:
            metadata = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        reason = "missing" if isinstance(e, FileNotFoundError) else f"unreadable: {e}"
        raise ValueError(
            f"dataset {dataset_id!r}: its {path} is {reason}: " + rebuild_hint(dataset_id, {})
        ) from None
    if not isinstance(metadata, dict):
        raise ValueError(f"dataset {dataset_id!r}: {path} is not a JSON object: "
                         + rebuild_hint(dataset_id, {}))  # fmt: skip
    return metadata


def rebuild_hint(dataset_id: str, metadata: dict) -> str:
    """How to get a good copy of the dataset back: its own build command where edis-jax built
    it, else delete and build or download it again."""
    command = (metadata.get("edis_jax") or {}).get("command")
    if command and "installed_from" not in metadata.get("edis_jax", {}):
        return f"rebuild it with `{command} --overwrite`"
    return f"delete {dataset_path(dataset_id)} and build or download it again"


def _check_files(dataset_id: str, metadata: dict) -> None:
    for name, digest in (metadata.get(CHECKSUMS_KEY) or {}).items():
        path = dataset_path(dataset_id) / "data" / name
        problem = "is missing" if not path.is_file() else None
        if problem is None and _sha256(path) != digest:
            problem = "has changed since it was written (checksum)"
        if problem is not None:
            raise ValueError(
                f"dataset {dataset_id!r} is damaged: its file {path} {problem}: "
                + rebuild_hint(dataset_id, metadata)
            )


def _file_checksums(data_dir: Path) -> dict[str, str]:
    """sha256 of every file of the episodes (not the top metadata.json, which `data scores`
    updates), by path relative to data_dir."""
    return {
        str(p.relative_to(data_dir)): _sha256(p)
        for p in sorted(data_dir.rglob("*"))
        if p.is_file() and p.parent != data_dir
    }


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def metadata_env_id(metadata: dict) -> str:
    """The evaluation env's id (eval_env_spec if given, else the collection env)."""
    if metadata.get("env_id"):
        return metadata["env_id"]
    for key in ("eval_env_spec", "env_spec"):
        spec = metadata.get(key)
        if spec:
            return json.loads(spec)["id"]
    return ""


def env_kwargs(metadata: dict) -> dict:
    """The keyword arguments (max_episode_steps included) of the env spec `metadata_env_id` reads
    (eval_env_spec, else env_spec) that differ from its id's registered spec. Minari's
    D4RL/antmaze datasets need them: their eval env is AntMaze_*-v4 with the D4RL evaluation
    maze (a fixed start "r" and goal "g" cell), continuing_task=True and reset_target=False
    (Farama's minari-dataset-generation-scripts, scripts/D4RL/antmaze/create_antmaze_dataset.py),
    where the registered id draws start and goal at random. {} when the id cannot be made here
    (making the env reports that) or the metadata names the env by id only."""
    if metadata.get("env_id"):
        return {}
    spec = next((metadata[k] for k in ("eval_env_spec", "env_spec") if metadata.get(k)), None)
    if spec is None:
        return {}
    spec = json.loads(spec)
    try:
        register_env_package(spec["id"])
        registered = gym.spec(spec["id"])
    except (ValueError, gym.error.Error):
        return {}
    registered_kwargs = json.loads(json.dumps(registered.kwargs))  # JSON's lists, as stored
    kwargs = {k: v for k, v in (spec.get("kwargs") or {}).items() if registered_kwargs.get(k) != v}
    steps = spec.get("max_episode_steps")
    if steps and steps != registered.max_episode_steps:
        kwargs["max_episode_steps"] = steps
    return kwargs


def write_dataset(
    dataset_id: str,
    env_id: str,
    episodes: list[dict],
    *,
    ref_min_score: float | None = None,
    ref_max_score: float | None = None,
    description: str = "",
    algorithm_name: str = "",
    build_info: dict | None = None,
    env_kwargs: dict | None = None,
    overwrite: bool = False,
) -> Path:
    """Write episodes as a Minari dataset (arrow format) under MINARI_DATASETS_PATH.

    `env_kwargs` (as `env_kwargs` reads them back) become the dataset's eval_env_spec: the
    registered spec of `env_id` with them applied, as Minari's D4RL/antmaze datasets store it.

    The data is written to a hidden folder first and moved into place when complete, so an
    interrupted build never leaves a half dataset under the id, and --overwrite replaces the old
    one only once the new one is whole.
    """
    check_dataset_id(dataset_id)
    with writer(dataset_id):
        return _write_dataset(
            dataset_id, env_id, episodes, ref_min_score=ref_min_score,
            ref_max_score=ref_max_score, description=description, algorithm_name=algorithm_name,
            build_info=build_info, env_kwargs=env_kwargs, overwrite=overwrite,
        )  # fmt: skip


def check_new(dataset_id: str, overwrite: bool) -> None:
    """Refuse an id that is taken, unless --overwrite."""
    final = dataset_path(dataset_id)
    if final.exists() and not overwrite:
        raise ValueError(
            f"dataset {dataset_id!r} already exists at {final}: choose another --id "
            "(e.g. bump the -vN version) or pass --overwrite"
        )


def _write_dataset(
    dataset_id, env_id, episodes, *, ref_min_score, ref_max_score, description, algorithm_name,
    build_info, env_kwargs, overwrite,
) -> Path:  # fmt: skip
    import minari
    from minari.data_collector.episode_buffer import EpisodeBuffer
    from minari.dataset.minari_storage import MinariStorage

    check_new(dataset_id, overwrite)
    final = dataset_path(dataset_id)
    # The env's own spaces: Dict observations are stored as dicts, as Minari's D4RL/antmaze are.
    env = make_gym_env(env_id)
    obs_space, act_space = env.observation_space, env.action_space
    env.close()
    root = datasets_root()
    staging = root / f".edis-staging-{uuid.uuid4().hex[:8]}"
    try:
        staging.mkdir(parents=True)
        storage = MinariStorage.new(
            staging / "data",
            observation_space=obs_space,
            action_space=act_space,
            env_spec=gym.spec(env_id),
            data_format="arrow",
        )
        metadata = {
            "dataset_id": dataset_id,
            "minari_version": minari.__version__,
            "algorithm_name": algorithm_name or "unspecified",
            "description": description or f"{dataset_id} built by edis-jax",
            "requirements": requirements(env_id),
        }
        if ref_min_score is not None:
            metadata["ref_min_score"] = float(ref_min_score)
        if ref_max_score is not None:
            metadata["ref_max_score"] = float(ref_max_score)
        if build_info:
            metadata["edis_jax"] = build_info
        if env_kwargs:
            metadata["eval_env_spec"] = _spec_with(env_id, env_kwargs).to_json()
        storage.update_metadata(metadata)
        storage.update_episodes(
            EpisodeBuffer(
                id=i,
                observations=_stored_observations(obs_space, ep["observations"]),
                actions=np.asarray(ep["actions"], act_space.dtype),
                rewards=np.asarray(ep["rewards"], np.float64),
                terminations=np.asarray(ep["terminations"], bool),
                truncations=np.asarray(ep["truncations"], bool),
            )
            for i, ep in enumerate(episodes)
        )
        storage.update_metadata({CHECKSUMS_KEY: _file_checksums(staging / "data")})
        _move_into_place(staging, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    _register_namespace(dataset_id)
    return final


def _spec_with(env_id: str, env_kwargs: dict) -> gym.envs.registration.EnvSpec:
    """The registered spec of `env_id` with `env_kwargs` applied (max_episode_steps included)."""
    spec = gym.spec(env_id)
    kwargs = {k: v for k, v in env_kwargs.items() if k != "max_episode_steps"}
    steps = env_kwargs.get("max_episode_steps", spec.max_episode_steps)
    return dataclasses.replace(spec, kwargs={**spec.kwargs, **kwargs}, max_episode_steps=steps)


def store_reference_scores(dataset_id: str, ref_min_score: float, ref_max_score: float) -> None:
    """Write reference scores into a stored dataset's metadata."""
    from minari.dataset.minari_storage import MinariStorage

    with writer(dataset_id):
        storage = MinariStorage.read(dataset_path(dataset_id) / "data")
        storage.update_metadata(
            {"ref_min_score": float(ref_min_score), "ref_max_score": float(ref_max_score)}
        )


def _episode_arrays(ep) -> dict:
    # (N, dim) float32 from a Box (any shape) or a Dict of Boxes, in the layout the online env
    # shows the agent (observations.flatten_observations).
    observations = flatten_observations(ep.observations).astype(np.float32)
    actions = flatten_observations(ep.actions).astype(np.float32)
    if len(observations) != len(ep.rewards) + 1:
        raise ValueError(
            f"episode {ep.id} has {len(observations)} observations for {len(ep.rewards)} steps "
            "(expected steps + 1)"
        )
    return {
        "observations": observations,
        "actions": actions,
        "rewards": np.asarray(ep.rewards, np.float32).reshape(-1),
        "terminations": np.asarray(ep.terminations, bool).reshape(-1),
        "truncations": np.asarray(ep.truncations, bool).reshape(-1),
    }


def _stored_observations(space: gym.Space, observations):
    """Episode observations (T+1, dim), flat as agents see them, in the env's own
    space for Minari: a dict of arrays for a Dict space."""
    if isinstance(space, gym.spaces.Dict):
        return unflatten_observations(space, np.asarray(observations))
    return np.asarray(observations, space.dtype)


def _move_into_place(staging: Path, final: Path) -> None:
    final.parent.mkdir(parents=True, exist_ok=True)
    if not final.exists():
        staging.rename(final)
        return
    trash = final.parent / f".edis-replaced-{uuid.uuid4().hex[:8]}"
    final.rename(trash)
    staging.rename(final)
    shutil.rmtree(trash, ignore_errors=True)


def _register_namespace(dataset_id: str) -> None:
    """Minari's (experimental) namespace metadata, so `minari list local` groups the dataset."""
    from minari.dataset.minari_dataset import parse_dataset_id
    from minari.namespace import create_namespace, list_local_namespaces

    namespace = parse_dataset_id(dataset_id)[0]
    if namespace is not None and namespace not in list_local_namespaces():
        # ValueError: created concurrently, or a name Minari's namespaces reject; not needed by us
        with contextlib.suppress(ValueError):
            create_namespace(namespace)

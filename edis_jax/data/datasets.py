"""Minari datasets as flat transitions.

Loading looks in MINARI_DATASETS_PATH, then among the datasets shipped with the package
(edis_jax/assets/datasets, installed into MINARI_DATASETS_PATH on first use), then asks Minari
to download it when huggingface_hub is installed and the hub answers within two seconds; else
it fails at once with a message saying how to build or download the dataset.
Writing (for the builder) is atomic: a dataset appears under its id only once complete.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import socket
import threading
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import gymnasium as gym
import numpy as np

from edis_jax import envs
from edis_jax.data.scores import ReferenceScoreError, normalized_score
from edis_jax.data.transition import Transition

__all__ = [
    "DEFAULT_DISCOUNT",
    "Dataset",
    "DatasetNotFoundError",
    "InvalidDatasetError",
    "ReferenceScoreError",
    "dataset_info",
    "check_dataset_id",
    "dataset_problem",
    "dataset_path",
    "export_dataset",
    "list_datasets",
    "load_dataset",
    "normalized_score",
    "returns_to_go",
    "set_reference_scores",
    "write_dataset",
]

DEFAULT_DISCOUNT = 0.99  # discount of mc_return (Cal-QL's calibration bound)
ASSETS_DIR = Path(__file__).resolve().parent.parent / "assets" / "datasets"
_HUB = ("huggingface.co", 443)  # where Minari's remote datasets live
# How far a dataset's actions may lie outside the env's bounds (float32 storage, rounding).
ACTION_TOLERANCE = 1e-3


class DatasetNotFoundError(ValueError):
    """The dataset id is neither stored locally, shipped, nor downloadable right now."""


class InvalidDatasetError(ValueError):
    """The dataset cannot be trained on; the message names the dataset, what is wrong and where."""


@dataclass(frozen=True)
class Dataset:
    """A Minari dataset flattened into transitions (numpy float32 leaves)."""

    transitions: Transition
    env_id: str
    ref_min_score: float | None
    ref_max_score: float | None
    episode_returns: np.ndarray
    dataset_id: str
    episode_lengths: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    metadata: dict = field(default_factory=dict)  # the dataset's raw Minari metadata
    # Keyword arguments of the dataset's (evaluation) env spec beyond env_id's registered ones
    # (`env_kwargs`); {} for data built here. Online steps and evaluations make the env with them.
    env_kwargs: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.transitions)

    def normalized_score(self, returns, ref_min: float | None = None, ref_max: float | None = None):
        """100 (R - ref_min)/(ref_max - ref_min) with the dataset's reference scores, unless
        ref_min/ref_max (e.g. from --ref-min-score/--ref-max-score) are given."""
        lo = self.ref_min_score if ref_min is None else ref_min
        hi = self.ref_max_score if ref_max is None else ref_max
        return normalized_score(returns, lo, hi, self.dataset_id)


# ---------------------------------------------------------------------------------- loading


def load_dataset(
    dataset_id: str,
    *,
    discount: float = DEFAULT_DISCOUNT,
    download: bool | None = None,
    validate: bool = True,
) -> Dataset:
    """The dataset's transitions, with mc_return = discounted returns-to-go (see returns_to_go).

    download: None = try Minari's remote when huggingface_hub is installed, the hub is reachable
    and HF_HUB_OFFLINE is not set; False = never. Raises DatasetNotFoundError (within seconds,
    offline) naming the id and how to build or download it. Raises InvalidDatasetError for data
    that cannot be trained on: no episodes, an episode without a step, and, unless validate is
    False (`data info` shows the problem instead), the problems `dataset_problem` finds.
    """
    episodes, metadata = read_episodes(dataset_id, download=download)
    if not episodes:
        raise InvalidDatasetError(
            f"dataset {dataset_id!r} holds no episodes: rebuild it with more --steps"
        )
    short = [i for i, ep in enumerate(episodes) if len(ep["rewards"]) == 0]
    if short:
        raise InvalidDatasetError(
            f"dataset {dataset_id!r}: {len(short)} episodes hold fewer than two observations "
            f"(first: episode {short[0]}): rebuild the dataset"
        )
    data = _flatten(dataset_id, episodes, metadata, discount)
    problem = dataset_problem(data) if validate else None
    if problem is not None:
        raise InvalidDatasetError(problem)
    return data


def dataset_problem(data: Dataset) -> str | None:
    """The first reason the data cannot be trained on, as one line, or None: NaN or inf in
    observations, actions, rewards or next observations, or actions outside the env's bounds
    by more than ACTION_TOLERANCE (when the env can be made here)."""
    t, name = data.transitions, repr(data.dataset_id)
    fields = (
        ("observations", t.obs), ("actions", t.action), ("rewards", t.reward),
        ("next observations", t.next_obs),
    )  # fmt: skip
    for field_name, values in fields:
        bad = ~np.isfinite(np.asarray(values).reshape(len(t), -1)).all(axis=1)
        if bad.any():
            return (
                f"dataset {name}: {int(bad.sum())} rows of {field_name} hold NaN or inf (first "
                f"at row {int(np.argmax(bad))}): rebuild the dataset or drop those episodes"
            )
    bounds = _action_bounds(data.env_id)
    if bounds is None:
        return None
    low, high = bounds
    action = np.asarray(t.action, np.float64)
    excess = np.maximum(low - action, action - high)  # > 0 outside the box
    outside = (excess > ACTION_TOLERANCE).any(axis=1)
    if outside.any():
        row, col = np.unravel_index(np.argmax(excess), excess.shape)
        return (
            f"dataset {name}: {int(outside.sum())} rows of actions lie outside {data.env_id}'s "
            f"action bounds by more than {ACTION_TOLERANCE} (worst {action[row, col]:.4g} at row "
            f"{row}, bounds [{low[col]:.4g}, {high[col]:.4g}]): store actions in the env's units"
        )
    return None


def read_episodes(dataset_id: str, *, download: bool | None = None) -> tuple[list[dict], dict]:
    """The dataset's episodes as dicts of numpy arrays (observations (T+1, ds), actions (T, da),
    rewards, terminations, truncations (T,)) and its raw metadata."""
    import minari

    _ensure_local(dataset_id, download)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            minari_dataset = minari.load_dataset(dataset_id)
            episodes = [_episode_arrays(ep) for ep in minari_dataset.iterate_episodes()]
    except (ValueError, KeyError, OSError) as e:
        raise ValueError(
            f"cannot read dataset {dataset_id!r} at {dataset_path(dataset_id)} ({e}); "
            "delete it and build or download it again"
        ) from None
    return episodes, _raw_metadata(dataset_id)


def returns_to_go(
    rewards,
    terminations,
    truncations,
    discount: float,
    *,
    shift: float = 0.0,
    fail_reward: float | None = None,
) -> np.ndarray:
    """G_t = r_t + discount G_{t+1} within each episode, for flat arrays of consecutive steps.

    shift is added to every reward first (an agent's reward bias over its scale). fail_reward
    (Cal-QL's sparse-reward rule, the published get_return_to_go): an episode whose last reward
    equals it gets (r_last + shift) / (1 - discount) at every step, the value of failing forever.

    An episode ends at a termination, a truncation, or the end of the arrays. After a
    termination the future is zero, so G is exact. After a truncation (time limit, or a dataset
    cut at its step budget) the future is unknown and taken as zero, as CORL's Cal-QL does: G is
    then the discounted sum of the rewards observed, an underestimate when rewards are
    non-negative, which only weakens Cal-QL's calibration (Q of policy actions is bounded
    below by G), never pushes Q above its true value.
    """
    rewards = np.asarray(rewards, np.float64)
    ends = np.logical_or(np.asarray(terminations, bool), np.asarray(truncations, bool))
    if rewards.shape != ends.shape or rewards.ndim != 1:
        raise ValueError(
            f"rewards {rewards.shape}, terminations and truncations must be equal 1-d shapes"
        )
    raw = rewards
    if shift:
        rewards = rewards + shift
    out = np.empty_like(rewards)
    future, fail_value = 0.0, None
    for t in range(len(rewards) - 1, -1, -1):
        if ends[t] or t == len(rewards) - 1:  # the last step of an episode
            future = 0.0
            failed = fail_reward is not None and raw[t] == fail_reward
            fail_value = rewards[t] / (1.0 - discount) if failed else None
        future = rewards[t] + discount * future
        out[t] = future if fail_value is None else fail_value
    return out.astype(np.float32)


def dataset_returns_to_go(
    data: Dataset, discount: float, *, shift: float = 0.0, fail_reward: float | None = None
) -> np.ndarray:
    """returns_to_go over a loaded dataset's episodes (the mc_return load_dataset computes, with
    a shift and the sparse-reward rule)."""
    t = data.transitions
    ends = np.zeros(len(t.reward), bool)
    ends[np.cumsum(data.episode_lengths) - 1] = True
    terminal = np.asarray(t.terminal) > 0
    return returns_to_go(t.reward, terminal, ends, discount, shift=shift, fail_reward=fail_reward)


def list_datasets() -> list[dict]:
    """Local datasets (MINARI_DATASETS_PATH) and shipped ones not yet installed, one dict each:
    id, env_id, transitions, episodes, ref_min_score, ref_max_score, kind, location."""
    import minari

    rows = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        local = minari.list_local_datasets()
    for dataset_id, meta in local.items():
        rows[dataset_id] = _summary_row(dataset_id, meta, "local")
    for path in sorted(ASSETS_DIR.glob("*.npz")):
        meta = _read_npz_metadata(path)
        if meta.get("dataset_id") and meta["dataset_id"] not in rows:
            rows[meta["dataset_id"]] = _summary_row(meta["dataset_id"], meta, "shipped")
    return list(rows.values())


def dataset_info(dataset_id: str) -> dict:
    """What a dataset holds: sizes, return statistics, reference scores, env id, how it was
    built, and "checks": "ok" or the problem that makes load_dataset refuse it."""
    data = load_dataset(dataset_id, validate=False)
    returns = data.episode_returns
    info = {
        "id": dataset_id,
        "env_id": data.env_id,
        "path": str(dataset_path(dataset_id)),
        "transitions": len(data),
        "episodes": len(returns),
        "obs_dim": data.transitions.obs_dim,
        "act_dim": data.transitions.act_dim,
        "terminations": int(data.transitions.terminal.sum()),
        "episode_length": _stats(data.episode_lengths),
        "episode_return": _stats(returns),
        "ref_min_score": data.ref_min_score,
        "ref_max_score": data.ref_max_score,
        "normalized_return": None,
        "checks": dataset_problem(data) or "ok",
    }
    if data.env_kwargs:
        info["env_kwargs"] = data.env_kwargs
    try:
        info["normalized_return"] = _stats(data.normalized_score(returns))
    except ReferenceScoreError as e:
        info["normalized_return_error"] = str(e)
    build = data.metadata.get("edis_jax")
    if build:
        info["build"] = build
    return info


# ---------------------------------------------------------------------------------- writing


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
    overwrite: bool = False,
) -> Path:
    """Write episodes as a Minari dataset (arrow format) under MINARI_DATASETS_PATH.

    The data is written to a hidden folder first and moved into place when complete, so an
    interrupted build never leaves a half dataset under the id, and --overwrite replaces the old
    one only once the new one is whole.
    """
    import minari
    from minari.data_collector.episode_buffer import EpisodeBuffer
    from minari.dataset.minari_storage import MinariStorage

    check_dataset_id(dataset_id)
    final = dataset_path(dataset_id)
    if final.exists() and not overwrite:
        raise ValueError(
            f"dataset {dataset_id!r} already exists at {final}: choose another --id "
            "(e.g. bump the -vN version) or pass --overwrite"
        )
    # The env's own spaces: Dict observations are stored as dicts, as Minari's D4RL/antmaze are.
    env = envs.make_env(env_id, flat_observations=False)
    obs_space, act_space = env.observation_space, env.action_space
    env.close()
    root = _datasets_root()
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
            "requirements": _requirements(env_id),
        }
        if ref_min_score is not None:
            metadata["ref_min_score"] = float(ref_min_score)
        if ref_max_score is not None:
            metadata["ref_max_score"] = float(ref_max_score)
        if build_info:
            metadata["edis_jax"] = build_info
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
        _move_into_place(staging, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    _register_namespace(dataset_id)
    return final


def set_reference_scores(dataset_id: str, ref_min_score: float, ref_max_score: float) -> None:
    """Store reference scores in an existing local dataset's metadata."""
    from minari.dataset.minari_storage import MinariStorage

    if not ref_max_score > ref_min_score:
        raise ValueError(
            f"--ref-max-score ({ref_max_score}) must be above --ref-min-score ({ref_min_score})"
        )
    _ensure_local(dataset_id, download=False)
    storage = MinariStorage.read(dataset_path(dataset_id) / "data")
    storage.update_metadata(
        {"ref_min_score": float(ref_min_score), "ref_max_score": float(ref_max_score)}
    )


def export_dataset(dataset_id: str, path: str | os.PathLike) -> Path:
    """Save a dataset as one compressed .npz (episodes concatenated, float32, and the metadata
    as JSON): the form in which datasets ship with the package (edis_jax/assets/datasets)."""
    episodes, metadata = read_episodes(dataset_id)
    lengths = np.array([len(ep["rewards"]) for ep in episodes], np.int64)
    keep = ("dataset_id", "ref_min_score", "ref_max_score", "description", "algorithm_name")
    meta = {k: metadata[k] for k in keep if k in metadata}
    meta["env_id"] = _env_id(metadata)
    meta["edis_jax"] = metadata.get("edis_jax", {})
    meta["total_steps"], meta["total_episodes"] = int(lengths.sum()), len(episodes)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cat = lambda key, dtype: np.concatenate([ep[key] for ep in episodes]).astype(dtype)  # noqa: E731
    np.savez_compressed(
        path,
        metadata=np.array(json.dumps(meta)),
        episode_lengths=lengths,
        observations=cat("observations", np.float32),
        actions=cat("actions", np.float32),
        rewards=cat("rewards", np.float32),
        terminations=cat("terminations", bool),
        truncations=cat("truncations", bool),
    )
    return path


# ---------------------------------------------------------------------------------- helpers


def _flatten(dataset_id: str, episodes: list[dict], metadata: dict, discount: float) -> Dataset:
    lengths = np.array([len(ep["rewards"]) for ep in episodes], np.int64)
    cat = lambda key: np.concatenate([ep[key] for ep in episodes])  # noqa: E731
    rewards = cat("rewards").astype(np.float32)
    terminations = cat("terminations").astype(bool)
    truncations = cat("truncations").astype(bool)
    # Mark every episode's last step as an end, also when the episode carries neither flag.
    ends = truncations.copy()
    ends[np.cumsum(lengths) - 1] = True
    transitions = Transition(
        obs=np.concatenate([ep["observations"][:-1] for ep in episodes]).astype(np.float32),
        action=cat("actions").astype(np.float32),
        reward=rewards,
        next_obs=np.concatenate([ep["observations"][1:] for ep in episodes]).astype(np.float32),
        terminal=terminations.astype(np.float32),
        mc_return=returns_to_go(rewards, terminations, ends, discount),
    )
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    episode_returns = np.add.reduceat(rewards.astype(np.float64), starts)
    return Dataset(
        transitions=transitions,
        env_id=_env_id(metadata),
        ref_min_score=_optional_float(metadata.get("ref_min_score")),
        ref_max_score=_optional_float(metadata.get("ref_max_score")),
        episode_returns=episode_returns,
        dataset_id=dataset_id,
        episode_lengths=lengths,
        metadata=metadata,
        env_kwargs=env_kwargs(metadata),
    )


def _action_bounds(env_id: str) -> tuple[np.ndarray, np.ndarray] | None:
    """The env's Box action bounds (float64), or None when the env cannot be made here (its
    package is missing) or its actions are not a bounded Box: training reports those itself."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            env = envs.make_env(env_id)
    except Exception:  # gymnasium raises many types for a missing env or package
        return None
    space = env.action_space
    env.close()
    if not isinstance(space, gym.spaces.Box) or not np.all(np.isfinite(space.low)):
        return None
    return np.asarray(space.low, np.float64).ravel(), np.asarray(space.high, np.float64).ravel()


def _episode_arrays(ep) -> dict:
    observations = _flat_space_values(ep.observations)
    actions = _flat_space_values(ep.actions)
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


def _flat_space_values(values) -> np.ndarray:
    """(N, dim) float32 from a Box (any shape) or a Dict of Boxes, in the layout the online env
    shows the agent (envs.flatten_observations: the Dict's keys in sorted order)."""
    return envs.flatten_observations(values).astype(np.float32)


def _stored_observations(space: gym.Space, observations):
    """Episode observations (T+1, dim), flat as envs.make_env gives them, in the env's own
    space for Minari: a dict of arrays for a Dict space."""
    if isinstance(space, gym.spaces.Dict):
        return envs.unflatten_observations(space, np.asarray(observations))
    return np.asarray(observations, space.dtype)


def _requirements(env_id: str) -> list[str]:
    requirements = ["mujoco==4.0.0", f"gymnasium=={gym.__version__}"]
    if envs.env_package(env_id) == "gymnasium-robotics":
        import gymnasium_robotics

        requirements.append(f"gymnasium-robotics=={gymnasium_robotics.__version__}")
    return requirements


def _ensure_local(dataset_id: str, download: bool | None) -> None:
    check_dataset_id(dataset_id)
    if (dataset_path(dataset_id) / "data").exists():
        return
    shipped = _shipped_path(dataset_id)
    if shipped is not None:
        _install_shipped(shipped)
        return
    reason = _download(dataset_id, download)
    if reason is None:
        return
    raise DatasetNotFoundError(
        f"dataset {dataset_id!r} is not in {_datasets_root()} (MINARI_DATASETS_PATH){reason}: "
        + _missing_dataset_hint(dataset_id)
    )


# Namespaces of ids that only `data make` writes (tasks.py's local/ ids, the tests' test/ ids):
# the Minari hub has none of them. D4RL's AntMaze and Adroit data (human demonstrations, cloned
# policies, maze planners) cannot be rebuilt by `data make`: those are download only.
LOCAL_NAMESPACES = ("local", "test")
DOWNLOAD_ONLY_NAMESPACES = ("D4RL",)


def _missing_dataset_hint(dataset_id: str) -> str:
    """How to get the dataset: `data make` and/or a download from the Minari hub."""
    namespace = dataset_id.split("/")[0]
    download = f"`pip install 'minari[hf]' && minari download {dataset_id}`"
    if namespace in DOWNLOAD_ONLY_NAMESPACES:
        return f"download it (needs internet) with {download}"
    build = f"build it with `{_make_command_hint(dataset_id)}`"
    if namespace in LOCAL_NAMESPACES:
        return build
    return f"{build}, or, with internet, download it with {download}"


def _download(dataset_id: str, download: bool | None) -> str | None:
    """None once downloaded; else why not: '' when no download was tried (not allowed, offline
    mode, or no huggingface_hub), or the reason it failed."""
    if download is False or os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0"):
        return ""
    if importlib.util.find_spec("huggingface_hub") is None:
        return ""
    if not _hub_reachable(timeout=2.0):
        return " and the Minari hub is unreachable"
    import minari

    try:
        minari.download_dataset(dataset_id)
    except Exception as e:  # any remote failure becomes the one-line not-found message
        first_line = str(e).splitlines()[0] if str(e) else type(e).__name__
        return f" and downloading it failed ({first_line})"
    return None if (dataset_path(dataset_id) / "data").exists() else " and the download was empty"


def _hub_reachable(timeout: float) -> bool:
    # A thread bounds the whole probe, DNS lookup included (socket timeouts do not cover DNS).
    result: list[bool] = []

    def probe():
        try:
            socket.create_connection(_HUB, timeout=timeout).close()
            result.append(True)
        except OSError:
            pass

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    return bool(result)


def _make_command_hint(dataset_id: str) -> str:
    """`edis-jax data make ...` for ids shaped like namespace/env/kind-vN, else a template."""
    parts = dataset_id.split("/")
    env, kind = "ENV", "KIND"
    if len(parts) >= 2:
        guess = _registered_env(parts[-2])
        env = guess or env
        name = parts[-1].rpartition("-v")[0]
        kind = (
            name
            if name in ("random", "medium", "medium-replay", "expert", "medium-expert")
            else kind
        )
    return f"edis-jax data make --env {env} --kind {kind} --steps N --id {dataset_id}"


def _registered_env(name: str) -> str | None:
    """The newest gymnasium id whose name matches `name` case-insensitively (hopper -> Hopper-v5)."""
    matches = [k for k in gym.registry if k.rpartition("-v")[0].lower() == name.lower()]
    return max(matches, key=lambda k: int(k.rpartition("-v")[2] or 0)) if matches else None


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


def _datasets_root() -> Path:
    from minari.storage.datasets_root_dir import get_dataset_path

    return Path(get_dataset_path())


def dataset_path(dataset_id: str) -> Path:
    """Where the dataset lives (or would live) under MINARI_DATASETS_PATH."""
    return _datasets_root() / dataset_id


def _raw_metadata(dataset_id: str) -> dict:
    with open(dataset_path(dataset_id) / "data" / "metadata.json") as f:
        return json.load(f)


def _env_id(metadata: dict) -> str:
    """The evaluation env's id (eval_env_spec if given, else the collection env)."""
    if metadata.get("env_id"):
        return metadata["env_id"]
    for key in ("eval_env_spec", "env_spec"):
        spec = metadata.get(key)
        if spec:
            return json.loads(spec)["id"]
    return ""


def env_kwargs(metadata: dict) -> dict:
    """The keyword arguments (max_episode_steps included) of the env spec `_env_id` reads
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
        envs.register_env_package(spec["id"])
        registered = gym.spec(spec["id"])
    except (ValueError, gym.error.Error):
        return {}
    registered_kwargs = json.loads(json.dumps(registered.kwargs))  # JSON's lists, as stored
    kwargs = {k: v for k, v in (spec.get("kwargs") or {}).items() if registered_kwargs.get(k) != v}
    steps = spec.get("max_episode_steps")
    if steps and steps != registered.max_episode_steps:
        kwargs["max_episode_steps"] = steps
    return kwargs


def _optional_float(value) -> float | None:
    return None if value is None else float(value)


def _stats(x) -> dict:
    x = np.asarray(x, np.float64)
    if x.size == 0:
        return {"mean": None, "std": None, "min": None, "max": None}
    return {"mean": x.mean(), "std": x.std(), "min": x.min(), "max": x.max()}


def _summary_row(dataset_id: str, meta: dict, location: str) -> dict:
    return {
        "id": dataset_id,
        "env_id": _env_id(meta),
        "transitions": meta.get("total_steps"),
        "episodes": meta.get("total_episodes"),
        "ref_min_score": meta.get("ref_min_score"),
        "ref_max_score": meta.get("ref_max_score"),
        "kind": (meta.get("edis_jax") or {}).get("kind"),
        "location": location,
    }


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


def _shipped_path(dataset_id: str) -> Path | None:
    path = ASSETS_DIR / (dataset_id.replace("/", "__") + ".npz")
    return path if path.exists() else None


def _read_npz_metadata(path: Path) -> dict:
    with np.load(path) as f:
        return json.loads(str(f["metadata"]))


def _install_shipped(path: Path) -> None:
    """Write a shipped .npz into MINARI_DATASETS_PATH as a regular Minari dataset."""
    with np.load(path) as f:
        meta = json.loads(str(f["metadata"]))
        arrays = {k: f[k] for k in f.files if k != "metadata"}
    lengths = arrays["episode_lengths"]
    step_starts = np.cumsum(lengths) - lengths
    obs_starts = step_starts + np.arange(len(lengths))  # each episode has one extra observation
    episodes = []
    for t0, o0, n in zip(step_starts, obs_starts, lengths, strict=True):
        steps = slice(t0, t0 + n)
        episodes.append(
            {
                "observations": arrays["observations"][o0 : o0 + n + 1],
                "actions": arrays["actions"][steps],
                "rewards": arrays["rewards"][steps],
                "terminations": arrays["terminations"][steps],
                "truncations": arrays["truncations"][steps],
            }
        )
    build = dict(meta.get("edis_jax") or {})
    build["installed_from"] = f"edis_jax/assets/datasets/{path.name}"
    try:
        write_dataset(
            meta["dataset_id"],
            meta["env_id"],
            episodes,
            ref_min_score=meta.get("ref_min_score"),
            ref_max_score=meta.get("ref_max_score"),
            description=meta.get("description", ""),
            algorithm_name=meta.get("algorithm_name", ""),
            build_info=build,
        )
    except ValueError:
        if not (dataset_path(meta["dataset_id"]) / "data").exists():
            raise  # else another process installed it first: fine

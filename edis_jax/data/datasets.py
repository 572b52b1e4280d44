"""Loading a dataset: found in MINARI_DATASETS_PATH, among the datasets shipped with the package
(installed into MINARI_DATASETS_PATH on first use), or downloaded by Minari when
huggingface_hub is installed and the hub answers within two seconds; else it fails at once
saying how to build or download it. Then flattened into transitions with their returns-to-go,
and checked. Also listing datasets and describing one (`edis-jax data list|info`).

The store itself (paths, reading, writing) is data/minari_store.py; shipped datasets
data/shipped.py; the hub data/hub.py.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import gymnasium as gym
import numpy as np

from edis_jax.data import hub, minari_store, shipped
from edis_jax.data.env_packages import make_gym_env
from edis_jax.data.returns import returns_to_go
from edis_jax.data.scores import ReferenceScoreError, normalized_score
from edis_jax.data.transition import Transition
from edis_jax.storage.output_paths import check_output_file

DEFAULT_DISCOUNT = 0.99  # discount of mc_return (Cal-QL's calibration bound)
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
    spaces = _env_spaces(data.env_id)
    if spaces is None:
        return None
    obs_dim, low, high = spaces
    if (obs_dim, len(low)) != (t.obs_dim, t.act_dim):
        return (
            f"dataset {name}: its metadata names the env {data.env_id} (observations {obs_dim}, "
            f"actions {len(low)}), but its data has observations {t.obs_dim}, actions "
            f"{t.act_dim}: it holds another env's data; fix the env in "
            f"{minari_store.dataset_path(data.dataset_id) / 'data' / 'metadata.json'} or "
            "rebuild the dataset"
        )
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
    rewards, terminations, truncations (T,)) and its raw metadata, found as load_dataset
    finds it."""
    _ensure_local(dataset_id, download)
    episodes = minari_store.read_minari_episodes(dataset_id)
    return episodes, minari_store.raw_metadata(dataset_id)


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


def list_datasets() -> tuple[list[dict], list[str]]:
    """Local datasets (MINARI_DATASETS_PATH) and shipped ones not yet installed, one dict each:
    id, env_id, transitions, episodes, ref_min_score, ref_max_score, kind, location; and the
    folders of the store that hold a dataset's data/ but could not be read ("path (why)")."""
    rows, unreadable = {}, []
    for folder in _dataset_folders(minari_store.datasets_root()):
        dataset_id = folder.relative_to(minari_store.datasets_root()).as_posix()
        meta, why = None, "its path is not a dataset id (namespace/name-vN)"
        try:
            minari_store.check_dataset_id(dataset_id)
            why = "no readable data/metadata.json"
            meta = minari_store.raw_metadata(dataset_id)
        except ValueError:
            pass
        if meta is not None and meta.get("dataset_id") != dataset_id:
            meta, why = None, f"its metadata names it {meta.get('dataset_id')!r}"
        if meta is None:
            unreadable.append(f"{folder} ({why})")
        else:
            rows[dataset_id] = _summary_row(dataset_id, meta, "local")
    for meta in shipped.shipped_metadata():
        if meta.get("dataset_id") and meta["dataset_id"] not in rows:
            rows[meta["dataset_id"]] = _summary_row(meta["dataset_id"], meta, "shipped")
    return list(rows.values()), unreadable


def _dataset_folders(folder: Path) -> list[Path]:
    """The folders under `folder` that hold a data/ folder (Minari's layout: namespace folders,
    then the dataset's), hidden folders (staging, locks) skipped; sorted."""
    if (folder / "data").is_dir():
        return [folder]
    if not folder.is_dir():
        return []
    found = []
    for child in sorted(folder.iterdir()):
        if child.is_dir() and not child.name.startswith("."):
            found += _dataset_folders(child)
    return found


def dataset_info(dataset_id: str) -> dict:
    """What a dataset holds: sizes, return statistics, reference scores, env id, how it was
    built, and "checks": "ok" or the problem that makes load_dataset refuse it."""
    data = load_dataset(dataset_id, validate=False)
    returns = data.episode_returns
    info = {
        "id": dataset_id,
        "env_id": data.env_id,
        "path": str(minari_store.dataset_path(dataset_id)),
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


def set_reference_scores(dataset_id: str, ref_min_score: float, ref_max_score: float) -> None:
    """Store reference scores in an existing local (or shipped) dataset's metadata."""
    if not ref_max_score > ref_min_score:
        raise ValueError(
            f"--ref-max-score ({ref_max_score}) must be above --ref-min-score ({ref_min_score})"
        )
    _ensure_local(dataset_id, download=False)
    minari_store.store_reference_scores(dataset_id, ref_min_score, ref_max_score)


def export_dataset(dataset_id: str, path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Save a dataset as one compressed .npz (episodes concatenated, float32, and the metadata
    as JSON) at exactly `path`: the form in which datasets ship with the package
    (edis_jax/assets/datasets). An existing file is replaced only with `overwrite`."""
    check_output_file(path, "the export file", overwrite)
    episodes, metadata = read_episodes(dataset_id)
    return shipped.write_npz(episodes, metadata, path)


def _ensure_local(dataset_id: str, download: bool | None) -> None:
    minari_store.check_dataset_id(dataset_id)
    if (minari_store.dataset_path(dataset_id) / "data").exists():
        return
    asset = shipped.shipped_path(dataset_id)
    if asset is not None:
        shipped.install_shipped(asset)
        return
    reason = hub.download(dataset_id, download)
    if reason is None:
        return
    raise DatasetNotFoundError(
        f"dataset {dataset_id!r} is not in {minari_store.datasets_root()} "
        f"(MINARI_DATASETS_PATH){reason}: " + hub.missing_dataset_hint(dataset_id)
    )


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
        env_id=minari_store.metadata_env_id(metadata),
        ref_min_score=_optional_float(metadata.get("ref_min_score")),
        ref_max_score=_optional_float(metadata.get("ref_max_score")),
        episode_returns=episode_returns,
        dataset_id=dataset_id,
        episode_lengths=lengths,
        metadata=metadata,
        env_kwargs=minari_store.env_kwargs(metadata),
    )


def _env_spaces(env_id: str) -> tuple[int, np.ndarray, np.ndarray] | None:
    """The env's flat observation size and Box action bounds (float64), or None when the env
    cannot be made here (its package is missing) or its actions are not a bounded Box: training
    reports those itself."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            env = make_gym_env(env_id)
    except Exception:  # gymnasium raises many types for a missing env or package
        return None
    space, obs_dim = env.action_space, gym.spaces.flatdim(env.observation_space)
    env.close()
    if not isinstance(space, gym.spaces.Box) or not np.all(np.isfinite(space.low)):
        return None
    low, high = (np.asarray(b, np.float64).ravel() for b in (space.low, space.high))
    return obs_dim, low, high


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
        "env_id": minari_store.metadata_env_id(meta),
        "transitions": meta.get("total_steps"),
        "episodes": meta.get("total_episodes"),
        "ref_min_score": meta.get("ref_min_score"),
        "ref_max_score": meta.get("ref_max_score"),
        "kind": (meta.get("edis_jax") or {}).get("kind"),
        "location": location,
    }

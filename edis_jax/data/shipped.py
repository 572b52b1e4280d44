"""Datasets shipped with the package (edis_jax/assets/datasets/*.npz): finding one, installing
it into the Minari store on first use, and writing one (`edis-jax data export`)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from edis_jax.data import minari_store
from edis_jax.storage.output_paths import write_whole

ASSETS_DIR = Path(__file__).resolve().parent.parent / "assets" / "datasets"


def shipped_path(dataset_id: str) -> Path | None:
    path = ASSETS_DIR / (dataset_id.replace("/", "__") + ".npz")
    return path if path.exists() else None


def shipped_metadata() -> list[dict]:
    """The metadata of every shipped dataset."""
    return [read_npz_metadata(path) for path in sorted(ASSETS_DIR.glob("*.npz"))]


def read_npz_metadata(path: Path) -> dict:
    with np.load(path) as f:
        return json.loads(str(f["metadata"]))


def install_shipped(path: Path) -> None:
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
    # Two commands starting on one shipped dataset: the second waits for the first's install.
    with minari_store.writer(meta["dataset_id"], wait=True):
        if (minari_store.dataset_path(meta["dataset_id"]) / "data").exists():
            return
        minari_store.write_dataset(
            meta["dataset_id"],
            meta["env_id"],
            episodes,
            ref_min_score=meta.get("ref_min_score"),
            ref_max_score=meta.get("ref_max_score"),
            description=meta.get("description", ""),
            algorithm_name=meta.get("algorithm_name", ""),
            build_info=build,
            env_kwargs=meta.get("env_kwargs"),
        )


def write_npz(episodes: list[dict], metadata: dict, path: str | os.PathLike) -> Path:
    """Save episodes as one compressed .npz (concatenated, float32) with the metadata (a
    dataset's own, as JSON) that installing it needs: the form in which datasets ship."""
    lengths = np.array([len(ep["rewards"]) for ep in episodes], np.int64)
    keep = ("dataset_id", "ref_min_score", "ref_max_score", "description", "algorithm_name")
    meta = {k: metadata[k] for k in keep if k in metadata}
    meta["env_id"] = minari_store.metadata_env_id(metadata)
    # The evaluation env's arguments (D4RL/antmaze's evaluation maze): without them the
    # installed copy would evaluate on the registered env.
    meta["env_kwargs"] = minari_store.env_kwargs(metadata)
    meta["edis_jax"] = metadata.get("edis_jax", {})
    meta["total_steps"], meta["total_episodes"] = int(lengths.sum()), len(episodes)
    path = Path(path)
    cat = lambda key, dtype: np.concatenate([ep[key] for ep in episodes]).astype(dtype)  # noqa: E731
    # Written to exactly `path` (numpy adds .npz to a name without it; a file object it keeps).
    write_whole(path, lambda f: np.savez_compressed(
        f,
        metadata=np.array(json.dumps(meta)),
        episode_lengths=lengths,
        observations=cat("observations", np.float32),
        actions=cat("actions", np.float32),
        rewards=cat("rewards", np.float32),
        terminations=cat("terminations", bool),
        truncations=cat("truncations", bool),
    ))  # fmt: skip
    return path

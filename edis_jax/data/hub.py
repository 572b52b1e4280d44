"""The Minari hub: downloading a dataset when the hub answers quickly, and telling a user whose
dataset is missing how to build or download it."""

from __future__ import annotations

import importlib.util
import os
import socket
import threading

import gymnasium as gym

from edis_jax.data import minari_store

_HUB = ("huggingface.co", 443)  # where Minari's remote datasets live
# Namespaces of ids that only `data make` writes (config/tasks.py's local/ ids, the tests' test/ ids):
# the Minari hub has none of them. D4RL's AntMaze and Adroit data (human demonstrations, cloned
# policies, maze planners) cannot be rebuilt by `data make`: those are download only.
LOCAL_NAMESPACES = ("local", "test")
DOWNLOAD_ONLY_NAMESPACES = ("D4RL",)


def download(dataset_id: str, download: bool | None) -> str | None:
    """None once downloaded; else why not: '' when no download was tried (not allowed, offline
    mode, or no huggingface_hub), or the reason it failed."""
    if download is False or os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0"):
        return ""
    if importlib.util.find_spec("huggingface_hub") is None:
        return ""
    if not hub_reachable(timeout=2.0):
        return " and the Minari hub is unreachable"
    import minari

    try:
        minari.download_dataset(dataset_id)
    except Exception as e:  # any remote failure becomes the one-line not-found message
        first_line = str(e).splitlines()[0] if str(e) else type(e).__name__
        return f" and downloading it failed ({first_line})"
    return (
        None
        if (minari_store.dataset_path(dataset_id) / "data").exists()
        else " and the download was empty"
    )


def hub_reachable(timeout: float) -> bool:
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


def missing_dataset_hint(dataset_id: str) -> str:
    """How to get the dataset: `data make` and/or a download from the Minari hub."""
    namespace = dataset_id.split("/")[0]
    download = f"`pip install 'minari[hf]' && minari download {dataset_id}`"
    if namespace in DOWNLOAD_ONLY_NAMESPACES:
        return f"download it (needs internet) with {download}"
    build = f"build it with `{make_command_hint(dataset_id)}`"
    if namespace in LOCAL_NAMESPACES:
        return build
    return f"{build}, or, with internet, download it with {download}"


def make_command_hint(dataset_id: str) -> str:
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

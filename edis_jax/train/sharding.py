"""Sharding the seed axis: N vmapped seeds spread over the available devices.

Every state of a run (agents, generators, buffers, keys) carries a leading seed axis. Placing
such a pytree on a 1-D mesh with axis "seeds" lets XLA (GSPMD) run each device's share of the
seeds with no communication, since vmapped seeds never interact: the same jitted program runs
on one CPU, one GPU or several. On one device placement is a no-op.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

SEED_AXIS = "seeds"


def shard_seeds(tree, devices: Sequence[jax.Device] | None = None):
    """Place `tree` (every array leaf with the same leading seed axis) on a 1-D mesh over
    `devices` (default: all), splitting the seeds evenly. On one device, `tree` is committed to
    it, as the arrays of a restored checkpoint are: jit compiles anew for committed arguments
    where it saw uncommitted ones, so a run resumed in the same process (a notebook, the tests)
    would compile every program of its loop again. Raises ValueError when the seeds do not
    divide evenly."""
    devices = list(jax.devices() if devices is None else devices)
    if not jax.tree.leaves(tree):
        return tree
    if len(devices) == 1:
        return jax.device_put(tree, devices[0])
    num_seeds = seed_count(tree)
    if num_seeds % len(devices):
        raise ValueError(
            f"{num_seeds} seeds cannot be split evenly over {len(devices)} devices: use a "
            f"multiple of {len(devices)} seeds, or fewer devices (e.g. CUDA_VISIBLE_DEVICES)"
        )
    return jax.device_put(tree, seed_sharding(devices))


def seed_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh named "seeds" over `devices` (default: all)."""
    devices = list(jax.devices() if devices is None else devices)
    return Mesh(np.asarray(devices), (SEED_AXIS,))


def seed_sharding(devices: Sequence[jax.Device] | None = None) -> NamedSharding:
    """Split the leading axis over the "seeds" mesh, every other axis kept whole."""
    return NamedSharding(seed_mesh(devices), PartitionSpec(SEED_AXIS))


def seed_count(tree) -> int:
    """The common leading size of the array leaves of `tree`; a clear error if they differ
    or a leaf has no leading axis."""
    leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
    sizes = {}
    for path, leaf in leaves:
        shape = np.shape(leaf)
        if not shape:
            raise ValueError(
                f"leaf {jax.tree_util.keystr(path)} is a scalar with no seed axis: give every "
                "leaf a leading seed axis (jax.vmap the state's creation)"
            )
        sizes.setdefault(shape[0], jax.tree_util.keystr(path))
    if len(sizes) != 1:
        found = ", ".join(f"{n} at {p}" for n, p in sizes.items())
        raise ValueError(
            f"leaves disagree on the leading seed axis ({found}): every leaf "
            "must have the same number of seeds first"
        )
    return next(iter(sizes))


def device_memory_bytes() -> tuple[int, str] | None:
    """The memory the seeds can spread over and what it is: the accelerators' memory (all
    devices together), or the host's RAM for CPU devices; None when unknown."""
    devices = jax.devices()
    limits = [(d.memory_stats() or {}).get("bytes_limit") for d in devices]
    if all(limits):
        return int(sum(limits)), f"{len(devices)} {devices[0].platform.upper()} device(s)"
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), "this machine's RAM"
    except (ValueError, OSError):
        return None

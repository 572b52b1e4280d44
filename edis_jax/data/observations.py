"""The flat observation layout agents see, shared by the dataset loader (Minari stores Dict
observations as dicts) and the env wrapper (envs.FlatObservation).

A Dict observation (gymnasium-robotics' AntMaze: observation, achieved_goal, desired_goal) is
its keys in sorted order, each value flattened, concatenated. That is gymnasium's own Dict order
(`spaces.Dict` sorts its keys) and so `gymnasium.spaces.flatten`'s; for AntMaze it gives
[achieved_goal (x, y), desired_goal (goal x, y), observation (27)], 31 values.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np


def flatten_observations(values) -> np.ndarray:
    """(N, dim) from N observations: an array with a leading axis N (any trailing shape), or a
    dict of them (gymnasium Dict observations, nested dicts too): the keys in sorted order, each
    value flattened, concatenated. Sorted is gymnasium's Dict order, so a row equals
    `gymnasium.spaces.flatten(space, observation)`. Keeps the values' (common) dtype."""
    if isinstance(values, dict):
        return np.concatenate([flatten_observations(values[k]) for k in sorted(values)], axis=-1)
    values = np.asarray(values)
    if values.dtype == object:
        raise ValueError("only Box and Dict-of-Box observation spaces are supported")
    return values.reshape(len(values), -1)


def unflatten_observations(space: gym.Space, flat: np.ndarray):
    """The inverse of `flatten_observations` for observations of `space`: (N, dim) -> an array
    (N, *shape) in the space's dtype, or for a Dict space a dict of them."""
    flat = np.asarray(flat)
    if isinstance(space, gym.spaces.Dict):
        out, start = {}, 0
        for key in sorted(space.spaces):
            size = gym.spaces.flatdim(space.spaces[key])
            out[key] = unflatten_observations(space.spaces[key], flat[:, start : start + size])
            start += size
        return out
    return flat.reshape(len(flat), *space.shape).astype(space.dtype)


def as_batch(tree):
    """A leading axis of 1 on every array of a (nested) dict."""
    if isinstance(tree, dict):
        return {k: as_batch(v) for k, v in tree.items()}
    return np.asarray(tree)[None]

"""datagen/rollout.py: the episode recorder (rollouts themselves are checked through the
builder's datasets in test_builder.py)."""

import numpy as np

from edis_jax.datagen.rollout import EpisodeRecorder


def test_episode_recorder_returns_an_episode_when_it_ends_and_starts_again_on_reset():
    recorder = EpisodeRecorder(np.zeros(2, np.float32))
    assert recorder.step(np.ones(1), 1.0, False, False, np.full(2, 1.0, np.float32)) is None
    episode = recorder.step(np.ones(1), 2.0, True, False, np.full(2, 2.0, np.float32))
    assert episode["observations"].tolist() == [[0, 0], [1, 1], [2, 2]]
    assert episode["rewards"].tolist() == [1.0, 2.0] and episode["actions"].shape == (2, 1)
    assert episode["terminations"].tolist() == [False, True]
    assert episode["truncations"].dtype == bool and not episode["truncations"].any()
    recorder.reset(np.full(2, 5.0, np.float32))
    again = recorder.step(np.zeros(1), 0.5, False, True, np.full(2, 6.0, np.float32))
    assert again["observations"].tolist() == [[5, 5], [6, 6]] and again["truncations"].tolist() == [
        True
    ]

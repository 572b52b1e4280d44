"""data/returns.py: discounted returns-to-go within episodes."""

import numpy as np

from edis_jax.data import returns


def test_returns_to_go_splits_episodes_at_every_end():
    r = np.array([1.0, 1.0, 1.0, 1.0])
    # An end flag (termination or truncation) stops the sum; the array end does too.
    g = returns.returns_to_go(r, [0, 1, 0, 0], [0, 0, 0, 0], 0.9)
    np.testing.assert_allclose(g, [1.9, 1.0, 1.9, 1.0], rtol=1e-6)
    g = returns.returns_to_go(r, [0, 0, 0, 0], [1, 0, 0, 0], 0.9)
    np.testing.assert_allclose(g, [1.0, 2.71, 1.9, 1.0], rtol=1e-6)

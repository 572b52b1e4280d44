"""data/normalizer.py: the transition codec."""

import jax
import jax.numpy as jnp
import numpy as np

from edis_jax.data.normalizer import Normalizer, TransitionCodec
from edis_jax.data.transition import Transition


def test_transition_codec_round_trips_absolute_and_delta_vectors():
    k = jax.random.split(jax.random.PRNGKey(0), 3)
    obs = jax.random.normal(k[0], (6, 3))
    t = Transition.from_arrays(obs, jnp.ones((6, 2)), jnp.arange(6.0), obs + 0.1, jnp.zeros(6))
    for delta in (False, True):
        norm = Normalizer.fit(t.to_vector(delta))
        codec = TransitionCodec(norm, delta)
        back = codec.decode(codec.encode(t), 3, 2)
        np.testing.assert_allclose(back.next_obs, t.next_obs, atol=1e-5)
        np.testing.assert_allclose(back.obs, t.obs, atol=1e-5)
    # The delta vector's last part is s' - s: 0.1 everywhere here.
    np.testing.assert_allclose(t.to_vector(True)[:, -3:], 0.1, atol=1e-6)

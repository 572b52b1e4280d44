"""edis-jax: energy-guided diffusion sampling (EDIS) for offline-to-online RL in JAX."""

__version__ = "0.1.0"

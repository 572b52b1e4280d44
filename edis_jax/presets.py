"""Moved to edis_jax.config.presets; this path goes in the next release."""

from edis_jax import _moved

_moved(__name__, "edis_jax.config.presets")

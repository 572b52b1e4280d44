"""edis-jax: energy-guided diffusion sampling (EDIS) for offline-to-online RL in JAX."""

__version__ = "0.1.0"


def _moved(old: str, new: str) -> None:
    """Keep the module path `old` importable for one release: it becomes the module `new` itself
    (the same objects, so patching either patches both), with a DeprecationWarning that names the
    new path at the importer's line."""
    import importlib
    import sys
    import warnings

    warnings.warn(
        f"{old} moved to {new}; the old path goes in the next release",
        DeprecationWarning,
        stacklevel=3,  # _moved, the old module, then (import machinery skipped) the importer
    )
    sys.modules[old] = importlib.import_module(new)

"""The tiny run configuration that test_train.py and test_directory.py start their runs from, and
`tree_hashes`, which the tests use to prove a folder byte-identical before and after."""

import hashlib
from pathlib import Path

from edis_jax import config
from edis_jax.config import presets

DATASET = "test/hopper/random-v0"  # conftest.HOPPER: built once per session


def tiny(tmp_path: Path, name: str, **changes) -> config.RunConfig:
    base = presets.preset("tiny").replace(
        dataset=DATASET,
        out=str(tmp_path / name),
        offline_steps=100,
        online_steps=120,
        eval_every=60,
        log_every=30,
        checkpoint_every=60,
        online=config.OnlineConfig(utd=1, retrain_every=60, num_samples=256),
    )
    return base.replace(**changes)


def tree_hashes(root: Path) -> dict[str, str]:
    """Every file and folder under root, with a hash of each file's bytes ("/" for a folder)."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "/"
        for p in sorted(root.rglob("*"))
    }

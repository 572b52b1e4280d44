"""The pip packages that provide the gymnasium envs gymnasium does not register by itself
(gymnasium-robotics' AntMaze and Adroit, ale-py): importing the one an env id needs, a one-line
error naming it when it is missing, and the requirements a dataset of that env records.
"""

from __future__ import annotations

import contextlib
import importlib
import tempfile

import gymnasium as gym

# Env families that gymnasium itself does not register, by name prefix: the package to install.
_ENV_PACKAGES = {
    "gymnasium-robotics": (
        "Adroit", "AntMaze", "PointMaze", "Fetch", "HandManipulate", "HandReach", "FrankaKitchen",
    ),
    "ale-py": ("ALE/",),
}  # fmt: skip


# The module that registers each package's envs with gymnasium when imported.
_PACKAGE_MODULES = {"gymnasium-robotics": "gymnasium_robotics", "ale-py": "ale_py"}


def register_env_package(env_id: str) -> None:
    """Import the package that registers `env_id` (gymnasium-robotics for AntMaze and Adroit:
    gymnasium does not load it by itself); a one-line error naming the package to install when
    it is missing. Ids of other envs pass through."""
    package = env_package(env_id)
    if package is None:
        return
    try:
        importlib.import_module(_PACKAGE_MODULES[package])
    except ImportError:
        raise _missing_package(env_id, package) from None


def make_gym_env(env_id: str, **kwargs) -> gym.Env:
    """`gym.make(env_id, **kwargs)` after `register_env_package`, under `scratch_tempdir`."""
    register_env_package(env_id)
    with scratch_tempdir():
        return gym.make(env_id, **kwargs)


@contextlib.contextmanager
def scratch_tempdir():
    """Build envs with the temp dir pointed at a folder of our own, removed afterwards.

    gymnasium-robotics' mazes (AntMaze, PointMaze) write their maze XML beside a temporary
    directory, into the system temp dir itself, and never delete it: one file per env made
    (hundreds per AntMaze run, one set per evaluation). The XML is read while the env is built.
    """
    with tempfile.TemporaryDirectory(prefix="edis-env-") as folder:
        before, tempfile.tempdir = tempfile.tempdir, folder
        try:
            yield
        finally:
            tempfile.tempdir = before


def _missing_package(env_id: str, package: str) -> ValueError:
    extra = ' (or `pip install -e ".[robotics]"`)' if package == "gymnasium-robotics" else ""
    return ValueError(
        f"gymnasium env {env_id!r} comes from the {package} package, which is not "
        f"installed here: `pip install {package}`{extra}"
    )


def env_package(env_id: str) -> str | None:
    """The package (pip name) that provides `env_id` when gymnasium does not, else None."""
    for package, prefixes in _ENV_PACKAGES.items():
        if env_id.startswith(prefixes):
            return package
    return None


def requirements(env_id: str) -> list[str]:
    """The packages (pinned to the versions here) a dataset of `env_id` was made with."""
    pinned = ["mujoco==4.0.0", f"gymnasium=={gym.__version__}"]
    if env_package(env_id) == "gymnasium-robotics":
        import gymnasium_robotics

        pinned.append(f"gymnasium-robotics=={gymnasium_robotics.__version__}")
    return pinned

"""Shared test set-up: CPU only, persistent compilation cache, datasets in a temporary folder."""

import os
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# LLVM at -O0 halves the CPU time of the suite, which is mostly compiling tiny programs
# (tests/test_generator.py: 229 -> 112 s of CPU). It changes float32 results at roundoff level,
# so the tests compare runs with each other and with references within tolerances, never with
# hashes of default-optimised runs (that is benchmarks/bitwise_check.py's job, at the default).
# Child processes (notebook kernel, CLI subprocesses) inherit it. MJX's programs run about 50
# times slower at -O0 (tests/test_jax_online.py's Hopper run), so a child started with
# FULL_OPTIMISATION=1 keeps XLA's default level.
FULL_OPTIMISATION = "EDIS_TEST_FULL_OPTIMISATION"
level_set = "xla_backend_optimization_level" in os.environ.get("XLA_FLAGS", "")
if os.environ.get(FULL_OPTIMISATION) != "1" and not level_set:
    os.environ["XLA_FLAGS"] = (
        f"{os.environ.get('XLA_FLAGS', '')} --xla_backend_optimization_level=0"
    )

import jax  # noqa: E402
import pytest  # noqa: E402

_cache = os.environ.get("JAX_COMPILATION_CACHE_DIR")
if _cache:
    jax.config.update("jax_compilation_cache_dir", _cache)


# The longest files first (seconds of one core each, `make test` at c84874b: 395, 165, 125, 113,
# 113). --dist loadfile hands whole files to the workers in collection order (the Makefile turns
# off xdist's own order, by test count), so the two workers end together instead of one of them
# running test_train.py alone at the end.
LONGEST_FIRST = (
    "test_train.py",
    "test_benchmarks.py",
    "test_jax_envs.py",
    "test_jax_online.py",
    "test_jax_envs_x64.py",
)


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep order


@pytest.fixture(scope="module", autouse=True)
def _release_compiled_programs():
    """Drop every compiled program after a test file unless the process has room for one more
    file's. Loaded executables keep their code mapped: one tiny EDIS run adds about 4,800 memory
    mappings, test_train.py about 47,000, and the whole suite in one process reached Linux's
    default limit of 65,530 (vm.max_map_count), where loading the next executable segfaulted.
    While there is room, the programs are kept: a later file that runs the same ones skips
    tracing and lowering them (the persistent cache skips only XLA's compile)."""
    yield
    if _mappings_used() > _MAPPINGS_LIMIT - _ONE_FILES_MAPPINGS:
        jax.clear_caches()


_ONE_FILES_MAPPINGS = (
    50_000  # the most one file adds: test_train.py, first in its worker, ends at 46,832
)


def _mappings_used() -> float:
    try:
        with open("/proc/self/maps") as maps:
            return sum(1 for _ in maps)
    except OSError:  # no /proc (macOS): clear after every file, as before
        return float("inf")


try:
    _MAPPINGS_LIMIT = int(Path("/proc/sys/vm/max_map_count").read_text())
except (OSError, ValueError):
    _MAPPINGS_LIMIT = 65530


@pytest.fixture
def minari_path(tmp_path, monkeypatch):
    """A fresh, empty MINARI_DATASETS_PATH for one test."""
    path = tmp_path / "minari"
    path.mkdir()
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(path))
    return path


# The run tests' datasets: a small Hopper random one, and a Pendulum one (another env).
HOPPER = "test/hopper/random-v0"
PENDULUM = "test/pendulum/random-v0"


@pytest.fixture(scope="session")
def dataset_path(tmp_path_factory):
    """A MINARI_DATASETS_PATH holding HOPPER (1500 steps) and PENDULUM (400), built once."""
    from edis_jax.datagen import builder

    path = tmp_path_factory.mktemp("minari_runs")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MINARI_DATASETS_PATH", str(path))
        builder.make_dataset("Hopper-v5", "random", 1500, HOPPER, seed=0)
        builder.make_dataset("Pendulum-v1", "random", 400, PENDULUM, seed=0)
    return path


@pytest.fixture
def datasets_env(dataset_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(dataset_path))

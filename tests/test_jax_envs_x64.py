"""The JAX-native envs' definition check in 64-bit: one step from gymnasium's own state gives
gymnasium's next observation and reward within 1e-6 (relative to max(1, |value|)) and the same
terminated / truncated flags, over 1000 transitions per env (random actions past the action box
and a fixed policy, episode ends included). It runs in a child process with JAX_ENABLE_X64=1
(benchmarks/jax_envs.py --fidelity-only), so the rest of the suite keeps float32."""

import json
import os
import subprocess
import sys

import pytest

from edis_jax.envs.jax_env import INEXACT_ENV_IDS, JAX_ENV_IDS, MJX_ENV_IDS

# Measured here: 2e-15 (Hopper), 1.2e-13 (Walker2d), 1.3e-12 (HalfCheetah) for observations;
# rewards 1e-9 to 8e-8, since gymnasium computes the control cost in float32 (a float32 action
# times a Python float stays float32 in NumPy 2). Pendulum's observation is float32 in
# gymnasium: 6e-8.
TOLERANCE = 1e-6


EXACT_ENV_IDS = [e for e in JAX_ENV_IDS if e not in INEXACT_ENV_IDS]
# `make test` steps Pendulum and Hopper in 64-bit (Hopper: the MJX wiring every MJX env shares:
# model, frame skip, controls, the state read from gymnasium) and checks every MJX env's task
# code. Walker2d's and HalfCheetah's 64-bit steps (two more MJX compiles, about 40 s of a core
# here) run in `make test-all`; `make test` steps them in float32 (test_jax_envs.py).
SLOW_PHYSICS = ("Walker2d-v5", "HalfCheetah-v5")


def fidelity_rows(envs, task_code_only=()) -> dict[str, dict]:
    """benchmarks/jax_envs.py's fidelity rows of `envs` (and the task code of `task_code_only`),
    in a child process with JAX_ENABLE_X64=1."""
    pytest.importorskip("mujoco.mjx", reason="the mjx extra is not installed")
    command = [
        sys.executable, "-m", "benchmarks.jax_envs", "--fidelity-only", "--no-returns",
        "--transitions", "1000", "--envs", *envs, "--task-code-only", *task_code_only,
    ]  # fmt: skip
    found = subprocess.run(
        command, env={**os.environ, "JAX_ENABLE_X64": "1"}, capture_output=True, text=True
    )
    assert found.returncode == 0, found.stderr[-3000:]
    return {row["env"]: row for row in json.loads(found.stdout.strip().splitlines()[-1])}


@pytest.fixture(scope="module")
def rows():
    fast = [e for e in EXACT_ENV_IDS if e not in SLOW_PHYSICS]
    return fidelity_rows(fast, [e for e in MJX_ENV_IDS if e not in fast])


@pytest.fixture(scope="module")
def slow_rows():
    return fidelity_rows(SLOW_PHYSICS)


@pytest.mark.parametrize(
    "env_id",
    [pytest.param(e, marks=pytest.mark.slow) if e in SLOW_PHYSICS else e for e in EXACT_ENV_IDS],
)
def test_one_step_from_gymnasiums_state_is_gymnasiums_step(request, env_id):
    row = request.getfixturevalue("slow_rows" if env_id in SLOW_PHYSICS else "rows")[env_id]
    assert row["precision"] == "float64" and row["transitions"] == 1000
    assert row["obs_error"]["max"] <= TOLERANCE, row
    assert row["reward_error"]["max"] <= TOLERANCE, row
    assert row["terminated_differs"] == 0 and row["truncated_differs"] == 0, row


@pytest.mark.parametrize("env_id", MJX_ENV_IDS)
def test_task_code_on_mujocos_states_is_gymnasiums(rows, env_id):
    # Observation layout, every reward term, health and termination, on MuJoCo C's own states:
    # exact for every MJX env, Ant-v5 included, whose MJX physics differs (INEXACT_ENV_IDS).
    found = rows[env_id]["task_code"]
    assert found["obs_error_max"] <= TOLERANCE and found["reward_error_max"] <= TOLERANCE, found
    assert found["terminated_differs"] == 0, found

# Two commands do all the set-up: `make run` (edis_jax/make_run.py) and `make test`.
# jax 0.11 and newer need Python >= 3.12, so the venv is made with the first of python3.12 and
# python3.13 that runs here (pyenv's installed versions too, which its shims hide unless selected),
# else python3. A .venv made with another Python version is made anew.
PYTHON ?= $(shell for v in 3.12 3.13; do \
  for p in python$$v $${PYENV_ROOT:-$$HOME/.pyenv}/versions/$$v*/bin/python$$v; do \
    $$p -c "" 2>/dev/null && echo $$p && exit 0; done; done; echo python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# JAX's persistent compilation cache: a second `make test` skips most XLA compiles.
export JAX_COMPILATION_CACHE_DIR ?= $(CURDIR)/.jax_cache
export JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS ?= 0.5
# Minari datasets built by this project live here unless the user says otherwise.
export MINARI_DATASETS_PATH ?= $(CURDIR)/datasets

.PHONY: run test test-all lint format bench bench-gpu clean

PYVERSION = import sys; print(*sys.version_info[:2])

$(STAMP): pyproject.toml
	@if [ -x $(BIN)/python ] && [ "$$($(BIN)/python -c '$(PYVERSION)')" != "$$($(PYTHON) -c '$(PYVERSION)')" ]; then \
	  echo "$(VENV) was made with another Python than $(PYTHON): making it anew"; rm -rf $(VENV); fi
	@[ -x $(BIN)/python ] || (echo "$(PYTHON) -m venv $(VENV)" && $(PYTHON) -m venv $(VENV))
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/python -m edis_jax.make_run

# `make test` skips the @slow tests (the full benchmark harness at tiny sizes, the diagnose command
# on Pendulum, the tiny Adroit run) to stay well inside CI's time; `make test-all` runs everything. The suite is mostly XLA compiling, one core per process: TEST_WORKERS pytest
# processes (pytest-xdist) take one test file each at a time.
TEST_WORKERS ?= 2
test: $(STAMP)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder -m "not slow" --durations=15 tests

test-all: $(STAMP)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder --durations=15 tests

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format . && $(BIN)/ruff check --fix .

# The bench extra is torch==2.13.0 (the PyTorch reference). PyPI's Linux wheel of it is the CUDA
# build, several GB with its NVIDIA libraries; a machine with a local CPU wheel for Python 3.11
# only keeps that download off with `make clean bench PYTHON=python3.11`.
bench: $(STAMP)
	$(BIN)/pip install --quiet -e ".[bench]"
	$(BIN)/python -m benchmarks.run

# The GPU run in one command (benchmarks/gpu.py): installs the CUDA build of jax (the cuda
# extra), then runs every part within 8 minutes. Flags go in BENCH_GPU_ARGS, e.g.
# `make bench-gpu BENCH_GPU_ARGS="--budget-s 600"`.
# CUDA_EXTRA=cuda12 installs the CUDA 12 build instead (drivers older than 580).
BENCH_GPU_ARGS ?=
CUDA_EXTRA ?= cuda
bench-gpu: $(STAMP)
	$(BIN)/pip install --quiet -e ".[$(CUDA_EXTRA)]"
	$(BIN)/python -m benchmarks.gpu $(BENCH_GPU_ARGS)

clean:
	rm -rf $(VENV) .jax_cache .pytest_cache

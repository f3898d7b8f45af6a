# One entry point for everything a developer or CI does. `make test` is the test command.
VENV   ?= .venv
PYTHON ?= python3
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed
HOST   ?= 127.0.0.1
PORT   ?= 8000
WORKERS ?= 1
# Every version, transitive ones included, pinned with its sha256: the venv, the images and CI install
# this. pyproject.toml pins the direct dependencies; `make lock` derives the rest.
LOCK   := requirements.lock
# The frameworks tests/integrations runs (extra `integrations`): pinned with hashes but without their
# own dependencies, which would pull CUDA wheels, deepspeed and flash-attn.
INTEGRATIONS_LOCK := requirements-integrations.lock
# DeepSpeed for GPU machines (extra `gpu`): pinned with hashes, without dependencies, never installed
# here (no GPU); bench/fullsize_wheels.sh turns it into wheels for a GPU machine.
GPU_LOCK := requirements-gpu.lock
LOCK_EXTRAS := --extra service --extra trainer --extra test --extra deploy --extra dev --extra serve
IMAGE_LOCKS := deploy/reward-api/requirements.txt deploy/trainer/requirements.txt
# The lock tool, at the version pyproject.toml pins (extra `dev`).
UV_PIN := $(shell grep -o '"uv==[^"]*"' pyproject.toml | tr -d '"')
# Where the CPU build of torch lies (the lock says torch==X+cpu; PyPI's torch is the CUDA build).
WHEELS ?= $(or $(PIP_FIND_LINKS),/opt/wheels)
# Resolve for the images' and CI's platform, whatever machine runs `make lock`.
# UPGRADE=1 moves every transitive pin to its newest allowed version; otherwise the lock's pins stay.
UV_COMPILE = --python-version 3.11 --python-platform x86_64-manylinux_2_28 --find-links $(WHEELS) \
	--custom-compile-command 'make lock' --quiet $(if $(UPGRADE),--upgrade)
LINT_PATHS := services shared trainer

.PHONY: install lock lint test serve bench bench-scaling demo clean

# Exactly the lock (no resolver: --no-deps, every file checked against its hash), then the project
# itself, editable, with the lock's setuptools.
$(STAMP): $(LOCK) $(INTEGRATIONS_LOCK) pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --require-hashes --no-deps --only-binary=:all: -r $(LOCK)
	$(PIP) install -q --require-hashes --no-deps -r $(INTEGRATIONS_LOCK)
	$(PIP) install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

install: $(STAMP)

# Rewrites the lock and the images' requirement files, which are cut from it (-c: the same versions).
# The trainer image's base carries its own CUDA build of torch: its file names torch's dependencies
# but not torch (Dockerfile.train checks the version).
lock:
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q $(UV_PIN)
	$(VENV)/bin/uv pip compile pyproject.toml $(LOCK_EXTRAS) --generate-hashes $(UV_COMPILE) -o $(LOCK)
	$(PY) -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['optional-dependencies']['integrations']))" \
		> $(VENV)/integrations.in
	$(VENV)/bin/uv pip compile $(VENV)/integrations.in --no-deps --generate-hashes $(UV_COMPILE) -o $(INTEGRATIONS_LOCK)
	$(PY) -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['optional-dependencies']['gpu']))" \
		> $(VENV)/gpu.in
	$(VENV)/bin/uv pip compile $(VENV)/gpu.in --no-deps --generate-hashes $(UV_COMPILE) -o $(GPU_LOCK)
	$(VENV)/bin/uv pip compile pyproject.toml --extra service --generate-hashes -c $(LOCK) $(UV_COMPILE) \
		-o deploy/reward-api/requirements.txt
	$(VENV)/bin/uv pip compile pyproject.toml --extra trainer --no-emit-package torch -c $(LOCK) $(UV_COMPILE) \
		-o deploy/trainer/requirements.txt
	@! grep -nE '^(nvidia-|triton)|^torch==.*\+cu' $(LOCK) $(IMAGE_LOCKS) \
		|| { echo "CUDA packages in the lock: is $(WHEELS) missing the CPU torch wheel?" >&2; exit 1; }
	@echo "wrote $(LOCK), $(INTEGRATIONS_LOCK), $(GPU_LOCK) and $(IMAGE_LOCKS); now: make install"

# ruff (lint + format) and mypy on the code; every check runs, the target fails if any failed.
lint: $(STAMP)
	@status=0; \
	$(VENV)/bin/ruff check $(LINT_PATHS) || status=1; \
	$(VENV)/bin/ruff format --check $(LINT_PATHS) || status=1; \
	$(VENV)/bin/mypy || status=1; \
	exit $$status

test: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) -m pytest tests $(PYTEST_ARGS)

serve: $(STAMP)
	$(PY) -m services.reward_api --host $(HOST) --port $(PORT) --workers $(WORKERS)

bench: $(STAMP)
	$(PY) -m bench
	OMP_NUM_THREADS=1 $(PY) -m bench.ray_serve

# One client, every core (issue 15's target) alone: 1 worker against 2, side by side, the ratio of
# every repetition printed; the raw JSON is kept under docs/bench-runs, named by date and time.
bench-scaling: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) -m bench --only scaling --out docs/bench-runs/$$(date +%Y-%m-%d-%H%M)-scaling.json

demo: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) -m trainer.demo

# runs/ holds every recipe's checkpoints and is left alone.
clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

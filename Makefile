# One entry point for everything a developer or CI does. `make test` is the test command.
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed
HOST   ?= 127.0.0.1
PORT   ?= 8000
WORKERS ?= 1
# The torch pin, read from pyproject.toml (the one place versions live).
TORCH_PIN := $(shell grep -o '"torch==[^"]*"' pyproject.toml | tr -d '"')

.PHONY: install test serve bench demo clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch first and by exact version: it resolves to the local CPU wheel, never a CUDA download.
	$(PIP) install -q $(TORCH_PIN)
	$(PIP) install -q -e '.[service,trainer,test]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) -m pytest tests $(PYTEST_ARGS)

serve: $(STAMP)
	$(PY) -m services.reward_api --host $(HOST) --port $(PORT) --workers $(WORKERS)

bench: $(STAMP)
	$(PY) -m bench

demo: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) -m trainer.demo

clean:
	rm -rf $(VENV) .pytest_cache runs

# Quick start: `make serve` and `make test`. Both create .venv and install what they need.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PY     := $(BIN)/python
HOST   ?= 127.0.0.1
PORT   ?= 50051
DATA   ?= ./data

# Reinstall (regenerate protobuf modules, recompile Cython) whenever an input of the build changes.
BUILD_INPUTS := pyproject.toml setup.py $(shell find protos native -name '*.proto' -o -name '*.pyx' -o -name '*.pxd' 2>/dev/null)

.PHONY: help install dev serve test test-only test-kernels-debug lint format bench bench-quick wheel clean

help:
	@echo "make serve   install and run the server on $(HOST):$(PORT), data in $(DATA)"
	@echo "make test    lint, then the whole test suite"
	@echo "make bench   every benchmark with its target (bench-quick: a short run)"
	@echo "make lint    ruff (lint + format check) and mypy"
	@echo "make wheel   build a wheel into dist/"
	@echo "make test-kernels-debug  the kernel tests against a bounds-checked build (own venv)"

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.stamp-install: $(PY) $(BUILD_INPUTS)
	$(BIN)/pip install --quiet -e .
	touch $@

# One build for both: the dev install includes everything the plain install has.
$(VENV)/.stamp-dev: $(PY) $(BUILD_INPUTS)
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@ $(VENV)/.stamp-install

install: $(VENV)/.stamp-install

dev: $(VENV)/.stamp-dev

serve: install
	$(BIN)/llmopt-server --host $(HOST) --port $(PORT) --data-dir $(DATA) --demo

lint: dev
	$(BIN)/ruff check server registry native benchmarks tests examples setup.py
	$(BIN)/ruff format --check server registry native benchmarks tests examples setup.py
	$(PY) -c "import setup; setup.link_tree()"  # mypy reads the llmopt package from build/tree
	$(BIN)/mypy

test: lint test-only

test-only: dev
	$(BIN)/pytest

# The Cython kernels built with bounds checking and wrap-around on (LLMOPT_CYTHON_DEBUG=1), as a
# wheel in a venv of their own (build/debug: the release build's files are left alone), and the
# tests marked ``kernels`` run against them.
DEBUG_VENV := build/debug/venv
test-kernels-debug: $(PY)
	rm -rf $(DEBUG_VENV) build/debug/wheel
	$(PYTHON) -m venv $(DEBUG_VENV)
	$(DEBUG_VENV)/bin/pip install --quiet --upgrade pip
	LLMOPT_CYTHON_DEBUG=1 $(DEBUG_VENV)/bin/pip wheel --quiet --no-deps -w build/debug/wheel .
	$(DEBUG_VENV)/bin/pip install --quiet build/debug/wheel/*.whl pytest hypothesis
	$(DEBUG_VENV)/bin/python -c "import llmopt.native.bandit_base as k, sys; sys.exit('llmopt is not the debug build' if 'build/debug' not in k.__file__ and 'debug/venv' not in k.__file__ else 0)"
	$(DEBUG_VENV)/bin/pytest -m kernels -p no:cacheprovider

format: dev
	$(BIN)/ruff check --fix server registry native benchmarks tests examples setup.py
	$(BIN)/ruff format server registry native benchmarks tests examples setup.py

bench: dev
	$(PY) -m benchmarks

bench-quick: dev
	$(PY) -m benchmarks --quick

wheel: $(PY)
	$(BIN)/pip install --quiet build
	$(PY) -m build --wheel

clean:
	rm -rf build dist *.egg-info server/gen $$(find native server registry -name '*.c' -o -name '*.so') $(VENV)

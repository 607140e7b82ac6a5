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

.PHONY: help install dev serve test test-only lint format bench bench-quick wheel clean

help:
	@echo "make serve   install and run the server on $(HOST):$(PORT), data in $(DATA)"
	@echo "make test    lint, then the whole test suite"
	@echo "make bench   every benchmark with its target (bench-quick: a short run)"
	@echo "make lint    ruff (lint + format check) and mypy"
	@echo "make wheel   build a wheel into dist/"

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

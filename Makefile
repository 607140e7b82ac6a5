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
.PHONY: fuzz fuzz-atheris

help:
	@echo "make serve   install and run the server on $(HOST):$(PORT), data in $(DATA)"
	@echo "make test    lint, then the whole test suite"
	@echo "make bench   every benchmark with its target, then bench-callgrind (bench-quick: a short run)"
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

# The suite's message fuzzer (tests/integration/test_fuzz.py) at length: FUZZ_MESSAGES messages
# over every RPC against a real server. A failure prints its seed: FUZZ_SEED=<seed> replays it.
FUZZ_MESSAGES ?= 100000
fuzz: dev
	LLMOPT_FUZZ_MESSAGES=$(FUZZ_MESSAGES) LLMOPT_FUZZ_SEED=$(FUZZ_SEED) \
		$(BIN)/pytest tests/integration/test_fuzz.py -p no:cacheprovider -s -k fuzzed

# Coverage-guided fuzzing of the request converters (tests/fuzz/atheris_converters.py), for
# ATHERIS_SECONDS. atheris goes into a venv of its own (build/atheris), put on the path of the dev
# venv's Python; where it does not install (no wheel and no clang), the target says so and passes.
ATHERIS_VENV := build/atheris/venv
ATHERIS_SECONDS ?= 120
fuzz-atheris: dev
	@test -x $(ATHERIS_VENV)/bin/pip || $(PYTHON) -m venv $(ATHERIS_VENV)
	@if $(ATHERIS_VENV)/bin/pip install --quiet atheris; then \
		mkdir -p build/atheris/findings && \
		PYTHONPATH=$$($(ATHERIS_VENV)/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["platlib"])') \
		$(PY) tests/fuzz/atheris_converters.py -max_total_time=$(ATHERIS_SECONDS) \
			-artifact_prefix=build/atheris/findings/; \
	else echo "fuzz-atheris skipped: atheris does not install here (it needs a wheel for this Python or clang)"; fi

format: dev
	$(BIN)/ruff check --fix server registry native benchmarks tests examples setup.py
	$(BIN)/ruff format server registry native benchmarks tests examples setup.py

bench: dev
	$(PY) -m benchmarks
	$(MAKE) --no-print-directory bench-callgrind

bench-quick: dev
	$(PY) -m benchmarks --quick

# Instruction counts of the hot in-process paths (valgrind's callgrind; report only).
.PHONY: bench-callgrind
bench-callgrind: dev
	@command -v valgrind >/dev/null || [ "$$(id -u)" != 0 ] || \
		{ apt-get update && apt-get install -y valgrind; } || echo "could not install valgrind"
	$(PY) -m benchmarks.callgrind

wheel: $(PY)
	$(BIN)/pip install --quiet build
	$(PY) -m build --wheel

clean:
	rm -rf build dist *.egg-info server/gen $$(find native server registry -name '*.c' -o -name '*.so') $(VENV)

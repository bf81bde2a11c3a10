# Two commands on a fresh machine with Python 3.11+ and make:
#   make run    set everything up and run the service (offline unless backends are configured)
#   make test   set everything up and run the linters and the whole test suite
# Both install exactly the versions in requirements/*.txt (hashes checked); `make lock` writes
# those files from pyproject.toml (docs/dependencies.md says how to add a dependency).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
LOWEST_VENV ?= .venv-lowest
LOCK_VENV   := .cache/lock-venv
SOURCES := src tests scripts benchmarks loadtest fuzz

.PHONY: setup setup-run run test test-deps test-lowest lint lock lock-upgrade format overhead soak train-router clean

# The locked packages (pip and the build backend included), then the project itself without
# dependencies and without build isolation, so that nothing unpinned is downloaded.
define install
	test -x $(1)/bin/python || $(PYTHON) -m venv $(1)
	$(1)/bin/python -m pip install --quiet --require-hashes -r $(2)
	$(1)/bin/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@
endef

setup: $(VENV)/.dev-stamp
setup-run: $(VENV)/.runtime-stamp

# A stamp is older than its lock after `make lock` or a pull: the next target reinstalls.
$(VENV)/.dev-stamp: requirements/dev.txt pyproject.toml
	$(call install,$(VENV),requirements/dev.txt)

$(VENV)/.runtime-stamp: requirements/runtime.txt pyproject.toml
	$(call install,$(VENV),requirements/runtime.txt)

$(LOWEST_VENV)/.lowest-stamp: requirements/lowest.txt pyproject.toml
	$(call install,$(LOWEST_VENV),requirements/lowest.txt)

run: setup-run
	$(BIN)/aiorch serve --host $${AIORCH_HOST:-127.0.0.1} --port $${AIORCH_PORT:-8000}

test-deps:
	bash scripts/ci/test-deps.sh

lint: setup
	$(BIN)/python scripts/ci/lock.py check
	$(BIN)/ruff check $(SOURCES)
	$(BIN)/ruff format --check $(SOURCES)
	$(BIN)/mypy

test: setup test-deps lint
	$(BIN)/python -m pytest

# The unit tests with every direct dependency at the lower bound pyproject.toml declares: what
# `pip install aiorch` promises to work with.
test-lowest: $(LOWEST_VENV)/.lowest-stamp
	$(LOWEST_VENV)/bin/python -m pytest tests/unit -q -p no:cacheprovider

# uv resolves the locks (seconds, against PyPI only); it is itself pinned, in a throwaway venv.
# `make lock` keeps every pin that still fits pyproject.toml; `make lock-upgrade` moves them all.
lock lock-upgrade:
	test -x $(LOCK_VENV)/bin/python || $(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install --quiet --require-hashes -r requirements/lock-tools.txt
	$(LOCK_VENV)/bin/python scripts/ci/lock.py compile --uv $(LOCK_VENV)/bin/uv \
	  $(if $(filter lock-upgrade,$@),--upgrade)

format: setup
	$(BIN)/ruff format $(SOURCES)
	$(BIN)/ruff check --fix $(SOURCES)

# Long measurements live outside the test suite. OVERHEAD_ARGS passes options on, e.g.
# OVERHEAD_ARGS="--aiorch old=/tmp/old-core/.venv/bin/python --aiorch new=.venv/bin/python".
overhead: setup
	bash scripts/ci/bench-deps.sh
	$(BIN)/python -m benchmarks.overhead $(OVERHEAD_ARGS)

# Retrain the router's model from tests/unit/data (never from holdout_*.jsonl): docs/routing.md.
train-router: setup
	$(BIN)/python scripts/train_router.py

soak: setup
	$(BIN)/python -m benchmarks.soak --minutes 10

clean:
	rm -rf $(VENV) $(LOWEST_VENV) .cache/lock-venv .mypy_cache .ruff_cache .pytest_cache

# Coverage-guided fuzzing of request decoding and the stream parsers (fuzz/): each target for
# FUZZ_SECONDS. atheris is installed here only: the fuzzers are a development tool.
FUZZ_SECONDS ?= 60
.PHONY: fuzz
fuzz: setup
	$(BIN)/python -m pip install --quiet 'atheris==3.0.0'
	$(BIN)/python -m fuzz --seconds $(FUZZ_SECONDS)

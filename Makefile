# Two commands on a fresh machine with Python 3.11+ and make:
#   make run    set everything up and run the service (offline unless backends are configured)
#   make test   set everything up and run the linters and the whole test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: setup run test test-deps lint format overhead soak clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: setup
	$(BIN)/aiorch serve --host $${AIORCH_HOST:-127.0.0.1} --port $${AIORCH_PORT:-8000}

test-deps:
	bash scripts/ci/test-deps.sh

lint: setup
	$(BIN)/ruff check src tests scripts benchmarks loadtest
	$(BIN)/ruff format --check src tests scripts benchmarks loadtest
	$(BIN)/mypy

test: setup test-deps lint
	$(BIN)/python -m pytest

format: setup
	$(BIN)/ruff format src tests scripts benchmarks loadtest
	$(BIN)/ruff check --fix src tests scripts benchmarks loadtest

# Long measurements live outside the test suite.
overhead: setup
	bash scripts/ci/bench-deps.sh
	$(BIN)/python -m benchmarks.overhead

soak: setup
	$(BIN)/python -m benchmarks.soak --minutes 10

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache

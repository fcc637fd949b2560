# The project's entry points: CI calls `make test`, developers `make dev`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install dev test test-fast lint pytest format clean bench

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

$(VENV)/.bench-installed: $(VENV)/.installed pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $@

## Every benchmark with small sizes (under 5 minutes); bench/README.md has the full-size commands.
bench: $(VENV)/.bench-installed
	$(BIN)/python -m bench.throughput --calls 100
	$(BIN)/python -m bench.worker_cpu --calls 100
	$(BIN)/python -m bench.relay_latency --client raw --events 100
	$(BIN)/python -m bench.fanout --clients 2000 --idle 5
	$(BIN)/python -m bench.overhead --samples 20 --posts 2000
	$(BIN)/python -m bench.scale --calls 200
	$(BIN)/python -m bench.cancel_latency --tasks 20
	$(BIN)/python -m bench.llm_client --calls 100 --rounds 2
	$(BIN)/python -m bench.pipeline --batches 200 --rounds 2

## Run web + worker + beat (starts an embedded Redis when REDIS_URL does not answer, or with
## PRIVATE_REDIS=1); `make dev FLOWER=1` adds Flower on :5555.
dev: install
	$(BIN)/python -m scripts.dev $(if $(FLOWER),--flower) $(if $(PRIVATE_REDIS),--private-redis)

## Lint, type-check, check the import boundaries, then run the whole test suite.
test: lint pytest

## The suite in PYTEST_WORKERS processes, each file in one (its session's processes are shared);
## the slowest tests are listed at the end, to keep the whole under 10 minutes on 2 cores.
PYTEST_WORKERS ?= 2
pytest: install
	$(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadfile --durations=15

## Lint, then the tests that start no process (seconds; the e2e suite is left out).
test-fast: lint
	$(BIN)/pytest -m "not e2e"

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) var .mypy_cache .ruff_cache

# The two commands of the quick start: `make demo` and `make test`. Both set up what they need.
# `make test` runs three pytest-xdist workers (one test file per worker): the whole-deploy tests
# mostly wait on observe windows and scrapes, so three overlap them on 2 cores (9.5 min against
# 10.5 with two, once the sandbox's traffic and the bytecode stopped costing most of the CPU).
SHELL := /bin/bash
.DEFAULT_GOAL := help
PREFECT_PORT ?= 4200
PREFECT_HOME ?= $(CURDIR)/.deployflow/prefect
export PREFECT_HOME
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
UV = $$(cat .deployflow/uv-path)

.PHONY: help bootstrap demo test lint server stop-server fixtures bench fuzz

help:
	@echo "make demo         sandbox demo: v2 promoted through 5/25/50/100, v3 rolled back"
	@echo "make test         the whole test suite (unit, integration, e2e)"
	@echo "make fuzz         nightly-sized fuzzing of the spec loader and the CLI (10,000 cases each)"
	@echo "make lint         ruff, mypy and the import-layer contracts (lint-imports)"
	@echo "make server       start the local Prefect server (UI on http://127.0.0.1:$(PREFECT_PORT))"
	@echo "make stop-server  stop it"

bootstrap:
	@mkdir -p .deployflow
	@scripts/bootstrap.sh

fixtures: bootstrap
	@scripts/fixtures.sh

server: bootstrap
	@scripts/prefect-server.sh start $(PREFECT_PORT)

stop-server:
	@scripts/prefect-server.sh stop $(PREFECT_PORT)

demo: server
	PREFECT_API_URL=http://127.0.0.1:$(PREFECT_PORT)/api $(UV) run deployflow demo

test: fixtures
	$(UV) run pytest -n 3 --dist loadfile

fuzz: bootstrap
	DEPLOYFLOW_FUZZ_EXAMPLES=$${DEPLOYFLOW_FUZZ_EXAMPLES:-10000} $(UV) run pytest -q \
		tests/unit/test_spec_bad_input.py tests/unit/test_cli_fuzz.py

lint: bootstrap
	$(UV) run ruff check .
	$(UV) run ruff format --check .
	$(UV) run mypy
	$(UV) run lint-imports

bench: fixtures
	$(UV) run python bench/bench_prechecks.py
	$(UV) run python bench/bench_migrations.py
	$(UV) run python bench/bench_rollback_exposure.py
	$(UV) run python bench/bench_bluegreen.py

# Herald: `make dev` runs the whole system locally, `make test` runs every test.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export REDIS_URL ?= redis://127.0.0.1:6379/0

.PHONY: dev test install services lint typecheck bench clean

$(BIN)/.installed: pyproject.toml clients/python/pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/pip install -q --upgrade pip >/dev/null 2>&1 || true
	$(BIN)/pip install -q -e clients/python -e '.[dev]'
	@touch $@

install: $(BIN)/.installed

services: install
	@$(BIN)/python scripts/services.py redis postgres

## make dev: migrations, demo data, then web + worker + beat on SQLite and local Redis.
dev: install
	@$(BIN)/python scripts/services.py redis || { echo "make dev: Redis is needed (see above)"; exit 1; }
	@mkdir -p var
	$(BIN)/herald migrate
	@$(BIN)/python scripts/dev.py

# The official socket.io-client, for the tests that check what Node clients see.
tests/node/node_modules/.package-lock.json: tests/node/package-lock.json
	cd tests/node && npm ci --no-audit --no-fund

## make test: every test, against real Redis and PostgreSQL (started here when absent).
test: services tests/node/node_modules/.package-lock.json
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/pytest

lint: install
	$(BIN)/ruff check .

typecheck: install
	$(BIN)/mypy

## make bench: relay, replay and end-to-end latency figures (PostgreSQL + Redis).
bench: services
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) var tests/node/node_modules .pytest_cache .mypy_cache .ruff_cache *.egg-info

# Herald: `make dev` runs the whole system locally, `make test` runs every test.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export REDIS_URL ?= redis://127.0.0.1:6379/0

.PHONY: dev stop test install lock browser js services lint typecheck bench clean

## Two installs, each with its stamp: the runtime (`make dev`: the server, the Python client,
## honcho) and the dev/test toolchain on top (`make test`, `make install`: pytest, mypy,
## ruff, Playwright, schemathesis, npm trees, chromium). Both from requirements.lock, the
## versions the tests ran on (`make lock` rewrites it from this .venv).
LOCK := requirements.lock
RUNTIME := $(BIN)/.runtime-installed
DEVTOOLS := $(BIN)/.dev-installed

$(RUNTIME): pyproject.toml clients/python/pyproject.toml $(LOCK)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/pip install -q --upgrade pip >/dev/null 2>&1 || true
	$(BIN)/pip install -q -c $(LOCK) -e clients/python -e '.[local]'
	@touch $@

$(DEVTOOLS): $(RUNTIME)
	$(BIN)/pip install -q -c $(LOCK) -e clients/python -e '.[dev]'
	@touch $@

install: $(DEVTOOLS) browser js

## `make lock`: requirements.lock from this .venv (after `make install` and a green `make test`).
lock: $(DEVTOOLS)
	@{ echo "# pip freeze of the .venv the tests ran on (make lock); make installs with -c"; \
	   $(BIN)/pip freeze --exclude-editable | grep -v '^herald'; } > $(LOCK)

## npm packages: the JavaScript client (clients/js), the official socket.io-client that some
## fault tests drive (tests/node) and the bench's Node peers (bench/node: socket.io 4.8 server,
## load client); `npm ci` when node_modules is missing or the lock changed.
## Under CI=true a missing node/npm fails the run; elsewhere the tests that need them skip.
JS := clients/js
NODE_PACKAGES := $(JS) tests/node bench/node
js: $(addsuffix /node_modules/.installed,$(NODE_PACKAGES))

%/node_modules/.installed: %/package-lock.json
	@if command -v node >/dev/null && command -v npm >/dev/null; then \
	  cd $* && npm ci --no-audit --no-fund --loglevel=error && touch node_modules/.installed; \
	else echo "make: node 20+ and npm are needed for $*'s tests"; test "$$CI" != true; fi

## Debian's chromium for the browser tests (tests/browser): Playwright for Python drives it by
## executable_path, since Playwright's own browser download cannot work here. Under CI=true a
## browser that cannot be installed fails the run; elsewhere the browser tests skip.
browser:
	@command -v chromium >/dev/null || { \
	  echo "installing Debian's chromium for the browser tests"; \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium \
	    >/dev/null; } || { echo "make: could not install chromium (apt-get install chromium)"; \
	                       test "$$CI" != true; }; }

services: install
	@$(BIN)/python scripts/services.py redis postgres

## make dev: migrations, demo data, then web + worker + beat on SQLite and local Redis (started
## here if none answers), on 127.0.0.1:$(PORT) (HOST=0.0.0.0 to listen on every interface).
## Installs the runtime only. Ctrl-C or `make stop` ends it, and the Redis it started.
dev: $(RUNTIME)
	@$(BIN)/python scripts/dev.py

stop:
	@$(PYTHON) scripts/dev.py stop

## make test: every test, against real Redis and PostgreSQL (started here when absent), on
## PYTEST_WORKERS pytest-xdist workers (0: in one process), each running a whole test file at a
## time (--dist loadfile: module fixtures stay shared), the longest files first (tests/conftest.py
## orders them; --no-loadscope-reorder keeps that order). Most tests wait on processes they
## started, so two workers overlap those waits even on two cores.
PYTEST_WORKERS ?= 2
test: services
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder

lint: $(DEVTOOLS)
	$(BIN)/ruff check .

typecheck: $(DEVTOOLS)
	$(BIN)/mypy

## make bench: relay, replay and end-to-end latency figures (PostgreSQL + Redis).
bench: services
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache *.egg-info $(JS)/node_modules tests/node/node_modules bench/node/node_modules

# Herald: `make dev` runs the whole system locally, `make test` runs every test.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export REDIS_URL ?= redis://127.0.0.1:6379/0

.PHONY: dev stop test install browser js services lint typecheck bench clean

$(BIN)/.installed: pyproject.toml clients/python/pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/pip install -q --upgrade pip >/dev/null 2>&1 || true
	$(BIN)/pip install -q -e clients/python -e '.[dev]'
	@touch $@

install: $(BIN)/.installed browser js

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

## make dev: migrations, demo data, then web + worker + beat on SQLite and local Redis,
## on 127.0.0.1:$(PORT) (HOST=0.0.0.0 to listen on every interface). Ctrl-C or `make stop` ends it.
dev: install
	@$(BIN)/python scripts/services.py redis || { echo "make dev: Redis is needed (see above)"; exit 1; }
	@$(BIN)/python scripts/dev.py

stop:
	@$(BIN)/python scripts/dev.py stop

## make test: every test, against real Redis and PostgreSQL (started here when absent).
test: services
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
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache *.egg-info $(JS)/node_modules tests/node/node_modules bench/node/node_modules

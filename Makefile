# Labelforce: `make run` serves a seeded demo, `make test` passes the whole suite on SQLite and PostgreSQL.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 5000
PG_URL ?= postgresql+psycopg://postgres@127.0.0.1:5432/postgres
REDIS_TEST_URL ?= redis://127.0.0.1:6379/0
export FLASK_APP := wsgi

.PHONY: install run test test-sqlite test-postgres lint format services browser bench migration clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet --upgrade pip
	@$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	@mkdir -p instance
	$(BIN)/alembic upgrade head
	HOST=$(HOST) PORT=$(PORT) $(BIN)/flask seed-demo
	@# the scheduler runs the periodic jobs (planning, lease expiry, ...) in-process beside the dev server
	@$(BIN)/flask jobs scheduler & scheduler=$$!; trap "kill $$scheduler 2>/dev/null" EXIT INT TERM; \
	  $(BIN)/flask run --host $(HOST) --port $(PORT)

services:
	@bash .ci/services

browser:
	@test -x /usr/bin/chromium || (echo "installing chromium for the browser tests" >&2; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) || \
	  echo "chromium could not be installed: browser tests will be skipped" >&2

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

test-sqlite: $(STAMP)
	TEST_DATABASE_URL=sqlite REDIS_URL=$(REDIS_TEST_URL) $(BIN)/pytest -q $(PYTEST_ARGS)

test-postgres: $(STAMP)
	TEST_DATABASE_URL=$(PG_URL) REDIS_URL=$(REDIS_TEST_URL) $(BIN)/pytest -q $(PYTEST_ARGS)

test: $(STAMP) services browser lint
	@echo "== suite on SQLite (real Redis)"
	@$(MAKE) --no-print-directory test-sqlite
	@echo "== suite on PostgreSQL (real Redis)"
	@$(MAKE) --no-print-directory test-postgres

bench: $(STAMP) services
	$(BIN)/python -m routing bench
	TEST_DATABASE_URL=$(PG_URL) REDIS_URL=$(REDIS_TEST_URL) $(BIN)/python bench/next_task.py

migration: $(STAMP)
	@test -n "$(m)" || (echo 'usage: make migration m="what changed"' >&2; exit 2)
	$(BIN)/alembic revision --autogenerate -m "$(m)"

clean:
	rm -rf $(VENV) instance/*.db .pytest_cache .mypy_cache .ruff_cache

# Local development and CI entry points. Every target works on a fresh clone: the virtualenv is
# created on first use and refilled only when a requirements file changes (stamp files in .venv).

PYTHON ?= python3
PORT ?= 8000
PYTEST_ARGS ?=

VENV := .venv
BIN := $(VENV)/bin
RUNTIME_STAMP := $(VENV)/.installed-requirements
DEV_STAMP := $(VENV)/.installed-requirements-dev
PIP := $(BIN)/python -m pip install --disable-pip-version-check
# pip-audit lives in a virtualenv of its own (requirements-audit.txt): its dependencies never mix with the set it audits.
AUDIT_VENV := $(VENV)/audit
AUDIT_STAMP := $(AUDIT_VENV)/.installed-requirements-audit
AUDIT_ARGS ?= --strict

.PHONY: run test lint soak bench profile audit lock clean check-redis check-curl check-wrk

## run: serve the dev server on 127.0.0.1:$(PORT) (embedded stores, generated admin key in run/admin-key)
run: $(RUNTIME_STAMP)
	$(BIN)/python -m token_service dev --port $(PORT)

## test: the whole suite (needs redis-server on PATH: the store tests start a real one)
test: $(DEV_STAMP) check-redis check-curl
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## lint: ruff and mypy (strict)
lint: $(DEV_STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

## soak: two gunicorn instances on their own Redis under mixed traffic (docs/soak.md); SOAK_SECONDS=180 by default
soak: $(RUNTIME_STAMP) check-redis
	$(BIN)/python -m tools.soak

## bench: the benchmark (docs/performance.md): Redis and gunicorn as production runs them, driven by wrk, with the
## ratios of issue 7's targets; BENCH_SECONDS=10 per scenario, BENCH_SHORT=1 for a run of about half a minute
bench: $(RUNTIME_STAMP) check-redis check-wrk
	$(BIN)/python -m tools.bench

## profile: py-spy profiles of one gunicorn worker under wrk, scenario by scenario, and of the in-process verifier
## (docs/performance.md, "Profiles (py-spy)"); PROFILE_SECONDS=20 per scenario, PROFILE_SHORT=1 for a few seconds
profile: $(DEV_STAMP) check-redis check-wrk
	$(BIN)/python -m tools.profile

## audit: pip-audit of the pinned runtime set (requirements.txt, what ships) against PyPI's advisories; fails on a
## known vulnerability and (--strict, the default) on a pin it could not check; AUDIT_ARGS= reports those without failing
audit: $(AUDIT_STAMP)
	$(AUDIT_VENV)/bin/pip-audit -r requirements.txt --no-deps --disable-pip --progress-spinner off $(AUDIT_ARGS)

## lock: re-resolve requirements*.in into requirements*.txt, pinned with hashes for every Python 3.11+ platform
## (uv keeps the current pins unless an .in file asks otherwise; UPGRADE=--upgrade moves everything to the newest)
LOCK_VENV := $(VENV)/lock
UV_COMPILE = $(LOCK_VENV)/bin/uv pip compile --quiet --universal --python-version 3.11 --generate-hashes \
	--custom-compile-command "make lock" $(UPGRADE)
lock: | $(BIN)/python
	test -x $(LOCK_VENV)/bin/uv || { $(PYTHON) -m venv $(LOCK_VENV) && \
	  $(LOCK_VENV)/bin/pip install --disable-pip-version-check -r requirements-lock.txt; }
	$(UV_COMPILE) requirements-lock.in -o requirements-lock.txt
	$(UV_COMPILE) requirements.in -o requirements.txt
	$(UV_COMPILE) requirements-dev.in -o requirements-dev.txt
	$(UV_COMPILE) requirements-audit.in -o requirements-audit.txt

clean:
	rm -rf $(VENV) run .pytest_cache .mypy_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

# A venv whose creation failed half-way (Debian without python3-venv leaves bin/python but no pip)
# is removed, so that the next run tries again instead of using it.
$(BIN)/python:
	@$(PYTHON) -m venv $(VENV) || { rm -rf $(VENV); \
	  echo "error: '$(PYTHON) -m venv' failed; on Debian/Ubuntu: apt-get install python3-venv" >&2; exit 1; }

$(RUNTIME_STAMP): requirements.txt | $(BIN)/python
	$(PIP) -r requirements.txt
	@touch $@

# The dev set includes the runtime set, so it refreshes the runtime stamp too.
$(DEV_STAMP): requirements.txt requirements-dev.txt | $(BIN)/python
	$(PIP) -r requirements-dev.txt
	@touch $@ $(RUNTIME_STAMP)

$(AUDIT_STAMP): requirements-audit.txt | $(BIN)/python
	$(BIN)/python -m venv $(AUDIT_VENV)
	$(AUDIT_VENV)/bin/python -m pip install --disable-pip-version-check -r requirements-audit.txt
	@touch $@

check-redis:
	@command -v redis-server >/dev/null 2>&1 || { \
	  echo "error: redis-server is not on PATH; the store and API tests start a real one." >&2; \
	  echo "       Debian/Ubuntu: sudo apt-get install redis-server   macOS: brew install redis" >&2; exit 1; }

check-curl:
	@command -v curl >/dev/null 2>&1 || { \
	  echo "error: curl is not on PATH; tests/e2e runs the dev server's curl walk-through." >&2; \
	  echo "       Debian/Ubuntu: sudo apt-get install curl" >&2; exit 1; }

check-wrk:
	@command -v wrk >/dev/null 2>&1 || { \
	  echo "error: wrk is not on PATH; make bench drives the service with it." >&2; \
	  echo "       Debian/Ubuntu: sudo apt-get install wrk   macOS: brew install wrk" >&2; exit 1; }

# The project's entry points. `make run` and `make test` set everything up themselves.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PORT   ?= 8000
DEMO_STATIONS ?= 5

.PHONY: run run-multi test bench lint format install install-dev lock clean

# requirements.txt and requirements-dev.txt are locks: the whole dependency tree, every
# package pinned with its hashes, installed in pip's hash-checking mode. Stamp files
# re-run pip only when a lock changes.
PIP_INSTALL := $(PY) -m pip install --quiet --disable-pip-version-check --require-hashes
$(VENV)/.runtime: requirements.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) -r requirements.txt
	@touch $@

$(VENV)/.dev: $(VENV)/.runtime requirements-dev.txt
	$(PIP_INSTALL) -r requirements-dev.txt
	@touch $@

install: $(VENV)/.runtime
install-dev: $(VENV)/.dev

# Regenerate the locks from the human-edited lists, requirements.in and
# requirements-dev.in, with uv's `uv pip compile --generate-hashes` (uv, pinned below,
# is installed into the venv first). Versions already in a lock are kept unless the .in
# files need others; `make lock UPGRADE=1` moves everything to the newest allowed. The
# dev lock is constrained to the runtime lock, so both have the same runtime versions.
# Then `make install-dev` (or run/test) installs what changed.
UV_VERSION ?= 0.13.9
UPGRADE ?=
LOCK := $(VENV)/bin/uv pip compile --quiet --generate-hashes --python-version 3.11 \
	--custom-compile-command "make lock" $(if $(UPGRADE),--upgrade)
lock:
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	$(LOCK) requirements.in -o requirements.txt
	$(LOCK) -c requirements.txt requirements-dev.in -o requirements-dev.txt

# Local mode for this checkout (DEBUG=1, a random SECRET_KEY), written once and
# git-ignored: cgm/settings.py reads it, so manage.py commands typed by hand work too.
.env.local:
	$(PYTHON) scripts/make_env_local.py $@

# Embedded default: SQLite file in the checkout, one Daphne process.
run: $(VENV)/.runtime .env.local
	$(PY) manage.py migrate --noinput
	$(PY) manage.py demo_data --stations $(DEMO_STATIONS)
	$(PY) manage.py bootstrap_local --port $(PORT)
	@echo "Serving on http://127.0.0.1:$(PORT)/  (dashboard /, admin /admin/, stream /api/sse/stations/ST001/)"
	$(PY) -m cgm.server -e tcp:port=$(PORT):interface=127.0.0.1:backlog=4096 cgm.asgi:application

# One machine, several cores: WORKERS Daphne processes on one socket, PostgreSQL and
# Redis (defaults: this machine's services). docs/SCALING.md explains the sizes.
WORKERS ?= $(shell nproc 2>/dev/null || echo 2)
MULTI_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/cgm
MULTI_REDIS_URL ?= redis://127.0.0.1:6379/0
run-multi: $(VENV)/.runtime .env.local
	DATABASE_URL=$(MULTI_DATABASE_URL) $(PY) scripts/ensure_pg_database.py
	DATABASE_URL=$(MULTI_DATABASE_URL) $(PY) manage.py migrate --noinput
	DATABASE_URL=$(MULTI_DATABASE_URL) $(PY) manage.py demo_data --stations $(DEMO_STATIONS)
	DATABASE_URL=$(MULTI_DATABASE_URL) $(PY) manage.py bootstrap_local --port $(PORT)
	DATABASE_URL=$(MULTI_DATABASE_URL) REDIS_URL=$(MULTI_REDIS_URL) \
		$(PY) scripts/run_multi.py --port $(PORT) --workers $(WORKERS)

TEST_PG_URL ?= postgres://postgres@127.0.0.1:5432/cgm_unit
# The browser and Pushpin tests need Debian packages; the scripts install them when
# they can (root). Elsewhere those tests skip, except under CI=true, where they fail.
test: $(VENV)/.dev
	bash scripts/ensure-chromium.sh || test "$$CI" != true
	bash scripts/ensure-pushpin.sh || test "$$CI" != true
	$(PY) -m pytest
	@# The unit tests once more on PostgreSQL (the multi-worker database), when it answers.
	@if $(PY) -c "import socket; socket.create_connection(('127.0.0.1', 5432), 1)" 2>/dev/null; then \
	  echo "== unit tests on PostgreSQL =="; \
	  DATABASE_URL=$(TEST_PG_URL) $(PY) -m pytest -m "not e2e" -p no:cacheprovider; \
	elif [ "$$CI" = true ]; then echo "PostgreSQL not reachable on 127.0.0.1:5432 (CI=true)"; exit 1; \
	else echo "skipped: unit tests on PostgreSQL (nothing answers on 127.0.0.1:5432)"; fi

# The benchmark (docs/PERFORMANCE.md): every scenario at the issue's sizes, ~13 minutes.
# Scenarios and sizes: make bench BENCH_ARGS="embedded --subscribers 500 --duration 20"
# The machine's own yardstick (a no-op app under the same Daphne): BENCH_ARGS=calibrate
BENCH_ARGS ?=
bench: $(VENV)/.dev
	bash scripts/ensure-pushpin.sh
	$(PY) bench/run.py $(BENCH_ARGS)

lint: $(VENV)/.dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(VENV)/.dev
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache

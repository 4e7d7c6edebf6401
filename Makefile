# devtrust: every target sets up what it needs, on a fresh Debian/Ubuntu machine too.
#   make demo    the main job on embedded defaults
#   make test    the whole suite against real PostgreSQL, Redis and swtpm (+ lint)
#   make bench   the benchmarks, each printing its figure and its ratio to the limit

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.devtrust-installed

LOCK   := requirements.lock

.PHONY: setup system services test unit lint format demo bench clean lock lock-upgrade

setup: $(STAMP)

system:
	@scripts/setup-system.sh packages

# The tested versions, pinned with their hashes (requirements.lock), then devtrust itself.
$(STAMP): pyproject.toml $(LOCK) | system
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet --require-hashes --no-deps -r $(LOCK)
	$(PY) -m pip install --quiet --no-deps -e .
	@touch $@

# Refresh the lock after a change to pyproject.toml's dependencies: the pins it already
# has stay unless pyproject.toml excludes them (`make lock-upgrade` moves every pin to
# the newest release allowed). Then run `make test` before committing it.
UV := $(VENV)/bin/uv
# deploy/requirements.lock is the image's: the same pins without the dev tools.
UV_COMPILE = $(UV) pip compile pyproject.toml --generate-hashes --python-version 3.11
RUNTIME_LOCK := deploy/requirements.lock

$(UV): | $(STAMP)
	$(PY) -m pip install --quiet uv

lock: $(UV)
	$(UV_COMPILE) --extra dev -o $(LOCK)
	$(UV_COMPILE) -c $(LOCK) -o $(RUNTIME_LOCK)

lock-upgrade: $(UV)
	$(UV_COMPILE) --extra dev -o $(LOCK) --upgrade
	$(UV_COMPILE) -c $(LOCK) -o $(RUNTIME_LOCK)

services: | system
	@scripts/setup-system.sh services

test: setup services lint
	$(PY) -m pytest

unit: setup
	$(PY) -m pytest tests/unit

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

format: setup
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

demo: setup
	@scripts/demo.sh

bench: setup services
	$(PY) -m bench.bench_devices_ls
	$(PY) -m bench.sync
	$(PY) -m bench.webhooks
	$(PY) -m bench.auto_enroll
	$(PY) -m bench.ceremony
	$(PY) -m bench.access
	$(PY) -m bench.console
	$(PY) -m bench.remote_ls
	$(PY) -m bench.cli_start

clean:
	rm -rf $(VENV) .devtrust .pytest_cache .mypy_cache .ruff_cache

# devtrust: every target sets up what it needs, on a fresh Debian/Ubuntu machine too.
#   make demo    the main job on embedded defaults
#   make test    the whole suite against real PostgreSQL, Redis and swtpm (+ lint)
#   make bench   the benchmarks, each printing its figure and its ratio to the limit

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.devtrust-installed

.PHONY: setup system services test unit lint format demo bench clean

setup: $(STAMP)

system:
	@scripts/setup-system.sh packages

$(STAMP): pyproject.toml | system
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $@

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

clean:
	rm -rf $(VENV) .devtrust .pytest_cache .mypy_cache .ruff_cache

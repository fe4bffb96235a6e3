# Switchyard: build, demo, test, lint, CRDs.
CARGO  ?= cargo
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# Where cargo puts binaries; the Python tests start them from there.
TARGET_DIR ?= $(or $(CARGO_TARGET_DIR),target)
export SWITCHYARD_BIN_DIR := $(abspath $(TARGET_DIR))/debug

.PHONY: all build demo test test-rust test-python lint fmt crds clean

all: build

## Debug build of every binary (switchyard, switchyard-mock).
build:
	$(CARGO) build --workspace --bins

## Run the gateway on deploy/local/ in front of the bundled mock provider, and show requests.
demo: build
	./scripts/demo.sh

## Everything CI checks: formatting, clippy, Rust unit + end-to-end tests, OpenAI SDK tests.
test: lint build test-rust test-python

test-rust: build
	$(CARGO) test --workspace

$(PY): tests/python/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r tests/python/requirements.txt
	touch $(PY)

test-python: build $(PY)
	$(PY) -m pytest tests/python -q

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

## Regenerate the CRD YAML (top level and the chart's copy) from crates/api.
crds: build
	target/debug/switchyard crds --out-dir crds --out-dir charts/switchyard/crds

clean:
	$(CARGO) clean
	rm -rf $(VENV)

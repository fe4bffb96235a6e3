# Switchyard: build, demo, test, lint, CRDs.
CARGO  ?= cargo
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# Where cargo puts binaries; the Python tests start them from there.
TARGET_DIR ?= $(or $(CARGO_TARGET_DIR),target)
export SWITCHYARD_BIN_DIR := $(abspath $(TARGET_DIR))/debug

.PHONY: all build demo test test-rust test-python lint fmt crds clean envtest envtest-stop

all: build

## Debug build of every binary (switchyard, switchyard-mock).
build:
	$(CARGO) build --workspace --bins

## Run the gateway on deploy/local/ in front of the bundled mock provider, and show requests.
demo: build
	./scripts/demo.sh

## Everything CI checks: formatting, clippy, Rust unit + end-to-end tests, OpenAI SDK tests.
test: lint build test-rust test-python

# The fuzz targets run here too, each on its seed corpus plus FUZZ_TEST_SECS of seeded
# mutations (crates/providers/fuzz/README.md): about 30 s of the run on 2 cores.
FUZZ_TEST_SECS ?= 3

test-rust: build envtest
	SWITCHYARD_FUZZ_SECS=$(FUZZ_TEST_SECS) $(CARGO) test --workspace

$(PY): tests/python/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r tests/python/requirements.txt
	touch $(PY)

# The real agent CLIs (Claude Code, Codex) that tests/python/test_agent_clis.py runs, at the
# versions the lock file pins.
CLIENTS := tests/clients/node_modules/.package-lock.json
$(CLIENTS): tests/clients/package.json tests/clients/package-lock.json
	npm ci --prefix tests/clients --no-audit --no-fund
	touch $(CLIENTS)

test-python: build $(PY) $(CLIENTS)
	$(PY) -m pytest tests/python -q

## A real kube-apiserver + etcd on loopback for the cluster-mode tests (tests/k8s/README.md).
## The first run builds kube-apiserver from Debian's source package (~6 min) into
## ~/.cache/switchyard-envtest; later starts take ~5 s. It keeps running: `make envtest-stop`.
envtest:
	tests/k8s/envtest.sh start

envtest-stop:
	tests/k8s/envtest.sh stop

## Formatting, clippy, no module cycles inside the data plane and the router (scripts/module_cycles.py), and
## no kube in the data plane's dependencies (resources become tables in switchyard-compile).
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(PYTHON) scripts/module_cycles.py crates/gateway/src crates/router/src
	@tree="$$($(CARGO) tree -p switchyard-gateway -e normal)" || exit 1; \
	if echo "$$tree" | grep -E 'kube|k8s-openapi'; then \
		echo "switchyard-gateway must not depend on kube or k8s-openapi (see above)"; exit 1; \
	fi

fmt:
	$(CARGO) fmt --all

## Regenerate the CRD YAML (top level and the chart's copy) from crates/api.
crds: build
	target/debug/switchyard crds --out-dir crds --out-dir charts/switchyard/crds

## Fuzzing, longer than `test` does and bounded in time (crates/providers/fuzz/README.md):
## every target for FUZZ_SECS under the corpus runner (random seed, debug build so overflow
## checks are on), the property tests with FUZZ_CASES cases each, then every target for
## FUZZ_SECS under libFuzzer (cargo-fuzz on the stable toolchain, no sanitizer; installed from
## crates.io if missing), two at a time. Failing inputs: $(TARGET_DIR)/tmp/fuzz-crashes/ and
## $(TARGET_DIR)/fuzz/artifacts/; libFuzzer's corpus grows in $(TARGET_DIR)/fuzz/corpus/.
FUZZ_SECS  ?= 30
FUZZ_CASES ?= 5000
FUZZ_DIR   := crates/providers/fuzz
FUZZ_OUT   := $(abspath $(TARGET_DIR))/fuzz
FUZZ_TARGETS := $(basename $(notdir $(wildcard $(FUZZ_DIR)/fuzz_targets/*.rs)))
CARGO_FUZZ_VERSION := 0.13.2

.PHONY: fuzz
fuzz:
	SWITCHYARD_FUZZ_SECS=$(FUZZ_SECS) SWITCHYARD_FUZZ_SEED=random PROPTEST_CASES=$(FUZZ_CASES) \
		$(CARGO) test -p switchyard-providers --test integration
	PROPTEST_CASES=$(FUZZ_CASES) $(CARGO) test -p switchyard-router --test integration
	PROPTEST_CASES=$(FUZZ_CASES) $(CARGO) test -p switchyard-api --test integration
	@command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked --version $(CARGO_FUZZ_VERSION)
	$(CARGO) fuzz build -s none --fuzz-dir $(FUZZ_DIR) --target-dir $(FUZZ_OUT)/build
	@printf '%s\n' $(FUZZ_TARGETS) | xargs -P 2 -I{} sh -c '\
		mkdir -p $(FUZZ_OUT)/corpus/{} $(FUZZ_OUT)/artifacts/{} $(FUZZ_OUT)/logs && \
		if $(CARGO) fuzz run -s none --fuzz-dir $(FUZZ_DIR) --target-dir $(FUZZ_OUT)/build {} \
			$(FUZZ_OUT)/corpus/{} $(FUZZ_DIR)/corpus/{} -- -max_total_time=$(FUZZ_SECS) \
			-timeout=20 -artifact_prefix=$(FUZZ_OUT)/artifacts/{}/ > $(FUZZ_OUT)/logs/{}.log 2>&1; \
		then echo "libfuzzer {}: $$(grep -o "Done [0-9]* runs.*" $(FUZZ_OUT)/logs/{}.log)"; \
		else tail -40 $(FUZZ_OUT)/logs/{}.log; echo "libfuzzer {}: FAILED, see $(FUZZ_OUT)/artifacts/{}/"; exit 255; fi'

## Benchmarks (not part of `test`): Switchyard against a direct call to the mock and against
## nginx, interleaved in one run; prints one table with ratios and writes
## bench/results/latest.json. Builds release binaries (the gateway profile-guided, as
## `make release`; --no-pgo for the plain build) and installs nginx and wrk (apt-get) if
## missing. Options go through BENCH_ARGS, e.g. `make bench BENCH_ARGS="--duration 3 --rounds 1"`.
.PHONY: bench
bench:
	CARGO="$(CARGO)" $(PYTHON) bench/run.py $(BENCH_ARGS)

## The release binary as the image ships it: built with a profile of the bench's workloads
## (bench/pgo.py: an instrumented build, a short training run in front of the mock, the
## optimised build). Prints target/pgo/release/switchyard.
.PHONY: release
release:
	CARGO="$(CARGO)" $(PYTHON) bench/pgo.py

clean:
	$(CARGO) clean
	rm -rf $(VENV)

## Container image (multi-stage Dockerfile: static musl release build, distroless, non-root).
## Needs docker or podman: `make image IMAGE=ghcr.io/you/switchyard:dev`.
IMAGE  ?= switchyard:dev
ENGINE ?= $(shell command -v docker 2>/dev/null || command -v podman 2>/dev/null)
.PHONY: image helm-lint
image:
	@test -n "$(ENGINE)" || { echo "make image: no docker or podman here" >&2; exit 1; }
	$(ENGINE) build -t $(IMAGE) .

## Lint, render, schema-check the Helm chart and prove its RBAC against envtest (tests/python/test_helm.py).
helm-lint: build $(PY) envtest
	$(PY) -m pytest tests/python/test_helm.py -q

# Fresh machine: `make run` (install the runtime + standalone suite), `make test`
# (install with the dev tools + tests).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PROTOS := $(wildcard protos/im/v1/*.proto)
STAMP_INSTALL := $(VENV)/.installed
STAMP_RUNTIME := $(VENV)/.installed-runtime
STAMP_PROTO := im/v1/.generated

.PHONY: install install-runtime lock proto run test test-quick test-unit test-faults lint format clean services-up services-down cluster bench

install: $(STAMP_INSTALL) $(STAMP_PROTO)

# What running the suite needs and nothing more (no test tools, no test servers).
install-runtime: $(STAMP_RUNTIME) $(STAMP_PROTO)

# Every package, transitive ones included, comes from the lock at its hash; the project
# itself is then installed on top without resolving anything again. The dev install
# holds the runtime too, so it stamps both.
$(STAMP_INSTALL): pyproject.toml requirements/dev.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --require-hashes -r requirements/dev.lock
	$(BIN)/pip install -q --no-deps -e .
	$(BIN)/pip check
	touch $@ $(STAMP_RUNTIME)

$(STAMP_RUNTIME): pyproject.toml requirements/runtime.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --require-hashes -r requirements/runtime.lock
	$(BIN)/pip install -q --no-deps -e .
	$(BIN)/pip check
	touch $@

# Re-resolve the locks after a change to pyproject.toml's pins (or to take patch
# releases of transitive packages): both files are regenerated from pyproject.toml.
LOCK_FLAGS := --generate-hashes --allow-unsafe --strip-extras --no-emit-index-url --no-emit-find-links -q
# pip-compile from whatever venv there is: the install would fail its `pip check` on
# the very pins that the lock is to catch up with.
lock:
	@test -x $(BIN)/pip-compile || $(MAKE) $(STAMP_INSTALL)
	$(BIN)/pip-compile $(LOCK_FLAGS) -o requirements/runtime.lock pyproject.toml
	$(BIN)/pip-compile $(LOCK_FLAGS) --extra dev --extra test-servers -o requirements/dev.lock pyproject.toml

# The protobuf/gRPC modules are generated from protos/, never edited by hand
# (grpcio-tools is a runtime package: either install can generate them).
$(STAMP_PROTO): $(PROTOS) $(STAMP_RUNTIME)
	$(BIN)/python -m im.protogen
	touch $@

proto: $(STAMP_RUNTIME)
	$(BIN)/python -m im.protogen
	touch $(STAMP_PROTO)

# Ports and the rest: IM_* environment variables, e.g. IM_GATEWAY_PORT=8081 make run.
run: install-runtime
	$(BIN)/imctl standalone

# Integration tests need the real servers; without them (no root, offline) they are
# skipped and the summary says which and how to start them.
test: install
	scripts/dev-services.sh up || echo "warning: test servers not started; integration tests will be skipped"
	$(BIN)/pytest

services-up:
	scripts/dev-services.sh up

services-down:
	scripts/dev-services.sh down

cluster: install services-up
	$(BIN)/imctl cluster

# All benchmark scenarios on a standalone suite beside a bare relay; results in
# bench-results/. Options: make bench BENCH_ARGS="direct --pairs 50 --distributed".
bench: install
	$(BIN)/imctl bench $(BENCH_ARGS)

test-unit: install
	$(BIN)/pytest -m "not e2e and not integration and not faults"

# The unit tests, quietly, stopping at the first failure: the check to run while working.
test-quick: install
	$(BIN)/pytest -q -x -m "not e2e and not integration and not faults"

# Kills and restarts every backend and service under traffic, on instances of its own
# (free ports); the shared test servers are left alone.
test-faults: install
	scripts/dev-services.sh up >/dev/null  # installs the server packages the suite runs
	$(BIN)/pytest -m faults tests/faults

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) $(STAMP_PROTO) im/v1/*_pb2*.py im/v1/*_pb2*.pyi .im-data

# The few commands people run. Everything installs into ./.venv.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
PLUGINS := $(wildcard plugins/*/pyproject.toml)
PLUGIN_DIRS := $(patsubst %/pyproject.toml,%,$(PLUGINS))

.PHONY: setup setup-run run test lint typecheck docs pytest compliance compliance-full bench clean system-deps fuzz soak

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

HOST ?= 127.0.0.1
PORT ?= 8000

# What running needs: chanlite and the SQLite layer the chat example uses.
.stamp-run: $(BIN)/python pyproject.toml plugins/chanlite-sqlite/pyproject.toml
	$(BIN)/pip install -q -e . -e plugins/chanlite-sqlite
	touch $@

# The development toolchain: every plugin with its test extras, Django, linters, mypy.
.stamp-setup: .stamp-run pyproject.toml requirements-dev.txt $(PLUGINS)
	$(BIN)/pip install -q -e '.[django]' $(foreach d,$(PLUGIN_DIRS),-e '$(d)[test]') -r requirements-dev.txt
	touch $@

## Install only what running an app needs (chanlite + the SQLite layer) into ./.venv.
setup-run: .stamp-run

## Install everything the tests and checks need into ./.venv.
setup: .stamp-setup

## Set up and run the chat example on the built-in server (HOST=, PORT= to change where).
run: setup-run
	$(BIN)/chanlite run examples/chat/app.py:app --layer sqlite:///chat.db --host $(HOST) --port $(PORT)

## OS packages the tests and benchmarks drive for real (redis-server, chromium, wrk); installs only what is missing.
system-deps:
	bash scripts/system-deps.sh

## Style, formatting and the import contracts (the layering in docs/architecture.md).
lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: setup
	$(BIN)/mypy chanlite $(foreach d,$(PLUGIN_DIRS),$(d)/$(subst -,_,$(notdir $(d))))

## Build the documentation site (docs/, mkdocs.yml) into ./site; a warning (a broken link,
## a missing page or anchor, a docstring the API reference cannot read) fails the build
## (not with -q: mkdocs then drops the warnings that --strict counts).
docs: setup
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

pytest: setup system-deps
	$(BIN)/pytest -q -p no:cacheprovider

## Set up and run everything CI runs: lint, types, the docs site, the whole test suite
## (every code block of the README and docs/ included), the Autobahn subset.
test: lint typecheck docs compliance pytest

compliance: setup
	bash compliance/run.sh
	COMPLIANCE_AGENT=chanlite-app COMPLIANCE_REPORTS=compliance/reports/app \
	COMPLIANCE_SERVER_CMD="$(BIN)/chanlite run compliance/app_echo.py:app --host 127.0.0.1 \
	--port {port} --ws-max-size 16777216 --ws-ping-interval 0 --log-level warning" \
	bash compliance/run.sh

compliance-full: setup
	FULL=1 bash compliance/run.sh

## The protocol fuzz properties with many more examples than the normal suite's short pass.
fuzz: setup
	CHANLITE_FUZZ_EXAMPLES=$${CHANLITE_FUZZ_EXAMPLES:-20000} $(BIN)/pytest -q -p no:cacheprovider \
	tests/server/test_protocol_fuzz.py

## Minutes of churning connections, slow readers and a ping flood against chanlite run,
## then two chanlite run processes on a redis-server restarted mid-run (SOAK_SECONDS each):
## asserts RSS stays under a ceiling and every message is delivered or its loss reported.
soak: setup system-deps
	$(BIN)/python -m tests.server.soak
	$(BIN)/python -m tests.server.layer_soak

bench: setup system-deps
	bash bench/run.sh

clean:
	rm -rf $(VENV) .stamp-setup .stamp-run site

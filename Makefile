# The few commands people run. Everything installs into ./.venv.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
PLUGINS := $(wildcard plugins/*/pyproject.toml)
PLUGIN_DIRS := $(patsubst %/pyproject.toml,%,$(PLUGINS))

.PHONY: setup run test lint typecheck pytest compliance compliance-full bench clean system-deps fuzz soak

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

.stamp-setup: $(BIN)/python pyproject.toml requirements-dev.txt $(PLUGINS)
	$(BIN)/pip install -q -e '.[django]' $(foreach d,$(PLUGIN_DIRS),-e '$(d)[test]') -r requirements-dev.txt
	touch $@

setup: .stamp-setup

## Set up and run the chat example on the built-in server.
run: setup
	$(BIN)/chanlite run examples/chat/app.py:app --layer sqlite:///chat.db --host 127.0.0.1 --port 8000

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

pytest: setup system-deps
	$(BIN)/pytest -q -p no:cacheprovider

## Set up and run everything CI runs: lint, types, the whole test suite, the Autobahn subset.
test: lint typecheck compliance pytest

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
	rm -rf $(VENV) .stamp-setup

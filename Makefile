# keybound: two commands work on a fresh machine with Python >= 3.11.
#   make demo   set up .venv and run the demo
#   make test   set up .venv and run ruff, mypy and pytest
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
RUNTIME_STAMP := $(VENV)/.installed-runtime
DEV_STAMP := $(VENV)/.installed-dev

.PHONY: all demo test lint typecheck pytest venv runtime clean fuzz fuzz-codec soak bench

all: test

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip setuptools wheel

# The demo needs the runtime dependencies only (seconds); the tests add the dev extras.
$(RUNTIME_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e . --config-settings editable_mode=strict
	touch $(RUNTIME_STAMP)

$(DEV_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]' --config-settings editable_mode=strict
	touch $(DEV_STAMP) $(RUNTIME_STAMP)

# The strict editable install is a tree of links to the source files, which
# type checkers can follow; re-linking picks up modules added since.
RELINK = $(BIN)/pip install -q --no-deps --no-build-isolation -e . --config-settings editable_mode=strict

runtime: $(RUNTIME_STAMP)
	$(RELINK)

venv: $(DEV_STAMP)
	$(RELINK)

demo: runtime
	$(BIN)/keybound demo

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check core coap tools tests

typecheck: venv
	$(BIN)/mypy -p keybound.core -p keybound.coap -p keybound.tools

pytest: venv
	$(BIN)/python -m pytest -q

test: lint typecheck pytest

# Long modes of the hostile-traffic tests (bounded; they stop by themselves).
fuzz: venv
	$(BIN)/python -m tests.helpers.soak fuzz

fuzz-codec: venv
	$(BIN)/python -m tests.helpers.soak codec

soak: venv
	$(BIN)/python -m tests.helpers.soak soak

bench: venv
	$(BIN)/keybound bench

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache .pytest_cache

# Two commands matter on a fresh machine: `make demo` and `make test`.
# Both create .venv and install htcgrid into it on first use; nothing else is needed.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint types unit contract integration e2e api drills bench install clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/htcgrid demo

lint: $(STAMP)
	$(BIN)/ruff check src tests bench examples
	$(BIN)/ruff format --check src tests bench examples

types: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest tests/unit

contract: $(STAMP)
	$(BIN)/pytest tests/contract

integration: $(STAMP)
	$(BIN)/pytest tests/integration

e2e: $(STAMP)
	$(BIN)/pytest tests/e2e

api: $(STAMP)
	$(BIN)/pytest tests/api

drills: $(STAMP)
	$(BIN)/pytest tests/drills

# lint -> types -> unit -> contract -> integration -> e2e -> api -> drills
test: lint types
	$(BIN)/pytest tests/unit tests/contract tests/integration tests/e2e tests/api tests/drills

bench: $(STAMP)
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

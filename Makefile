# Two commands matter on a fresh machine: `make demo` and `make test`.
# Both create .venv and install htcgrid into it on first use; nothing else is needed.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint types unit contract e2e bench install clean

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

e2e: $(STAMP)
	$(BIN)/pytest tests/e2e

# lint -> types -> unit -> contract -> e2e, stopping at the first failure
test: lint types
	$(BIN)/pytest tests/unit tests/contract tests/e2e

bench: $(STAMP)
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

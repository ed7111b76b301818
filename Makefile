# Two commands: `make demo` and `make test`. Each creates .venv when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-faults lint install clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/edgeticket demo --out runs/demo

lint: $(STAMP)
	$(BIN)/ruff check edgeticket tests benchmarks

test: $(STAMP) lint
	$(BIN)/python -m pytest -q tests

test-faults: $(STAMP)
	$(BIN)/python -m pytest -q tests/test_faults.py

clean:
	rm -rf runs .pytest_cache .ruff_cache

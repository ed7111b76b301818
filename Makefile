# Two commands: `make demo` and `make test`. Each creates .venv when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-faults lint install clean gpu-wheels gpu-check-cpu

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

# The lent GPU machine has no package registry: carry torch-pruning's wheel in .gpu/ (git-ignored).
gpu-wheels: $(STAMP)
	$(BIN)/python -m pip download -q --no-deps -d .gpu/wheels torch-pruning==$$($(BIN)/python -c "import torch_pruning; print(torch_pruning.__version__)")

gpu-check-cpu: $(STAMP)
	$(BIN)/python benchmarks/gpu_check.py --device cpu --quick --out runs/gpu_check_cpu

clean:
	rm -rf runs .pytest_cache .ruff_cache

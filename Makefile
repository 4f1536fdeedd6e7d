# Two commands do all the set-up on a fresh machine (Python 3.11 and pip are enough):
#   make quickstart   train a defended SmallCNN on the embedded MNIST sample, print robust accuracy
#   make test         lint and run the whole test suite (what CI runs)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install quickstart test lint clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --editable ".[sample,dev]"
	touch $(STAMP)

quickstart: $(STAMP)
	$(BIN)/lit-robust fit --config configs/quickstart.yaml

lint: $(STAMP)
	$(BIN)/ruff check lit_robust tests benchmarks
	$(BIN)/ruff format --check lit_robust tests benchmarks

test: lint
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) runs lightning_logs .pytest_cache .ruff_cache

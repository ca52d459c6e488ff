# Two entry points (see README): `make demo` runs the main job, `make test` runs every check.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# strict editable mode links the package directories under their import names, so that mypy
# and every tool see `cropworker` and `cropworker_models` exactly as installed.
EDITABLE := --config-settings editable_mode=strict

.PHONY: demo test lint install install-dev clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

install: $(BIN)/python
	$(BIN)/pip install -q -e ".[demo]" $(EDITABLE)

install-dev: $(BIN)/python
	$(BIN)/pip install -q -e ".[train,dev,gpu]" $(EDITABLE)

demo: install
	$(BIN)/cropworker demo

lint: install-dev
	$(BIN)/ruff check worker models tests benchmarks fuzz
	$(BIN)/ruff format --check worker models tests benchmarks fuzz
	$(BIN)/mypy -p cropworker -p cropworker_models

test: lint
	$(BIN)/pytest

clean:
	rm -rf $(VENV) build *.egg-info out

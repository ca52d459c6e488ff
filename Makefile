# Two entry points (see README): `make demo` runs the main job, `make test` runs every check.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# strict editable mode links the package directories under their import names, so that mypy
# and every tool see `cropworker` and `cropworker_models` exactly as installed. The training code
# (`cropworker_models`) is its own distribution, models/pyproject.toml, with the training
# dependencies (torch): never in the runtime wheel or image.
EDITABLE := --config-settings editable_mode=strict
# OpenCV contrib (cv2.saliency, CascadeClassifier) for the smart-crop peers' tests: its wheel owns
# `cv2` as the runtime's does, so it lives apart, at the runtime's exact version, and only pytest
# sees it (mypy checks against the runtime's cv2).
CONTRIB := cache/opencv-contrib

.PHONY: demo test lint install install-dev clean lock

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

install: $(BIN)/python
	$(BIN)/pip install -q -e ".[demo]" $(EDITABLE)

install-dev: $(BIN)/python
	$(BIN)/pip install -q -e ".[dev,gpu]" -e ./models $(EDITABLE)
	v=$$($(BIN)/python -c 'from importlib.metadata import version; print(version("opencv-python-headless"))'); \
	test -d $(CONTRIB)/opencv_contrib_python_headless-$$v.dist-info || \
	$(BIN)/pip install -q --no-deps --upgrade --target $(CONTRIB) "opencv-contrib-python-headless==$$v"

demo: install
	$(BIN)/cropworker demo

lint: install-dev
	$(BIN)/ruff check worker models tests benchmarks fuzz
	$(BIN)/ruff format --check worker models tests benchmarks fuzz
	$(BIN)/mypy -p cropworker -p cropworker_models

test: lint
	PYTHONPATH=$(CONTRIB) $(BIN)/pytest

# Hash-locked dependencies of the container images (deploy/Dockerfile), resolved on PyPI for the
# images' platforms whatever this machine is: the CPU image (CPython 3.11), the GPU image's
# `gpu` extra (CPython 3.12 of its Ubuntu base), held to the CPU pins so both images run the
# same numpy/OpenCV/ONNX Runtime, and the build stage's tools (pyproject's build-system.requires,
# and `wheel` for the TensorRT sdist of the gpu extra). Existing pins are kept unless
# pyproject.toml excludes them; `make lock UPGRADE=--upgrade` moves everything to the latest.
UV := $(BIN)/uv
LOCK := $(UV) pip compile --quiet --generate-hashes --python-platform x86_64-manylinux_2_28 \
	--no-python-downloads --custom-compile-command "make lock" $(UPGRADE)

lock: $(BIN)/python
	$(BIN)/pip install -q "uv==0.13.9"
	$(LOCK) --python-version 3.11 pyproject.toml -o deploy/requirements.lock
	$(LOCK) --python-version 3.12 --extra gpu -c deploy/requirements.lock pyproject.toml \
		-o deploy/requirements-gpu.lock
	printf 'setuptools>=68\nwheel\n' | $(LOCK) --python-version 3.11 - -o deploy/requirements-build.lock

clean:
	rm -rf $(VENV) build *.egg-info models/build models/*.egg-info out

"""Fake CUDA and TensorRT modules, and an engine built with them once per session."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from cropworker.gpu.engine import BuildOptions, build_engine
from cropworker.gpu.sidecar import sidecar_path

from .fakes import FakeCudart, FakeTensorRT

ENGINE_MAX_BATCH = 4


@pytest.fixture
def cudart() -> FakeCudart:
    return FakeCudart()


@pytest.fixture
def trt(cudart: FakeCudart) -> FakeTensorRT:
    return FakeTensorRT(cudart)


@pytest.fixture(scope="session")
def built_engine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cudart = FakeCudart()
    out = tmp_path_factory.mktemp("engine") / "vanilla.engine"
    build_engine(
        "vanilla",
        out,
        BuildOptions(max_batch=ENGINE_MAX_BATCH),
        tensorrt=FakeTensorRT(cudart),
        cudart=cudart,
    )
    return out


@pytest.fixture
def engine_file(built_engine: Path, tmp_path: Path) -> Path:
    """A fresh copy of the session's engine and sidecar (tests may edit them)."""
    out = tmp_path / built_engine.name
    shutil.copy(built_engine, out)
    shutil.copy(sidecar_path(built_engine), sidecar_path(out))
    return out


@pytest.fixture(scope="module")
def torch_one_thread() -> Iterator[None]:
    """PyTorch's CPU thread pool on a busy machine runs 100x slower than one thread; ONNX
    Runtime, the reference, runs on one too. For the modules that run PyTorch on the CPU."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

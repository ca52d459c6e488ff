"""Every rung of the model ladder runs on the GPU path: an engine built for it takes the input
sizes the worker warms up with (a fault before the ladder: warm-up shapes assumed 256 px)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cropworker.backend import LADDER, resolve_model
from cropworker.gpu.engine import BuildOptions, build_engine
from cropworker.gpu.trt_backend import TensorRTBackend
from cropworker.stream.app import warm_up_shapes

from .fakes import FakeCudart, FakeTensorRT


@pytest.mark.parametrize("model", LADDER)
def test_each_rung_warms_up_on_an_engine_built_for_it(model: str, tmp_path: Path) -> None:
    cudart = FakeCudart()
    trt = FakeTensorRT(cudart)
    engine = tmp_path / f"{model}.engine"
    build_engine(model, engine, BuildOptions(max_batch=2), tensorrt=trt, cudart=cudart)
    with TensorRTBackend(engine, model, tensorrt=trt, cudart=cudart) as backend:
        shapes = warm_up_shapes(backend.info.long_side)
        assert max(max(s) for s in shapes) == backend.info.long_side
        backend.warm_up(shapes)
        assert backend.info.name == model


def test_the_old_default_shapes_are_outside_a_192_px_engine(tmp_path: Path) -> None:
    """What the fixed warm-up shapes did to a model whose long side is not 256."""
    cudart = FakeCudart()
    trt = FakeTensorRT(cudart)
    engine = tmp_path / "fast.engine"
    build_engine("fast", engine, BuildOptions(max_batch=2), tensorrt=trt, cudart=cudart)
    with TensorRTBackend(engine, "fast", tensorrt=trt, cudart=cudart) as backend:
        assert backend.info.long_side == 192
        with pytest.raises(ValueError, match="outside the engine's range"):
            backend.warm_up([(256, 192)])


def test_the_old_name_student_is_the_fast_rung() -> None:
    assert resolve_model("student") == resolve_model("fast")

"""The cuda backend on a real GPU, against ONNX Runtime on the CPU; skipped where there is none.

Targets: every shipped model within 1e-3 in log-density in fp32; fp16 within its documented
bound; a CUDA graph's replay equal to the eager run it was captured from, for shapes replayed
in any order (the graphs share one memory pool).
"""

from __future__ import annotations

import numpy as np
import pytest

from cropworker.backend import OnnxBackend, shipped_models
from cropworker.stream.app import warm_up_shapes

pytestmark = pytest.mark.gpu

GPU_TOLERANCE = 1e-3
FP16_TOLERANCE = 0.1  # as on the CPU (test_onnx_torch.py)


@pytest.fixture(scope="module")
def torch() -> object:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip(f"PyTorch {torch.__version__} sees no CUDA device")
    return torch


def batches(long_side: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    landscape, portrait = warm_up_shapes(long_side)
    return [
        rng.integers(0, 256, (batch, h, w, 3), dtype=np.uint8)
        for batch, (w, h) in [(1, landscape), (4, landscape), (3, portrait)]
    ]


@pytest.mark.parametrize("model", shipped_models())
@pytest.mark.parametrize(
    ("precision", "tolerance"), [("fp32", GPU_TOLERANCE), ("fp16", FP16_TOLERANCE)]
)
def test_outputs_match_onnx_runtime(
    torch: object, model: str, precision: str, tolerance: float
) -> None:
    from cropworker.gpu.torch_backend import TorchBackend

    reference = OnnxBackend(model, threads=4)
    backend = TorchBackend(model, precision=precision)
    assert backend.info == reference.info
    for images in batches(reference.info.long_side):
        got = backend.infer(images)
        expected = reference.infer(images)
        assert got.shape == expected.shape and got.dtype == np.float32
        worst = float(np.abs(got - expected).max())
        print(f"{model} {precision} {images.shape}: max |diff| {worst:.2e}")
        assert worst < tolerance


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_graph_replay_equals_eager(torch: object, precision: str) -> None:
    from cropworker.gpu.torch_backend import TorchBackend

    graphed = TorchBackend("large", precision=precision)
    eager = TorchBackend("large", precision=precision, cuda_graphs=False)
    first, second, third = batches(graphed.info.long_side)
    kept = []
    for images in (first, third, second, first, third):  # captures, then replays out of order
        out = graphed.infer(images)
        np.testing.assert_allclose(out, eager.infer(images), rtol=0, atol=1e-5)
        kept.append((images, out))
    assert graphed.graphs is not None and len(graphed.graphs.shapes) == 3
    for images, out in kept:  # results are the caller's, never a reused buffer
        np.testing.assert_allclose(out, eager.infer(images), rtol=0, atol=1e-5)

"""`TorchBackend` (the cuda backend): end to end on the CPU against ONNX Runtime, and its CUDA
mechanics (graphs, pinned buffers, streams) against the fake in torch_fakes.py."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")
pytestmark = pytest.mark.usefixtures("torch_one_thread")

from cropworker.backend import OnnxBackend  # noqa: E402
from cropworker.errors import CudaError, GpuOutOfMemoryError, GpuUnavailableError  # noqa: E402
from cropworker.gpu.onnx_torch import OnnxGraph, load_graph  # noqa: E402
from cropworker.gpu.torch_backend import (  # noqa: E402
    CudaGraphs,
    TorchBackend,
    cuda_device,
    cuda_errors,
    import_torch,
)
from cropworker.pipeline import Cropper  # noqa: E402
from cropworker.stream.app import warm_up_shapes  # noqa: E402

from .torch_fakes import FakeCuda, FakeTorch  # noqa: E402

SAMPLES = Path(__file__).parents[2] / "samples"
PHOTOS = ["astronaut.jpg", "chelsea.jpg", "coffee.jpg", "eyecrowd_003.jpg", "rocket.jpg"]


def noise(shape: tuple[int, ...], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


# ------------------------------------------------------------------------ the backend, on CPU


@pytest.mark.parametrize("model", ["fast", "large"])
def test_the_same_crops_as_onnx_runtime(model: str) -> None:
    reference = Cropper(OnnxBackend(model, threads=1), max_batch=4)
    cropper = Cropper(TorchBackend(model, device="cpu"), max_batch=4)
    assert cropper.backend.info == reference.backend.info
    photos = [(SAMPLES / name).read_bytes() for name in PHOTOS]  # landscapes and portraits
    expected = reference.crop_decoded([reference.decode(p) for p in photos])
    got = cropper.crop_decoded([cropper.decode(p) for p in photos])
    for mine, theirs in zip(got, expected, strict=True):
        assert mine.crops == theirs.crops
        assert [p[:2] for p in mine.salient_points] == [p[:2] for p in theirs.salient_points]
        np.testing.assert_allclose(mine.saliency, theirs.saliency, rtol=1e-3, atol=1e-9)


def test_the_cpu_device_runs_eagerly_and_checks_its_input() -> None:
    backend = TorchBackend("fast", device="cpu", cuda_graphs=True)
    assert backend.kind == "cuda" and backend.precision == "fp32"
    width, height = warm_up_shapes(backend.info.long_side)[0]
    backend.warm_up([(width, height)], batch=2)
    out = backend.infer(noise((2, height, width, 3), 0))
    assert out.shape == (2, height // 4, width // 4) and out.dtype == np.float32
    with pytest.raises(ValueError, match="expected \\(B, H, W, 3\\) uint8"):
        backend.infer(np.zeros((1, height, width, 3), np.float32))
    with pytest.raises(ValueError, match="precision must be one of fp32, fp16"):
        TorchBackend("fast", device="cpu", precision="int8")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
def test_no_cuda_device_is_gpu_unavailable() -> None:
    with pytest.raises(GpuUnavailableError, match="finds no usable CUDA device"):
        TorchBackend("fast")


@pytest.mark.parametrize("missing", ["torch", "onnx"])
def test_without_pytorch_or_onnx_the_gpu_is_unavailable(
    monkeypatch: pytest.MonkeyPatch, missing: str
) -> None:
    monkeypatch.setitem(sys.modules, missing, None)  # what `import` meets when it is missing
    with pytest.raises(GpuUnavailableError, match=f"needs PyTorch and onnx .*{missing}"):
        import_torch()


# ------------------------------------------------------------------ CUDA mechanics, with fakes


def test_device_checks() -> None:
    assert cuda_device(FakeTorch(), "cuda").index == 0
    with pytest.raises(GpuUnavailableError, match="no usable CUDA device"):
        cuda_device(FakeTorch(FakeCuda(devices=())), "cuda")
    with pytest.raises(GpuUnavailableError, match="no CUDA device 1 \\(1 found\\)"):
        cuda_device(FakeTorch(), "cuda:1")


@pytest.fixture(scope="module")
def graph() -> OnnxGraph:
    from cropworker.backend import resolve_model

    return load_graph(resolve_model("fast"))[0]


def eager(graph: OnnxGraph, images: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        out: np.ndarray = graph(torch.from_numpy(images)).numpy()
    return out


def test_one_graph_per_shape_replayed_with_fresh_inputs(graph: OnnxGraph) -> None:
    fake = FakeTorch()
    graphs = CudaGraphs(graph, torch.device("cpu"), fake)
    landscape, portrait = [(2, h, w, 3) for w, h in warm_up_shapes(192)]
    results = []
    for i, shape in enumerate([landscape, portrait, landscape, landscape, portrait]):
        images = noise(shape, seed=i)
        out = graphs.run(images)
        np.testing.assert_array_equal(out, eager(graph, images))
        results.append((images, out))
    assert fake.cuda.fake_captures == 2 and graphs.shapes == [landscape, portrait]
    assert fake.cuda.fake_replays == 5
    for images, out in results:  # each result is the caller's own, never a reused buffer
        np.testing.assert_array_equal(out, eager(graph, images))


def test_results_are_read_only_after_the_stream_finished(graph: OnnxGraph) -> None:
    """The fake runs queued copies and replays only at synchronisation, so a result read
    early would be the previous call's; here each call returns its own."""
    graphs = CudaGraphs(graph, torch.device("cpu"), FakeTorch())
    first, second = noise((1, 160, 192, 3), 1), noise((1, 160, 192, 3), 2)
    graphs.run(first)
    np.testing.assert_array_equal(graphs.run(second), eager(graph, second))


def test_out_of_memory_while_capturing(graph: OnnxGraph) -> None:
    fake = FakeTorch()
    fake.cuda.fake_capture_error = torch.cuda.OutOfMemoryError("CUDA out of memory.")
    graphs = CudaGraphs(graph, torch.device("cpu"), fake)
    with pytest.raises(
        GpuOutOfMemoryError, match="capturing a CUDA graph for \\(1, 160, 192, 3\\)"
    ):
        graphs.run(noise((1, 160, 192, 3), 0))
    assert graphs.shapes == []  # nothing half-captured is kept
    fake.cuda.fake_capture_error = None
    graphs.run(noise((1, 160, 192, 3), 0))
    assert graphs.shapes == [(1, 160, 192, 3)]


def test_cuda_failures_become_cuda_errors() -> None:
    illegal = "CUDA error: an illegal memory access was encountered"
    with (
        pytest.raises(CudaError, match=f"replaying: {illegal}") as info,
        cuda_errors(torch, "replaying"),
    ):
        raise torch.AcceleratorError(illegal)
    assert info.value.call == "replaying" and not isinstance(info.value, GpuOutOfMemoryError)
    with pytest.raises(ValueError, match="a bug"), cuda_errors(torch, "replaying"):
        raise ValueError("a bug")  # not a CUDA failure: not disguised as one

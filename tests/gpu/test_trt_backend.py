from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cropworker.decode import model_input_size
from cropworker.errors import (
    EngineMismatchError,
    GpuOutOfMemoryError,
    GpuUnavailableError,
    ModelError,
    TensorRTError,
)
from cropworker.gpu.sidecar import sha256_bytes, sidecar_path
from cropworker.gpu.trt_backend import TensorRTBackend
from cropworker.pipeline import Cropper

from .conftest import ENGINE_MAX_BATCH
from .fakes import FakeCudart, FakeTensorRT, cudaError_t, fake_network

LONG = 256
IN_BYTES = ENGINE_MAX_BATCH * LONG * LONG * 3
OUT_BYTES = ENGINE_MAX_BATCH * (LONG // 4) * (LONG // 4) * 4


def images(n: int, height: int = 192, width: int = 256, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, height, width, 3), dtype=np.uint8)


def load(engine: Path, trt: FakeTensorRT, cudart: FakeCudart, **kw: int) -> TensorRTBackend:
    return TensorRTBackend(engine, "vanilla", tensorrt=trt, cudart=cudart, **kw)


@pytest.mark.parametrize("n", [1, ENGINE_MAX_BATCH, ENGINE_MAX_BATCH + 1, 3 * ENGINE_MAX_BATCH - 1])
def test_outputs_match_the_engine_for_any_batch(
    engine_file: Path, trt: FakeTensorRT, cudart: FakeCudart, n: int
) -> None:
    backend = load(engine_file, trt, cudart)
    x = images(n)
    np.testing.assert_array_equal(backend.infer(x), fake_network(x, 4))


@pytest.mark.parametrize("aspect", [(4, 3), (3, 4), (16, 9), (9, 16), (1, 1), (5, 1), (1, 5)])
def test_every_decoder_shape_runs(
    engine_file: Path, trt: FakeTensorRT, cudart: FakeCudart, aspect: tuple[int, int]
) -> None:
    backend = load(engine_file, trt, cudart)
    width, height = model_input_size(*aspect, LONG)
    x = images(2, height, width)
    out = backend.infer(x)
    assert out.shape == (2, height // 4, width // 4)
    np.testing.assert_array_equal(out, fake_network(x, 4))


def test_large_batches_are_split_and_alternate_between_two_streams(
    engine_file: Path, trt: FakeTensorRT, cudart: FakeCudart
) -> None:
    backend = load(engine_file, trt, cudart)
    backend.infer(images(2 * ENGINE_MAX_BATCH + 1))
    runs = [
        (shape[0], stream)
        for context in backend._contexts
        for shape, stream in context.fake_executions
        if shape[1:] == (192, 256, 3)  # not the warm-up-free load, which runs nothing
    ]
    assert sorted(b for b, _ in runs) == [1, ENGINE_MAX_BATCH, ENGINE_MAX_BATCH]
    assert len({stream for _, stream in runs}) == 2
    # Chunk 3 reuses chunk 1's slot: that stream is synchronised once before the reuse, then
    # both streams once at the end. Nothing else waits.
    assert cudart.fake_syncs == 3


def test_buffers_are_sized_once_for_the_max_batch_at_the_largest_input(
    engine_file: Path, trt: FakeTensorRT, cudart: FakeCudart
) -> None:
    backend = load(engine_file, trt, cudart)
    assert (backend.input_bytes, backend.output_bytes) == (IN_BYTES, OUT_BYTES)
    assert sorted(len(b) for b in cudart.fake_host.values()) == [OUT_BYTES] * 2 + [IN_BYTES] * 2
    assert sorted(len(b) for b in cudart.fake_device.values()) == [OUT_BYTES] * 2 + [IN_BYTES] * 2
    assert len(cudart.fake_streams) == 2
    allocations = len(cudart.fake_calls)
    backend.infer(images(3 * ENGINE_MAX_BATCH))
    backend.infer(images(1, 256, 128))
    assert "cudaMalloc" not in cudart.fake_calls[allocations:]
    assert "cudaMallocHost" not in cudart.fake_calls[allocations:]


def test_tensor_addresses_are_set_once_per_context(
    engine_file: Path, trt: FakeTensorRT, cudart: FakeCudart
) -> None:
    backend = load(engine_file, trt, cudart)
    for n in (1, 5, 9):
        backend.infer(images(n))
    contexts = backend._contexts
    assert len(contexts) == 2
    assert [c.fake_address_calls for c in contexts] == [2, 2]
    assert all(set(c.fake_addresses.values()) <= set(cudart.fake_device) for c in contexts)


def test_one_stream_also_works(engine_file: Path, trt: FakeTensorRT, cudart: FakeCudart) -> None:
    backend = load(engine_file, trt, cudart, streams=1)
    x = images(2 * ENGINE_MAX_BATCH + 3)
    np.testing.assert_array_equal(backend.infer(x), fake_network(x, 4))
    assert len(cudart.fake_streams) == 1


def test_empty_batch(engine_file: Path, trt: FakeTensorRT, cudart: FakeCudart) -> None:
    backend = load(engine_file, trt, cudart)
    assert backend.infer(images(0)).shape == (0, 48, 64)


@pytest.mark.parametrize(
    ("x", "match"),
    [
        (np.zeros((1, 192, 256, 3), np.float32), "uint8"),
        (np.zeros((1, 192, 256), np.uint8), "uint8"),
        (np.zeros((1, 320, 256, 3), np.uint8), "outside the engine's range"),
        (np.zeros((1, 32, 256, 3), np.uint8), "outside the engine's range"),
    ],
)
def test_rejects_inputs_the_engine_cannot_take(
    engine_file: Path, trt: FakeTensorRT, cudart: FakeCudart, x: np.ndarray, match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        load(engine_file, trt, cudart).infer(x)


def test_info_comes_from_the_sidecar(
    engine_file: Path, trt: FakeTensorRT, cudart: FakeCudart
) -> None:
    backend = load(engine_file, trt, cudart)
    assert backend.info.tag == "vanilla@1"
    assert (backend.info.long_side, backend.info.output_stride) == (256, 4)
    assert backend.max_batch == ENGINE_MAX_BATCH


def test_cropper_runs_on_the_tensorrt_backend(
    engine_file: Path, trt: FakeTensorRT, cudart: FakeCudart
) -> None:
    data = Path("samples/chelsea.jpg").read_bytes()
    cropper = Cropper(load(engine_file, trt, cudart), max_batch=8)
    results = cropper.crop_decoded([cropper.decode(data) for _ in range(6)])
    assert [r.model for r in results] == ["vanilla@1"] * 6
    assert all(set(r.crops) == {"16:9", "1:1", "4:5", "9:16"} for r in results)


# ------------------------------------------------------------------ gates and failures


def test_no_gpu_stops_before_tensorrt_is_touched(engine_file: Path) -> None:
    cudart = FakeCudart(count_error=cudaError_t.cudaErrorInsufficientDriver)
    trt = FakeTensorRT(cudart)
    with pytest.raises(GpuUnavailableError, match="cudaErrorInsufficientDriver"):
        load(engine_file, trt, cudart)
    assert trt.fake_runtimes == []


def test_zero_devices_is_no_gpu(engine_file: Path) -> None:
    cudart = FakeCudart(devices=[])
    trt = FakeTensorRT(cudart)
    with pytest.raises(GpuUnavailableError, match="no CUDA device"):
        load(engine_file, trt, cudart)
    assert trt.fake_runtimes == []


def _edit_sidecar(engine: Path, edit: dict[str, dict[str, object]]) -> None:
    path = sidecar_path(engine)
    doc = json.loads(path.read_text())
    for section, values in edit.items():
        doc[section].update(values)
    path.write_text(json.dumps(doc))


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        ({"gpu": {"compute_capability": "8.6", "name": "NVIDIA A10"}}, "compute capability 8.6"),
        ({"gpu": {"name": "NVIDIA H100"}}, "built on a NVIDIA H100"),
        ({"tensorrt": {"version": "10.13.0.35"}}, "built by TensorRT 10.13.0.35"),
        ({"tensorrt": {"version": "11.5.0.1"}}, "built by TensorRT 11.5.0.1"),
        ({"onnx": {"sha256": "0" * 64}}, "built from ONNX sha256 000000000000"),
        ({"engine": {"sha256": "f" * 64}}, "not the one the sidecar describes"),
        ({"input": {"max": [4, 192, 256, 3]}}, "largest input 192x256 is under 256"),
    ],
)
def test_a_mismatched_engine_is_refused_before_loading(
    engine_file: Path,
    trt: FakeTensorRT,
    cudart: FakeCudart,
    edit: dict[str, dict[str, object]],
    match: str,
) -> None:
    _edit_sidecar(engine_file, edit)
    with pytest.raises(EngineMismatchError, match=match) as caught:
        load(engine_file, trt, cudart)
    assert "cropworker build-engine" in str(caught.value)
    assert trt.fake_runtimes == []


def test_every_mismatch_is_listed_at_once(
    engine_file: Path, trt: FakeTensorRT, cudart: FakeCudart
) -> None:
    _edit_sidecar(engine_file, {"gpu": {"compute_capability": "8.0"}, "onnx": {"sha256": "0"}})
    with pytest.raises(EngineMismatchError) as caught:
        load(engine_file, trt, cudart)
    assert "compute capability 8.0" in str(caught.value)
    assert "built from ONNX" in str(caught.value)


def test_missing_sidecar_and_missing_engine(
    engine_file: Path, trt: FakeTensorRT, cudart: FakeCudart
) -> None:
    sidecar_path(engine_file).unlink()
    with pytest.raises(EngineMismatchError, match="no sidecar"):
        load(engine_file, trt, cudart)
    with pytest.raises(ModelError, match="no engine file"):
        load(engine_file.with_name("absent.engine"), trt, cudart)


def test_engine_profile_must_match_its_sidecar(
    engine_file: Path, trt: FakeTensorRT, cudart: FakeCudart
) -> None:
    trt.fake_engine_profile = [(1, 64, 64, 3), (2, 192, 256, 3), (2, 256, 256, 3)]
    with pytest.raises(EngineMismatchError, match="profile"):
        load(engine_file, trt, cudart)
    assert cudart.fake_host == {} and cudart.fake_device == {}


def test_undeserializable_plan_reports_what_tensorrt_logged(
    engine_file: Path, trt: FakeTensorRT, cudart: FakeCudart
) -> None:
    engine_file.write_bytes(b"garbage")
    _edit_sidecar(engine_file, {"engine": {"sha256": sha256_bytes(b"garbage")}})
    with pytest.raises(TensorRTError, match="magic mismatch"):
        load(engine_file, trt, cudart)


def test_out_of_memory_frees_what_was_allocated(
    engine_file: Path, trt: FakeTensorRT, cudart: FakeCudart
) -> None:
    original = cudart.cudaMalloc
    calls = []

    def malloc_then_fail(size: int):  # type: ignore[no-untyped-def]
        calls.append(size)
        if len(calls) == 3:  # the second slot's first device buffer
            return cudaError_t.cudaErrorMemoryAllocation, None
        return original(size)

    cudart.cudaMalloc = malloc_then_fail  # type: ignore[method-assign]
    with pytest.raises(GpuOutOfMemoryError, match="cudaMalloc failed") as caught:
        load(engine_file, trt, cudart)
    assert caught.value.cuda_code == 2
    assert cudart.fake_host == {} and cudart.fake_device == {} and cudart.fake_streams == {}


def test_a_failed_execution_raises_and_the_backend_recovers(
    engine_file: Path, trt: FakeTensorRT, cudart: FakeCudart
) -> None:
    backend = load(engine_file, trt, cudart)
    trt.fake_execute_fails = True
    with pytest.raises(TensorRTError, match="illegal memory access"):
        backend.infer(images(2 * ENGINE_MAX_BATCH))
    assert all(not queue for queue in cudart.fake_streams.values())
    trt.fake_execute_fails = False
    x = images(2 * ENGINE_MAX_BATCH, seed=3)
    np.testing.assert_array_equal(backend.infer(x), fake_network(x, 4))


def test_a_failed_copy_is_a_typed_cuda_error(
    engine_file: Path, trt: FakeTensorRT, cudart: FakeCudart
) -> None:
    backend = load(engine_file, trt, cudart)
    cudart.fake_failures["cudaStreamSynchronize"] = cudaError_t.cudaErrorIllegalAddress
    with pytest.raises(Exception, match="cudaStreamSynchronize failed") as caught:
        backend.infer(images(1))
    assert type(caught.value).__name__ == "CudaError"
    assert caught.value.cuda_name == "cudaErrorIllegalAddress"  # type: ignore[attr-defined]


def test_close_frees_every_buffer_and_stream(
    engine_file: Path, trt: FakeTensorRT, cudart: FakeCudart
) -> None:
    with load(engine_file, trt, cudart) as backend:
        backend.infer(images(5))
        assert cudart.fake_device
    assert cudart.fake_host == {} and cudart.fake_device == {} and cudart.fake_streams == {}
    backend.close()  # idempotent


def test_version_compatible_plans_are_trusted_to_run_their_host_code(
    engine_file: Path, trt: FakeTensorRT, cudart: FakeCudart
) -> None:
    load(engine_file, trt, cudart)
    assert trt.fake_runtimes[0].engine_host_code_allowed is True

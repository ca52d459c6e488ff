"""The CUDA plumbing and the TensorRT runtime on a real GPU; skipped where there is none."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from cropworker.gpu import trtlib
from cropworker.gpu.cuda import Cuda, host_view
from cropworker.gpu.probe import probe_gpu

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def cuda() -> Cuda:
    runtime = pytest.importorskip("cuda.bindings.runtime")
    probe = probe_gpu(runtime)
    if not probe.available:
        pytest.skip(f"no GPU: {probe.reason}")
    return Cuda(runtime)


def test_pinned_round_trip_on_two_streams(cuda: Cuda) -> None:
    nbytes = 8 << 20
    streams = [cuda.create_stream() for _ in range(2)]
    pointers: list[tuple[str, int]] = []
    try:
        for i, stream in enumerate(streams):
            host, back, device = (
                cuda.malloc_host(nbytes),
                cuda.malloc_host(nbytes),
                cuda.malloc(nbytes),
            )
            pointers += [("host", host), ("host", back), ("device", device)]
            host_view(host, nbytes)[:] = np.arange(nbytes, dtype=np.uint64).astype(np.uint8) + i
            cuda.copy_to_device(device, host, nbytes, stream)
            cuda.copy_to_host(back, device, nbytes, stream)
            cuda.synchronize(stream)
            np.testing.assert_array_equal(host_view(back, nbytes), host_view(host, nbytes))
    finally:
        for kind, pointer in pointers:
            (cuda.free_host if kind == "host" else cuda.free)(pointer)
        for stream in streams:
            cuda.destroy_stream(stream)


def test_tensorrt_runtime_starts(cuda: Cuda) -> None:
    try:
        trt = trtlib.load_runtime()
    except Exception as exc:
        pytest.skip(str(exc))
    logger, capture = trtlib.capture_log(trt)
    runtime: Any = trt.Runtime(logger)
    assert runtime is not None
    assert runtime.deserialize_cuda_engine(b"not a plan") is None
    assert capture.take(), "TensorRT logged nothing for a bad plan"

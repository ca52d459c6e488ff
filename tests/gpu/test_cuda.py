from __future__ import annotations

import numpy as np
import pytest

from cropworker.errors import CudaError, GpuOutOfMemoryError, GpuUnavailableError
from cropworker.gpu.cuda import Cuda, host_view
from cropworker.gpu.probe import probe_gpu, require_gpu

from .fakes import FakeCudart, cudaError_t


def test_values_come_back_without_the_error_code(cudart: FakeCudart) -> None:
    cuda = Cuda(cudart)
    assert cuda.device_count() == 1
    device = cuda.device(0)
    assert (device.name, device.compute_capability) == ("NVIDIA H200", "9.0")
    assert cuda.driver_version() == 13000


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (cudaError_t.cudaErrorMemoryAllocation, GpuOutOfMemoryError),
        (cudaError_t.cudaErrorIllegalAddress, CudaError),
        (cudaError_t.cudaErrorNoDevice, GpuUnavailableError),
        (cudaError_t.cudaErrorInsufficientDriver, GpuUnavailableError),
    ],
)
def test_error_codes_become_typed_exceptions(
    cudart: FakeCudart, error: cudaError_t, kind: type[Exception]
) -> None:
    cudart.fake_failures["cudaMalloc"] = error
    with pytest.raises(kind, match=f"cudaMalloc failed: {error.name}") as caught:
        Cuda(cudart).malloc(16)
    assert type(caught.value) is kind
    if isinstance(caught.value, CudaError):
        assert (caught.value.call, caught.value.cuda_code) == ("cudaMalloc", int(error))
        assert caught.value.cuda_name == error.name


def test_error_message_carries_the_runtime_text(cudart: FakeCudart) -> None:
    cudart.fake_failures["cudaMemcpyAsync"] = cudaError_t.cudaErrorIllegalAddress
    cuda = Cuda(cudart)
    with pytest.raises(CudaError, match="illegal memory access"):
        cuda.copy_to_device(0, 0, 1, cuda.create_stream())


def test_round_trip_through_pinned_and_device_memory(cudart: FakeCudart) -> None:
    cuda = Cuda(cudart)
    stream = cuda.create_stream()
    host, back, device = cuda.malloc_host(64), cuda.malloc_host(64), cuda.malloc(64)
    host_view(host, 64)[:] = np.arange(64, dtype=np.uint8)
    cuda.copy_to_device(device, host, 64, stream)
    cuda.copy_to_host(back, device, 64, stream)
    assert not host_view(back, 64).any()  # queued, not yet run
    cuda.synchronize(stream)
    np.testing.assert_array_equal(host_view(back, 64), np.arange(64))


def test_probe_without_a_driver() -> None:
    probe = probe_gpu(FakeCudart(count_error=cudaError_t.cudaErrorInsufficientDriver))
    assert not probe.available
    assert "cudaErrorInsufficientDriver" in probe.reason
    with pytest.raises(GpuUnavailableError):
        probe.device(0)


def test_probe_finds_devices() -> None:
    probe = probe_gpu(FakeCudart(devices=[("NVIDIA L4", 8, 9), ("NVIDIA L4", 8, 9)]))
    assert probe.available and len(probe.devices) == 2
    assert probe.device(1).compute_capability == "8.9"
    assert "NVIDIA L4" in probe.reason
    with pytest.raises(GpuUnavailableError, match="no CUDA device 2"):
        probe.device(2)


def test_probe_survives_a_broken_install() -> None:
    class Broken(FakeCudart):
        def cudaGetDeviceCount(self) -> tuple[object, object]:
            raise OSError("libcudart.so.13: cannot open shared object file")

    probe = probe_gpu(Broken())
    assert not probe.available and "libcudart" in probe.reason
    with pytest.raises(GpuUnavailableError, match="libcudart"):
        require_gpu(Broken())


def test_probe_with_the_installed_bindings_never_raises() -> None:
    pytest.importorskip("cuda.bindings.runtime")
    probe = probe_gpu()
    assert probe.available == bool(probe.devices)
    assert probe.reason

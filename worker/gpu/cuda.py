"""Thin typed wrappers over the CUDA runtime of cuda-bindings (`cuda.bindings.runtime`).

cuda-bindings returns `(cudaError_t, *values)` from every call instead of raising. `Cuda.call`
checks the code and raises a typed exception that names the call (`CudaError`,
`GpuOutOfMemoryError`, or `GpuUnavailableError` for "no driver / no device"), so no error can be
dropped on the floor. The runtime module is passed in: production code gets it from
`load_runtime()` (a lazy import), tests pass a fake.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import CudaError, GpuError, GpuOutOfMemoryError, GpuUnavailableError

# cudaError_t names that mean "there is no usable GPU here", not "this operation failed".
UNAVAILABLE_ERRORS = frozenset(
    {
        "cudaErrorNoDevice",
        "cudaErrorInsufficientDriver",
        "cudaErrorSystemDriverMismatch",
        "cudaErrorCallRequiresNewerDriver",
        "cudaErrorDevicesUnavailable",
    }
)
OUT_OF_MEMORY_ERRORS = frozenset({"cudaErrorMemoryAllocation"})


def load_runtime() -> Any:
    """cuda-bindings' runtime module. Raises `GpuUnavailableError` when it is not installed."""
    try:
        from cuda.bindings import runtime
    except ImportError as exc:
        raise GpuUnavailableError(
            "cuda-bindings is not installed (pip install 'cropworker[gpu]')"
        ) from exc
    return runtime


@dataclass(frozen=True)
class DeviceInfo:
    index: int
    name: str
    major: int
    minor: int
    total_memory: int

    @property
    def compute_capability(self) -> str:
        return f"{self.major}.{self.minor}"


def host_view(pointer: int, nbytes: int) -> np.ndarray:
    """A uint8 NumPy view (no copy) of `nbytes` of host memory at `pointer`."""
    return np.ctypeslib.as_array((ctypes.c_ubyte * nbytes).from_address(pointer))


class Cuda:
    """The CUDA runtime calls the GPU path uses, each checked."""

    def __init__(self, runtime: Any) -> None:
        self.rt = runtime
        self._success = runtime.cudaError_t.cudaSuccess

    def call(self, name: str, *args: Any) -> tuple[Any, ...]:
        """Run `cudart.<name>(*args)`; its values without the error code, or raise."""
        result = getattr(self.rt, name)(*args)
        err, values = result[0], tuple(result[1:])
        if err != self._success:
            raise self.error(name, err)
        return values

    def error(self, call: str, err: Any) -> GpuError:
        cuda_name = getattr(err, "name", "") or f"cudaError {int(err)}"
        described = self.rt.cudaGetErrorString(err)
        text = described[1].decode(errors="replace") if described[0] == self._success else ""
        message = f"{call} failed: {cuda_name}" + (f" ({text})" if text else "")
        if cuda_name in UNAVAILABLE_ERRORS:
            return GpuUnavailableError(message)
        kind = GpuOutOfMemoryError if cuda_name in OUT_OF_MEMORY_ERRORS else CudaError
        return kind(message, call=call, cuda_code=int(err), cuda_name=cuda_name)

    # devices
    def device_count(self) -> int:
        return int(self.call("cudaGetDeviceCount")[0])

    def device(self, index: int) -> DeviceInfo:
        props = self.call("cudaGetDeviceProperties", index)[0]
        name = props.name.split(b"\0", 1)[0].decode(errors="replace")
        return DeviceInfo(
            index, name, int(props.major), int(props.minor), int(props.totalGlobalMem)
        )

    def driver_version(self) -> int:
        return int(self.call("cudaDriverGetVersion")[0])

    def set_device(self, index: int) -> None:
        self.call("cudaSetDevice", index)

    # memory
    def malloc_host(self, nbytes: int) -> int:
        """Page-locked host memory: the only kind an async copy really overlaps with compute."""
        return int(self.call("cudaMallocHost", nbytes)[0])

    def free_host(self, pointer: int) -> None:
        self.call("cudaFreeHost", pointer)

    def malloc(self, nbytes: int) -> int:
        return int(self.call("cudaMalloc", nbytes)[0])

    def free(self, pointer: int) -> None:
        self.call("cudaFree", pointer)

    def mem_info(self) -> tuple[int, int]:
        """(free, total) bytes of the current device."""
        free, total = self.call("cudaMemGetInfo")
        return int(free), int(total)

    # streams and copies
    def create_stream(self) -> Any:
        # Non-blocking: no implicit synchronisation with the legacy default stream, which
        # would serialise the two streams the backend alternates between.
        return self.call("cudaStreamCreateWithFlags", self.rt.cudaStreamNonBlocking)[0]

    def destroy_stream(self, stream: Any) -> None:
        self.call("cudaStreamDestroy", stream)

    def synchronize(self, stream: Any) -> None:
        self.call("cudaStreamSynchronize", stream)

    def copy_to_device(self, device: int, host: int, nbytes: int, stream: Any) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self.call("cudaMemcpyAsync", device, host, nbytes, kind, stream)

    def copy_to_host(self, host: int, device: int, nbytes: int, stream: Any) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self.call("cudaMemcpyAsync", host, device, nbytes, kind, stream)

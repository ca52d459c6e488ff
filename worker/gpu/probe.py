"""Is there a usable GPU? Asked through the CUDA runtime before anything touches TensorRT.

On a machine without a driver, creating a TensorRT Runtime logs an error and a later
deserialisation segfaults (docs/notes.md#tensorrt-without-a-driver), so the probe is the gate:
`probe_gpu` never raises and never imports TensorRT; `require_gpu` turns a negative answer into
`GpuUnavailableError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import GpuError, GpuUnavailableError
from .cuda import Cuda, DeviceInfo, load_runtime


@dataclass(frozen=True)
class GpuProbe:
    available: bool
    reason: str  # why not, or a one-line description of what was found
    devices: tuple[DeviceInfo, ...] = ()
    driver_version: int = 0  # e.g. 13000 for CUDA 13.0

    def device(self, index: int = 0) -> DeviceInfo:
        if not self.available:
            raise GpuUnavailableError(self.reason)
        if not 0 <= index < len(self.devices):
            raise GpuUnavailableError(f"no CUDA device {index} ({len(self.devices)} found)")
        return self.devices[index]


def probe_gpu(runtime: Any | None = None) -> GpuProbe:
    """Count the CUDA devices and describe them. `runtime` is cuda-bindings' runtime module
    (imported when None). Never raises: every failure is a negative answer with its reason."""
    try:
        cuda = Cuda(runtime if runtime is not None else load_runtime())
        count = cuda.device_count()
        if count == 0:
            return GpuProbe(False, "no CUDA device found")
        devices = tuple(cuda.device(i) for i in range(count))
        driver = cuda.driver_version()
    except GpuError as exc:
        return GpuProbe(False, str(exc))
    except Exception as exc:  # a broken install raises whatever its loader raises
        return GpuProbe(False, f"the CUDA runtime failed: {type(exc).__name__}: {exc}")
    first = devices[0]
    reason = f"{count} CUDA device(s); device 0: {first.name}, sm {first.compute_capability}"
    return GpuProbe(True, reason, devices, driver)


def require_gpu(runtime: Any | None = None) -> GpuProbe:
    """`probe_gpu`, raising `GpuUnavailableError` when no GPU is usable."""
    probe = probe_gpu(runtime)
    if not probe.available:
        raise GpuUnavailableError(probe.reason)
    return probe

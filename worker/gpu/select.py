"""Which backend and decoder a worker gets, and the fallback to the CPU.

    backend "cpu"       ONNX Runtime on the CPU
    backend "tensorrt"  the engine at `engine`; needs a GPU and TensorRT
    backend "cuda"      PyTorch on the GPU, from the same ONNX (`cuda_precision` fp32 or fp16)
    backend "auto"      "tensorrt" when an engine is configured, else "cuda" when the host has an
                        NVIDIA device node and PyTorch finds a usable CUDA device, else "cpu"
                        (PyTorch is not even imported on a host without a device node: ~1 s
                        and ~300 MB a CPU worker has no use for)

With no usable GPU (no driver, no device, no CUDA/TensorRT bindings, no PyTorch) a GPU choice
falls back to the CPU: with a warning when it was asked for ("tensorrt", "cuda", or "auto" with
an engine), with an info line when "auto" merely looked for one. With `require_gpu` the error
stands instead, "auto" included. Any other failure (a mismatched engine, a CUDA error on a
working GPU) is never hidden by a fallback. GPU decoding follows the same rule. The constructors
are parameters so tests can replace them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..backend import Backend, ModelInfo, OnnxBackend
from ..decode import DecodedImage, DecodeLimits
from ..errors import GpuUnavailableError, SettingsError
from .torch_backend import DEFAULT_PRECISION, PRECISIONS, TorchBackend

log = logging.getLogger(__name__)

BACKEND_CHOICES = ("auto", "cpu", "cuda", "tensorrt")


class ServingBackend(Backend, Protocol):
    info: ModelInfo

    def warm_up(self, shapes: list[tuple[int, int]], batch: int = 1) -> None: ...

    def infer(self, images: np.ndarray) -> np.ndarray: ...


Decoder = Callable[[bytes], DecodedImage]


@dataclass(frozen=True)
class Selection:
    backend: ServingBackend
    kind: str  # "cpu", "cuda" or "tensorrt": what actually runs
    decoder: Decoder | None  # None: the CPU decoder
    fallback: str = ""  # why the GPU was wanted but not used


def _tensorrt_backend(engine: Path, model: str) -> ServingBackend:
    from .trt_backend import TensorRTBackend

    return TensorRTBackend(engine, model)


def _cuda_backend(model: str, precision: str) -> ServingBackend:
    return TorchBackend(model, precision=precision)  # imports PyTorch


def _nvidia_device_present() -> bool:
    """Whether the host exposes an NVIDIA GPU (/dev/nvidia0, ...): a cheap look before importing
    PyTorch."""
    return any(Path("/dev").glob("nvidia[0-9]*"))


def _nvjpeg_decoder(long_side: int, limits: DecodeLimits) -> Decoder:
    from .nvjpeg import NvJpegDecoder

    return NvJpegDecoder(long_side, limits)


def select_backend(
    choice: str,
    *,
    model: str,
    threads: int,
    engine: Path | None,
    require_gpu: bool = False,
    gpu_decode: bool = False,
    cuda_precision: str = DEFAULT_PRECISION,
    limits: DecodeLimits | None = None,
    cpu: Callable[[str, int], ServingBackend] = OnnxBackend,
    tensorrt: Callable[[Path, str], ServingBackend] = _tensorrt_backend,
    cuda: Callable[[str, str], ServingBackend] = _cuda_backend,
    nvjpeg: Callable[[int, DecodeLimits], Decoder] = _nvjpeg_decoder,
    device_present: Callable[[], bool] = _nvidia_device_present,
) -> Selection:
    """The backend (and decoder) for these settings; see the module docstring."""
    if choice not in BACKEND_CHOICES:
        raise SettingsError(f"backend must be one of {', '.join(BACKEND_CHOICES)}, got {choice!r}")
    if choice == "tensorrt" and engine is None:
        raise SettingsError("backend tensorrt needs an engine (CROPWORKER_ENGINE)")
    if cuda_precision not in PRECISIONS:
        raise SettingsError(
            f"cuda_precision must be one of {', '.join(PRECISIONS)}, got {cuda_precision!r}"
        )
    gpu: Callable[[], ServingBackend] | None = None
    if choice == "tensorrt" or (choice == "auto" and engine is not None):
        assert engine is not None
        gpu, kind = partial(tensorrt, engine, model), "tensorrt"
    elif choice == "cuda" or (choice == "auto" and device_present()):
        gpu, kind = partial(cuda, model, cuda_precision), "cuda"
    elif choice == "auto" and require_gpu:
        raise GpuUnavailableError("no NVIDIA device on this host (no /dev/nvidia*)")
    fallback = ""
    backend: ServingBackend
    if gpu is None:
        backend, kind = cpu(model, threads), "cpu"
    else:
        try:
            backend = gpu()
        except GpuUnavailableError as exc:
            if require_gpu:
                raise
            fallback = str(exc)
            # "auto" without an engine only looked for a GPU: not finding one is no surprise.
            level = logging.INFO if choice == "auto" and kind == "cuda" else logging.WARNING
            log.log(level, "no usable GPU (%s): falling back to ONNX Runtime on the CPU", exc)
            backend, kind = cpu(model, threads), "cpu"
    decoder = _decoder(gpu_decode, require_gpu, backend.info, limits, nvjpeg)
    return Selection(backend, kind, decoder, fallback)


def _decoder(
    wanted: bool,
    require_gpu: bool,
    info: ModelInfo,
    limits: DecodeLimits | None,
    nvjpeg: Callable[[int, DecodeLimits], Any],
) -> Decoder | None:
    if not wanted:
        return None
    try:
        decoder: Decoder = nvjpeg(info.long_side, limits or DecodeLimits())
    except GpuUnavailableError as exc:
        if require_gpu:
            raise
        log.warning("GPU decoding unavailable (%s): decoding on the CPU", exc)
        return None
    return decoder

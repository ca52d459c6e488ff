"""Which backend and decoder a worker gets, and the fallback to the CPU.

    backend "cpu"       ONNX Runtime on the CPU
    backend "tensorrt"  the engine at `engine`; needs a GPU
    backend "auto"      "tensorrt" when an engine is configured, else "cpu"

With no usable GPU (no driver, no device, no CUDA/TensorRT bindings) a TensorRT choice falls
back to the CPU with a warning, unless `require_gpu` is set, in which case the error stands. Any
other failure (a mismatched engine, a CUDA error on a working GPU) is never hidden by a fallback.
GPU decoding follows the same rule. The constructors are parameters so tests can replace them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..backend import Backend, ModelInfo, OnnxBackend
from ..decode import DecodedImage, DecodeLimits
from ..errors import GpuUnavailableError, SettingsError

log = logging.getLogger(__name__)

BACKEND_CHOICES = ("auto", "cpu", "tensorrt")


class ServingBackend(Backend, Protocol):
    info: ModelInfo

    def warm_up(self, shapes: list[tuple[int, int]], batch: int = 1) -> None: ...

    def infer(self, images: np.ndarray) -> np.ndarray: ...


Decoder = Callable[[bytes], DecodedImage]


@dataclass(frozen=True)
class Selection:
    backend: ServingBackend
    kind: str  # "cpu" or "tensorrt": what actually runs
    decoder: Decoder | None  # None: the CPU decoder
    fallback: str = ""  # why the GPU was wanted but not used


def _tensorrt_backend(engine: Path, model: str) -> ServingBackend:
    from .trt_backend import TensorRTBackend

    return TensorRTBackend(engine, model)


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
    limits: DecodeLimits | None = None,
    cpu: Callable[[str, int], ServingBackend] = OnnxBackend,
    tensorrt: Callable[[Path, str], ServingBackend] = _tensorrt_backend,
    nvjpeg: Callable[[int, DecodeLimits], Decoder] = _nvjpeg_decoder,
) -> Selection:
    """The backend (and decoder) for these settings; see the module docstring."""
    if choice not in BACKEND_CHOICES:
        raise SettingsError(f"backend must be one of {', '.join(BACKEND_CHOICES)}, got {choice!r}")
    if choice == "tensorrt" and engine is None:
        raise SettingsError("backend tensorrt needs an engine (CROPWORKER_ENGINE)")
    want_gpu = choice == "tensorrt" or (choice == "auto" and engine is not None)
    fallback = ""
    backend: ServingBackend
    if want_gpu:
        assert engine is not None
        try:
            backend, kind = tensorrt(engine, model), "tensorrt"
        except GpuUnavailableError as exc:
            if require_gpu:
                raise
            fallback = str(exc)
            log.warning("no usable GPU (%s): falling back to ONNX Runtime on the CPU", exc)
            backend, kind = cpu(model, threads), "cpu"
    else:
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

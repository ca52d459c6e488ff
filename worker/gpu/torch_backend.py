"""`TorchBackend`: the `Backend` protocol with PyTorch on a CUDA GPU, for users without TensorRT.

    the shipped ONNX ─▶ onnx_torch.OnnxGraph: weights on the GPU, fp32 or fp16
    infer((B, H, W, 3) uint8), on its own CUDA stream:
        first call for (B, H, W): two eager runs (cuDNN picks its kernels, lazy set-up happens
            outside the graph), then one CUDA graph captured between static buffers
        every call: images ─▶ pinned host buffer ─▶ device input (async) ─▶ graph replay ─▶
            pinned host output (async) ─▶ synchronise ─▶ a copy for the caller

Precision: "fp32" is IEEE float32 throughout, within 1e-3 of ONNX Runtime on the CPU in
log-density (1e-5 measured on the CPU). PyTorch lets cuDNN run float32 convolutions in TF32 by
default, with the 10-bit mantissa of fp16, which costs up to 0.05 in log-density (emulated on the
CPU), so the backend switches TF32 off for the process. "fp16" halves weights and activations
(log-softmax and log-sum-exp stay float32): faster, but its log-densities differ by up to about
0.05 too (CPU emulation), well above the 1e-3 target; hence not the default.

One graph is kept per (B, H, W) seen: with the worker's batches of at most `max_batch` and the
few input sizes a model's long side allows, a few dozen at most, sharing one memory pool.

Errors: PyTorch or onnx missing, or no usable CUDA device: `GpuUnavailableError` (the worker
falls back to the CPU unless told to require a GPU). CUDA out of memory: `GpuOutOfMemoryError`;
any other CUDA failure: `CudaError`. `device="cpu"` runs the same graph eagerly, without graphs
or pinned memory: how the backend is tested against ONNX Runtime on machines without a GPU.
PyTorch is imported only when this backend is constructed. Not thread-safe: one backend per
inference thread (the worker has one).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..backend import DEFAULT_MODEL, ModelInfo, resolve_model
from ..errors import CudaError, GpuOutOfMemoryError, GpuUnavailableError

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16")
DEFAULT_PRECISION = "fp32"
WARM_UP_RUNS = 2  # eager runs before a capture; the second sees cuDNN's chosen kernels cached


def import_torch() -> Any:
    """The `torch` module once `onnx` (which reads the model) is known to be there too; else
    `GpuUnavailableError`, so that selection can fall back."""
    try:
        import onnx  # noqa: F401
        import torch
    except ImportError as exc:
        raise GpuUnavailableError(
            f"the cuda backend needs PyTorch and onnx (pip install 'cropworker[cuda]'): {exc}"
        ) from exc
    return torch


def cuda_device(torch: Any, device: str) -> Any:
    """`device` ("cuda", "cuda:1") as a `torch.device` with an index, if PyTorch can use it."""
    dev = torch.device(device)
    if not torch.cuda.is_available():
        build = "" if torch.version.cuda else " (a CPU-only build)"
        raise GpuUnavailableError(f"PyTorch {torch.__version__}{build} finds no usable CUDA device")
    index = torch.cuda.current_device() if dev.index is None else dev.index
    count = torch.cuda.device_count()
    if not 0 <= index < count:
        raise GpuUnavailableError(f"no CUDA device {index} ({count} found)")
    return torch.device("cuda", index)


@contextmanager
def cuda_errors(torch: Any, call: str) -> Iterator[None]:
    """PyTorch's CUDA exceptions as the project's: `call` says what was being done."""
    try:
        yield
    except torch.cuda.OutOfMemoryError as exc:
        raise GpuOutOfMemoryError(
            f"{call}: {exc}", call=call, cuda_name="cudaErrorMemoryAllocation"
        ) from exc
    except torch.AcceleratorError as exc:  # what PyTorch raises for a failed CUDA call
        raise CudaError(f"{call}: {exc}", call=call) from exc


@dataclass
class _Captured:
    """One input shape's CUDA graph and the static buffers it reads and writes."""

    graph: Any
    host_in: Any  # pinned (B, H, W, 3) uint8
    device_in: Any
    device_out: Any  # (B, H / stride, W / stride) float32
    host_out: Any  # pinned


class CudaGraphs:
    """Runs `forward` ((B, H, W, 3) uint8 on the device -> float32 on the device) through one
    CUDA graph per input shape, captured on first use. `torch` is the module (tests pass a fake
    whose CUDA is the CPU)."""

    def __init__(self, forward: Callable[[Any], Any], device: Any, torch: Any) -> None:
        self._forward, self._device, self._torch = forward, device, torch
        self._stream = torch.cuda.Stream(device=device)
        # One memory pool for all graphs: they run one at a time and each keeps its own output
        # buffer alive, so what one graph uses in between can be reused by the next.
        self._pool = torch.cuda.graph_pool_handle()
        self._captured: dict[tuple[int, ...], _Captured] = {}
        torch.cuda.synchronize(device)  # the weights were uploaded on another stream

    @property
    def shapes(self) -> list[tuple[int, ...]]:
        """The input shapes with a captured graph."""
        return list(self._captured)

    def run(self, images: np.ndarray) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode(), torch.cuda.device(self._device):
            captured = self._captured.get(images.shape)
            if captured is None:
                with cuda_errors(torch, f"capturing a CUDA graph for {images.shape}"):
                    captured = self._capture(images.shape)
                self._captured[images.shape] = captured
            with cuda_errors(torch, f"replaying the CUDA graph for {images.shape}"):
                np.copyto(captured.host_in.numpy(), images)
                with torch.cuda.stream(self._stream):
                    captured.device_in.copy_(captured.host_in, non_blocking=True)
                    captured.graph.replay()
                    captured.host_out.copy_(captured.device_out, non_blocking=True)
                self._stream.synchronize()
            # A copy: the next call overwrites the pinned buffer, and callers keep results.
            out: np.ndarray = captured.host_out.numpy().copy()
            return out

    def _capture(self, shape: tuple[int, ...]) -> _Captured:
        torch = self._torch
        with torch.cuda.stream(self._stream):  # allocated and filled on the stream that uses it
            device_in = torch.zeros(shape, dtype=torch.uint8, device=self._device)
            for _ in range(WARM_UP_RUNS):
                self._forward(device_in)
        self._stream.synchronize()
        graph = torch.cuda.CUDAGraph()
        # thread_local: decoding threads (nvJPEG) may call CUDA while this thread captures.
        with torch.cuda.graph(
            graph, pool=self._pool, stream=self._stream, capture_error_mode="thread_local"
        ):
            device_out = self._forward(device_in)
        host_in = torch.empty(shape, dtype=torch.uint8, pin_memory=True)
        host_out = torch.empty(device_out.shape, dtype=device_out.dtype, pin_memory=True)
        log.debug("captured a CUDA graph for input %s", shape)
        return _Captured(graph, host_in, device_in, device_out, host_out)


class TorchBackend:
    """The shipped ONNX `model` run by PyTorch on `device` ("cuda", "cuda:1" or "cpu") in
    `precision` ("fp32" or "fp16"), through CUDA graphs unless `cuda_graphs` is false. `graph`
    is the interpreted ONNX, `graphs` its CUDA graphs (None on the CPU or without them)."""

    kind = "cuda"

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        device: str = "cuda",
        precision: str = DEFAULT_PRECISION,
        cuda_graphs: bool = True,
    ) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        torch = import_torch()
        self._torch, self.precision = torch, precision
        on_gpu = torch.device(device).type == "cuda"
        if not on_gpu and torch.device(device).type != "cpu":
            raise ValueError(f"device must be cuda[:N] or cpu, got {device!r}")
        self.device = cuda_device(torch, device) if on_gpu else torch.device(device)
        if on_gpu:
            # Process-wide: TF32 convolutions would cost up to 0.05 in log-density (see above).
            torch.backends.cudnn.conv.fp32_precision = "ieee"
        from .onnx_torch import load_graph  # imports torch

        path = resolve_model(model)
        dtype = torch.float16 if precision == "fp16" else torch.float32
        with cuda_errors(torch, f"loading {path.name} onto {self.device}"):
            self.graph, meta = load_graph(path, self.device, dtype)
            self.graphs = (
                CudaGraphs(self.graph, self.device, torch) if on_gpu and cuda_graphs else None
            )
        self.info = ModelInfo.from_metadata(meta, str(path))
        where = torch.cuda.get_device_name(self.device) if on_gpu else "the CPU"
        log.info(
            "PyTorch %s: %s on %s, %s%s",
            torch.__version__,
            self.info.tag,
            where,
            precision,
            ", CUDA graphs" if self.graphs is not None else "",
        )

    def infer(self, images: np.ndarray) -> np.ndarray:
        """(B, H, W, 3) uint8 RGB -> (B, H / stride, W / stride) float32 log-density."""
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] != 3:
            raise ValueError(f"expected (B, H, W, 3) uint8, got {images.shape} {images.dtype}")
        if self.graphs is not None:
            return self.graphs.run(images)
        torch = self._torch
        with torch.inference_mode(), cuda_errors(torch, f"running {images.shape}"):
            out = self.graph(torch.from_numpy(images).to(self.device))
            result: np.ndarray = out.cpu().numpy()
        return result

    def warm_up(self, shapes: list[tuple[int, int]], batch: int = 1) -> None:
        """Run each (w, h) input shape once: on a GPU this captures its CUDA graph."""
        for w, h in shapes:
            self.infer(np.zeros((batch, h, w, 3), np.uint8))

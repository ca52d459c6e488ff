"""`TensorRTBackend`: the `Backend` protocol on an NVIDIA GPU, fed with micro-batches.

    images (B, H, W, 3) ─▶ micro-batches of at most the engine's max batch
        chunk i on slot i mod 2:  stage into pinned host ─▶ H2D ─▶ execute_async_v3 ─▶ D2H
                                  (all on the slot's own CUDA stream and execution context)
        a slot is synchronised only when it is reused, and at the end of the call

A slot is one stream, one execution context and four buffers (pinned host and device, input and
output) sized once for the max batch at the largest input, so tensor addresses are set once and
never change; each micro-batch only sets its input shape. With two slots, staging and upload of
chunk i+1 overlap the compute of chunk i, and the download of chunk i overlaps chunk i+1.

Loading is gated: the GPU probe runs first (a TensorRT Runtime is never created without a
driver), then the engine's sidecar is checked against this GPU, this TensorRT and the configured
ONNX, then the engine's own tensors and profile are checked against the sidecar. CUDA failures
raise `CudaError` / `GpuOutOfMemoryError`, TensorRT refusals `TensorRTError` with what TensorRT
logged. Not thread-safe: one backend per inference thread (the worker has one).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..backend import DEFAULT_MODEL, resolve_model
from ..errors import EngineMismatchError, GpuError, ModelError, TensorRTError
from . import trtlib
from .cuda import Cuda, host_view
from .cuda import load_runtime as load_cudart
from .probe import probe_gpu
from .sidecar import Sidecar, check, sha256_bytes, sha256_file, sidecar_path

log = logging.getLogger(__name__)

OUTPUT_ITEMSIZE = 4  # float32 log-density
DEFAULT_STREAMS = 2


@dataclass
class _Slot:
    context: Any
    stream: Any
    host_in: int
    dev_in: int
    dev_out: int
    host_out: int
    host_in_view: np.ndarray
    host_out_view: np.ndarray
    pending: tuple[int, int, tuple[int, ...]] | None = None  # (start, stop, output shape)


class TensorRTBackend:
    """Runs an engine built by `cropworker build-engine` for `model` (whose ONNX must be the
    one the engine was built from). `tensorrt` and `cudart` default to the installed modules."""

    kind = "tensorrt"

    def __init__(
        self,
        engine: str | Path,
        model: str = DEFAULT_MODEL,
        *,
        device: int = 0,
        streams: int = DEFAULT_STREAMS,
        tensorrt: Any | None = None,
        cudart: Any | None = None,
    ) -> None:
        if streams < 1:
            raise ValueError(f"streams must be at least 1, got {streams}")
        self.engine_path = Path(engine)
        self._slots: list[_Slot] = []
        self._owned: list[tuple[str, Any]] = []  # (kind, handle), freed in reverse by close()
        self._contexts: list[Any] = []
        self._engine: Any = None
        self._runtime: Any = None
        runtime_module = cudart if cudart is not None else load_cudart()
        gpu = probe_gpu(runtime_module).device(device)  # GpuUnavailableError: stop here
        trt = tensorrt if tensorrt is not None else trtlib.load_runtime()
        self._cuda = Cuda(runtime_module)
        self._trt = trt
        if not self.engine_path.is_file():
            raise ModelError(f"no engine file {self.engine_path}")
        plan = self.engine_path.read_bytes()
        self.sidecar = Sidecar.read(sidecar_path(self.engine_path))
        check(
            self.sidecar,
            source=str(self.engine_path),
            tensorrt_version=str(trt.__version__),
            device=gpu,
            onnx_sha256=sha256_file(resolve_model(model)),
            engine_sha256=sha256_bytes(plan),
        )
        self.info = self.sidecar.model_info(str(self.engine_path))
        self.max_batch = self.sidecar.max_batch
        self.device = gpu
        self._input, self._output = self.sidecar.input_name, self.sidecar.output_name
        self._logger, self._log = trtlib.capture_log(trt)
        try:
            self._cuda.set_device(device)
            self._load(plan, streams)
        except BaseException:
            self.close()
            raise
        log.info(
            "TensorRT engine %s on %s: %s, batch %s, %d streams",
            self.engine_path,
            gpu.name,
            self.sidecar.precision,
            self.sidecar.batch_range,
            streams,
        )

    # loading
    def _load(self, plan: bytes, streams: int) -> None:
        self._runtime = self._trt.Runtime(self._logger)
        # A version-compatible plan embeds the lean runtime it was built with: host code that
        # TensorRT runs only when told the plan is trusted. The sidecar check vouched for it.
        self._runtime.engine_host_code_allowed = self.sidecar.version_compatible
        self._engine = self._runtime.deserialize_cuda_engine(plan)
        if self._engine is None:
            raise TensorRTError(self._log.explain(f"cannot deserialize {self.engine_path}"))
        self._check_engine()
        for _ in range(streams):
            context = self._engine.create_execution_context()
            if context is None:
                raise TensorRTError(self._log.explain("cannot create an execution context"))
            self._contexts.append(context)
        biggest = self.sidecar.profile_max
        self._set_shape(self._contexts[0], biggest)
        self.input_bytes = math.prod(biggest)
        self.output_bytes = math.prod(self._output_shape(self._contexts[0])) * OUTPUT_ITEMSIZE
        for context in self._contexts:
            self._slots.append(self._make_slot(context))

    def _check_engine(self) -> None:
        trt, engine, source = self._trt, self._engine, str(self.engine_path)
        names = {engine.get_tensor_name(i) for i in range(engine.num_io_tensors)}
        expected = {
            self._input: (trt.TensorIOMode.INPUT, trt.DataType.UINT8),
            self._output: (trt.TensorIOMode.OUTPUT, trt.DataType.FLOAT),
        }
        if names != set(expected):
            raise EngineMismatchError(
                f"{source}: tensors {sorted(names)}, sidecar names {expected}"
            )
        for name, (mode, dtype) in expected.items():
            if engine.get_tensor_mode(name) != mode or engine.get_tensor_dtype(name) != dtype:
                raise EngineMismatchError(f"{source}: tensor {name!r} is not a {dtype} {mode}")
        profile = tuple(
            tuple(int(d) for d in dims) for dims in engine.get_tensor_profile_shape(self._input, 0)
        )
        recorded = (self.sidecar.profile_min, self.sidecar.profile_opt, self.sidecar.profile_max)
        if profile != recorded:
            raise EngineMismatchError(
                f"{source}: the engine's profile {profile} is not its sidecar's {recorded}"
            )

    def _make_slot(self, context: Any) -> _Slot:
        stream = self._own("stream", self._cuda.create_stream())
        host_in = self._own("host", self._cuda.malloc_host(self.input_bytes))
        dev_in = self._own("device", self._cuda.malloc(self.input_bytes))
        dev_out = self._own("device", self._cuda.malloc(self.output_bytes))
        host_out = self._own("host", self._cuda.malloc_host(self.output_bytes))
        for name, address in ((self._input, dev_in), (self._output, dev_out)):
            if not context.set_tensor_address(name, address):
                raise TensorRTError(self._log.explain(f"set_tensor_address({name!r}) refused"))
        return _Slot(
            context,
            stream,
            host_in,
            dev_in,
            dev_out,
            host_out,
            host_view(host_in, self.input_bytes),
            host_view(host_out, self.output_bytes),
        )

    def _own(self, kind: str, handle: Any) -> Any:
        self._owned.append((kind, handle))
        return handle

    # inference
    def infer(self, images: np.ndarray) -> np.ndarray:
        """(B, H, W, 3) uint8 RGB -> (B, H / stride, W / stride) float32 log-density. Any B:
        larger batches run as pipelined micro-batches of at most `max_batch`."""
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] != 3:
            raise ValueError(f"expected (B, H, W, 3) uint8, got {images.shape} {images.dtype}")
        n, height, width, _ = images.shape
        lo, hi = self.sidecar.profile_min, self.sidecar.profile_max
        if not (lo[1] <= height <= hi[1] and lo[2] <= width <= hi[2]):
            raise ValueError(
                f"input {height}x{width} is outside the engine's range "
                f"{lo[1]}x{lo[2]}..{hi[1]}x{hi[2]}"
            )
        stride = self.info.output_stride
        out = np.empty((n, height // stride, width // stride), np.float32)
        # The current device is per thread; this call may come from another thread than the
        # one that built the backend.
        self._cuda.set_device(self.device.index)
        try:
            for i, start in enumerate(range(0, n, self.max_batch)):
                slot = self._slots[i % len(self._slots)]
                if slot.pending is not None:
                    self._collect(slot, out)
                self._submit(slot, images[start : start + self.max_batch], start, out.shape)
            for slot in self._slots:
                if slot.pending is not None:
                    self._collect(slot, out)
        except BaseException:
            self._drain()
            raise
        return out

    def _submit(
        self, slot: _Slot, chunk: np.ndarray, start: int, out_shape: tuple[int, ...]
    ) -> None:
        nbytes = chunk.nbytes
        np.copyto(slot.host_in_view[:nbytes].reshape(chunk.shape), chunk)
        self._set_shape(slot.context, chunk.shape)
        shape = self._output_shape(slot.context)
        if shape != (len(chunk), *out_shape[1:]):
            raise TensorRTError(f"the engine gives {shape} for input {chunk.shape}")
        out_bytes = math.prod(shape) * OUTPUT_ITEMSIZE
        self._cuda.copy_to_device(slot.dev_in, slot.host_in, nbytes, slot.stream)
        if not slot.context.execute_async_v3(int(slot.stream)):
            raise TensorRTError(self._log.explain(f"execute_async_v3 failed for {chunk.shape}"))
        self._cuda.copy_to_host(slot.host_out, slot.dev_out, out_bytes, slot.stream)
        slot.pending = (start, start + len(chunk), shape)

    def _collect(self, slot: _Slot, out: np.ndarray) -> None:
        assert slot.pending is not None
        start, stop, shape = slot.pending
        self._cuda.synchronize(slot.stream)
        nbytes = math.prod(shape) * OUTPUT_ITEMSIZE
        out[start:stop] = slot.host_out_view[:nbytes].view(np.float32).reshape(shape)
        slot.pending = None

    def _drain(self) -> None:
        """After a failure: wait for every stream so no copy still targets the buffers."""
        for slot in self._slots:
            slot.pending = None
            try:
                self._cuda.synchronize(slot.stream)
            except GpuError as exc:
                log.warning("synchronising a stream after a failure: %s", exc)

    def _set_shape(self, context: Any, shape: tuple[int, ...]) -> None:
        if not context.set_input_shape(self._input, tuple(shape)):
            raise TensorRTError(self._log.explain(f"set_input_shape({self._input!r}, {shape})"))

    def _output_shape(self, context: Any) -> tuple[int, ...]:
        return tuple(int(d) for d in context.get_tensor_shape(self._output))

    def warm_up(self, shapes: list[tuple[int, int]], batch: int = 1) -> None:
        """Run each (w, h) input shape once so the first real request pays no setup."""
        for w, h in shapes:
            self.infer(np.zeros((batch, h, w, 3), np.uint8))

    # teardown
    def close(self) -> None:
        """Free buffers and streams, then contexts, engine and runtime. Idempotent."""
        self._drain()
        self._slots.clear()
        free = {
            "host": self._cuda.free_host,
            "device": self._cuda.free,
            "stream": self._cuda.destroy_stream,
        }
        while self._owned:
            kind, handle = self._owned.pop()
            try:
                free[kind](handle)
            except GpuError as exc:
                log.warning("freeing a %s: %s", kind, exc)
        # TensorRT objects go in reverse order of creation: contexts, engine, runtime.
        self._contexts.clear()
        self._engine = None
        self._runtime = None

    def __enter__(self) -> TensorRTBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

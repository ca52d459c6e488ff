"""Fake `cuda.bindings.runtime` and `tensorrt` modules for tests on machines without a GPU.

They are strict and stateful rather than permissive: memory is real (ctypes buffers whose
addresses stand for host and device pointers), every copy is range-checked against the
allocation it touches, and work queued on a stream (copies, engine executions) runs only at
`cudaStreamSynchronize`, in order. A backend that reads results before synchronising, copies
past a buffer or forgets an upload gets wrong numbers or an error, as it would on a GPU.

The fake engine computes a simple stand-in for the network: each output cell is the mean of its
stride x stride x 3 input block, divided by 255. Test helpers are named `fake_*`; every other
public name mirrors the real API, and tests/gpu/test_api_surface.py checks that those names exist
in the installed tensorrt-lean and cuda-bindings.
"""

from __future__ import annotations

import ctypes
import enum
import itertools
import json
from collections.abc import Callable
from typing import Any

import numpy as np

# ---------------------------------------------------------------------------------- CUDA


class cudaError_t(enum.IntEnum):
    cudaSuccess = 0
    cudaErrorInvalidValue = 1
    cudaErrorMemoryAllocation = 2
    cudaErrorInsufficientDriver = 35
    cudaErrorNoDevice = 100
    cudaErrorIllegalAddress = 700


class cudaMemcpyKind(enum.IntEnum):
    cudaMemcpyHostToDevice = 1
    cudaMemcpyDeviceToHost = 2


class cudaDeviceProp:
    name: bytes = b""
    major: int = 0
    minor: int = 0
    totalGlobalMem: int = 0


class cudaStream_t:
    def __init__(self, handle: int) -> None:
        self.fake_handle = handle

    def __int__(self) -> int:
        return self.fake_handle


ERROR_TEXT = {
    cudaError_t.cudaErrorInvalidValue: b"invalid argument",
    cudaError_t.cudaErrorMemoryAllocation: b"out of memory",
    cudaError_t.cudaErrorInsufficientDriver: b"CUDA driver version is insufficient",
    cudaError_t.cudaErrorNoDevice: b"no CUDA-capable device is detected",
    cudaError_t.cudaErrorIllegalAddress: b"an illegal memory access was encountered",
}


class FakeCudart:
    """Stands in for `cuda.bindings.runtime`."""

    cudaError_t = cudaError_t
    cudaMemcpyKind = cudaMemcpyKind
    cudaStreamNonBlocking = 1

    def __init__(
        self,
        devices: list[tuple[str, int, int]] | None = None,
        count_error: cudaError_t | None = None,
    ) -> None:
        self.fake_devices = [("NVIDIA H200", 9, 0)] if devices is None else devices
        self.fake_count_error = count_error
        self.fake_failures: dict[str, cudaError_t] = {}  # call name -> error it returns
        self.fake_host: dict[int, Any] = {}
        self.fake_device: dict[int, Any] = {}
        self.fake_streams: dict[int, list[Callable[[], None]]] = {}
        self.fake_calls: list[str] = []
        self.fake_syncs = 0
        self._ids = itertools.count(1)

    def _fails(self, name: str) -> cudaError_t | None:
        self.fake_calls.append(name)
        return self.fake_failures.get(name)

    # errors
    def cudaGetErrorString(self, err: cudaError_t) -> tuple[Any, bytes]:
        return cudaError_t.cudaSuccess, ERROR_TEXT.get(err, b"unknown error")

    def cudaGetErrorName(self, err: cudaError_t) -> tuple[Any, bytes]:
        return cudaError_t.cudaSuccess, err.name.encode()

    # devices
    def cudaGetDeviceCount(self) -> tuple[Any, Any]:
        if self.fake_count_error is not None:
            return self.fake_count_error, None
        return cudaError_t.cudaSuccess, len(self.fake_devices)

    def cudaGetDeviceProperties(self, device: int) -> tuple[Any, Any]:
        if not 0 <= device < len(self.fake_devices):
            return cudaError_t.cudaErrorInvalidValue, None
        props = cudaDeviceProp()
        name, props.major, props.minor = self.fake_devices[device]
        props.name = name.encode().ljust(256, b"\0")
        props.totalGlobalMem = 141 << 30
        return cudaError_t.cudaSuccess, props

    def cudaDriverGetVersion(self) -> tuple[Any, int]:
        return cudaError_t.cudaSuccess, 13000

    def cudaSetDevice(self, device: int) -> tuple[Any]:
        return (self._fails("cudaSetDevice") or cudaError_t.cudaSuccess,)

    def cudaMemGetInfo(self) -> tuple[Any, int, int]:
        used = sum(len(b) for b in self.fake_device.values())
        return cudaError_t.cudaSuccess, (141 << 30) - used, 141 << 30

    # memory
    def _alloc(self, table: dict[int, Any], name: str, size: int) -> tuple[Any, Any]:
        if err := self._fails(name):
            return err, None
        buffer = (ctypes.c_ubyte * size)()
        table[ctypes.addressof(buffer)] = buffer
        return cudaError_t.cudaSuccess, ctypes.addressof(buffer)

    def _free(self, table: dict[int, Any], name: str, pointer: int) -> tuple[Any]:
        if err := self._fails(name):
            return (err,)
        if table.pop(pointer, None) is None:
            return (cudaError_t.cudaErrorInvalidValue,)
        return (cudaError_t.cudaSuccess,)

    def cudaMallocHost(self, size: int) -> tuple[Any, Any]:
        return self._alloc(self.fake_host, "cudaMallocHost", size)

    def cudaFreeHost(self, pointer: int) -> tuple[Any]:
        return self._free(self.fake_host, "cudaFreeHost", pointer)

    def cudaMalloc(self, size: int) -> tuple[Any, Any]:
        return self._alloc(self.fake_device, "cudaMalloc", size)

    def cudaFree(self, pointer: int) -> tuple[Any]:
        return self._free(self.fake_device, "cudaFree", pointer)

    def fake_inside(self, table: dict[int, Any], pointer: int, nbytes: int) -> bool:
        return any(
            base <= pointer and pointer + nbytes <= base + len(b) for base, b in table.items()
        )

    # streams
    def cudaStreamCreateWithFlags(self, flags: int) -> tuple[Any, Any]:
        if err := self._fails("cudaStreamCreateWithFlags"):
            return err, None
        stream = cudaStream_t(next(self._ids))
        self.fake_streams[int(stream)] = []
        return cudaError_t.cudaSuccess, stream

    def cudaStreamDestroy(self, stream: Any) -> tuple[Any]:
        if self.fake_streams.pop(int(stream), None) is None:
            return (cudaError_t.cudaErrorInvalidValue,)
        return (cudaError_t.cudaSuccess,)

    def fake_enqueue(self, stream: int, work: Callable[[], None]) -> None:
        self.fake_streams[stream].append(work)

    def cudaMemcpyAsync(
        self, dst: int, src: int, count: int, kind: cudaMemcpyKind, stream: Any
    ) -> tuple[Any]:
        if err := self._fails("cudaMemcpyAsync"):
            return (err,)
        to_device = kind == cudaMemcpyKind.cudaMemcpyHostToDevice
        dst_table, src_table = (
            (self.fake_device, self.fake_host) if to_device else (self.fake_host, self.fake_device)
        )
        if not (
            self.fake_inside(dst_table, dst, count) and self.fake_inside(src_table, src, count)
        ):
            return (cudaError_t.cudaErrorInvalidValue,)
        self.fake_enqueue(int(stream), lambda: ctypes.memmove(dst, src, count) and None)
        return (cudaError_t.cudaSuccess,)

    def cudaStreamSynchronize(self, stream: Any) -> tuple[Any]:
        if err := self._fails("cudaStreamSynchronize"):
            return (err,)
        self.fake_syncs += 1
        queue = self.fake_streams[int(stream)]
        while queue:
            queue.pop(0)()
        return (cudaError_t.cudaSuccess,)


# ------------------------------------------------------------------------------ TensorRT

PLAN_MAGIC = b"FAKEPLAN"


class TensorIOMode(enum.IntEnum):
    NONE = 0
    INPUT = 1
    OUTPUT = 2


class DataType(enum.IntEnum):
    FLOAT = 0
    HALF = 1
    INT8 = 2
    INT32 = 3
    BOOL = 4
    UINT8 = 5


class BuilderFlag(enum.IntEnum):
    VERSION_COMPATIBLE = 11


class MemoryPoolType(enum.IntEnum):
    WORKSPACE = 0


class NetworkDefinitionCreationFlag(enum.IntEnum):  # builder-only
    STRONGLY_TYPED = 1


class ILogger:
    class Severity(enum.IntEnum):
        INTERNAL_ERROR = 0
        ERROR = 1
        WARNING = 2
        INFO = 3
        VERBOSE = 4

    def __init__(self) -> None:
        pass

    def log(self, severity: ILogger.Severity, msg: str) -> None:
        raise NotImplementedError


class ITimingCache:
    def __init__(self, data: bytes) -> None:
        self.fake_data = data

    def serialize(self) -> bytes:
        return b"TIMING" + self.fake_data


class IOptimizationProfile:
    def __init__(self) -> None:
        self.fake_shapes: dict[str, tuple[Any, Any, Any]] = {}

    def set_shape(self, input: str, min: Any, opt: Any, max: Any) -> None:
        self.fake_shapes[input] = (tuple(min), tuple(opt), tuple(max))


class ITensor:  # builder-only
    def __init__(self, name: str, shape: tuple[int, ...], dtype: DataType) -> None:
        self.name, self.shape, self.dtype = name, shape, dtype


class INetworkDefinition:  # builder-only
    def __init__(self, flags: int) -> None:
        self.fake_flags = flags
        self.fake_inputs: list[ITensor] = []
        self.fake_outputs: list[ITensor] = []

    @property
    def num_inputs(self) -> int:
        return len(self.fake_inputs)

    @property
    def num_outputs(self) -> int:
        return len(self.fake_outputs)

    def get_input(self, index: int) -> ITensor:
        return self.fake_inputs[index]

    def get_output(self, index: int) -> ITensor:
        return self.fake_outputs[index]


class IParserError:  # builder-only
    def __init__(self, text: str) -> None:
        self.fake_text = text

    def __str__(self) -> str:
        return self.fake_text


class OnnxParser:  # builder-only
    fake_module: FakeTensorRT

    def __init__(self, network: INetworkDefinition, logger: ILogger) -> None:
        self.fake_network = network
        self.fake_errors: list[str] = []

    def parse(self, model: bytes) -> bool:
        module = self.fake_module
        module.fake_parsed.append(model)
        self.fake_errors = list(module.fake_parse_errors)
        if self.fake_errors:
            return False
        name, dtype, shape = module.fake_network_input
        self.fake_network.fake_inputs = [ITensor(name, shape, dtype)]
        self.fake_network.fake_outputs = [ITensor("log_density", (-1, -1, -1), DataType.FLOAT)]
        return True

    @property
    def num_errors(self) -> int:
        return len(self.fake_errors)

    def get_error(self, index: int) -> IParserError:
        return IParserError(self.fake_errors[index])


class IBuilderConfig:  # builder-only
    def __init__(self) -> None:
        self.fake_flags: set[BuilderFlag] = set()
        self.fake_profiles: list[IOptimizationProfile] = []
        self.fake_pool_limits: dict[MemoryPoolType, int] = {}
        self.fake_cache: ITimingCache | None = None
        self.fake_cache_inputs: list[bytes] = []

    def add_optimization_profile(self, profile: IOptimizationProfile) -> int:
        self.fake_profiles.append(profile)
        return len(self.fake_profiles) - 1

    def set_flag(self, flag: BuilderFlag) -> None:
        self.fake_flags.add(flag)

    def set_memory_pool_limit(self, pool: MemoryPoolType, pool_size: int) -> None:
        self.fake_pool_limits[pool] = pool_size

    def create_timing_cache(self, serialized_timing_cache: bytes) -> ITimingCache:
        self.fake_cache_inputs.append(bytes(serialized_timing_cache))
        return ITimingCache(bytes(serialized_timing_cache))

    def set_timing_cache(self, cache: ITimingCache, ignore_mismatch: bool) -> bool:
        if cache.fake_data.startswith(b"TIMING-OTHER-GPU"):
            return False
        self.fake_cache = cache
        return True

    def get_timing_cache(self) -> ITimingCache:
        assert self.fake_cache is not None
        return ITimingCache(self.fake_cache.fake_data + b"+")


class Builder:  # builder-only
    fake_module: FakeTensorRT

    def __init__(self, logger: ILogger) -> None:
        self.fake_logger = logger
        self.fake_module.fake_builders += 1

    def create_network(self, flags: int = 0) -> INetworkDefinition:
        return INetworkDefinition(flags)

    def create_builder_config(self) -> IBuilderConfig:
        config = IBuilderConfig()
        self.fake_module.fake_configs.append(config)
        return config

    def create_optimization_profile(self) -> IOptimizationProfile:
        return IOptimizationProfile()

    def build_serialized_network(
        self, network: INetworkDefinition, config: IBuilderConfig
    ) -> bytes | None:
        if self.fake_module.fake_build_error:
            self.fake_logger.log(ILogger.Severity.ERROR, self.fake_module.fake_build_error)
            return None
        (name, (lo, opt, hi)), *_ = config.fake_profiles[0].fake_shapes.items()
        plan = {"input": name, "output": network.get_output(0).name, "profile": [lo, opt, hi]}
        return PLAN_MAGIC + json.dumps(plan).encode()


class IExecutionContext:
    fake_module: FakeTensorRT

    def __init__(self, engine: ICudaEngine) -> None:
        self.fake_engine = engine
        self.fake_shape: tuple[int, ...] | None = None
        self.fake_addresses: dict[str, int] = {}
        self.fake_address_calls = 0
        self.fake_executions: list[tuple[tuple[int, ...], int]] = []  # (shape, stream)

    def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
        lo, _, hi = self.fake_engine.fake_profile
        shape = tuple(shape)
        if name != self.fake_engine.fake_input or not all(
            a <= s <= b for a, s, b in zip(lo, shape, hi, strict=True)
        ):
            self.fake_module.fake_log(f"set_input_shape: {shape} is outside the profile")
            return False
        self.fake_shape = shape
        return True

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        assert self.fake_shape is not None
        if name == self.fake_engine.fake_input:
            return self.fake_shape
        b, h, w, _ = self.fake_shape
        s = FakeTensorRT.fake_stride
        return (b, h // s, w // s)

    def set_tensor_address(self, name: str, memory: int) -> bool:
        self.fake_address_calls += 1
        self.fake_addresses[name] = memory
        return True

    def execute_async_v3(self, stream_handle: int) -> bool:
        module = self.fake_module
        if module.fake_execute_fails:
            module.fake_log("enqueueV3: an illegal memory access")
            return False
        assert self.fake_shape is not None, "no input shape set"
        shape = self.fake_shape
        engine = self.fake_engine
        src = self.fake_addresses[engine.fake_input]
        dst = self.fake_addresses[engine.fake_output]
        out_shape = self.get_tensor_shape(engine.fake_output)
        cudart = module.fake_cudart
        n_in, n_out = int(np.prod(shape)), int(np.prod(out_shape)) * 4
        if not (
            cudart.fake_inside(cudart.fake_device, src, n_in)
            and cudart.fake_inside(cudart.fake_device, dst, n_out)
        ):
            module.fake_log("enqueueV3: tensor address is not device memory of the right size")
            return False

        def run() -> None:
            x = np.ctypeslib.as_array((ctypes.c_ubyte * n_in).from_address(src)).reshape(shape)
            y = fake_network(x, FakeTensorRT.fake_stride)
            ctypes.memmove(dst, y.ctypes.data, n_out)

        self.fake_executions.append((shape, stream_handle))
        cudart.fake_enqueue(stream_handle, run)
        return True


def fake_network(images: np.ndarray, stride: int) -> np.ndarray:
    """The fake engine's output for `images` (B, H, W, 3) uint8: block means / 255."""
    b, h, w, _ = images.shape
    blocks = images.reshape(b, h // stride, stride, w // stride, stride, 3).astype(np.float32)
    out: np.ndarray = blocks.mean(axis=(2, 4, 5)) / 255.0
    return out.astype(np.float32)


class ICudaEngine:
    fake_module: FakeTensorRT

    def __init__(self, plan: dict[str, Any]) -> None:
        self.fake_input = plan["input"]
        self.fake_output = plan["output"]
        self.fake_profile = tuple(tuple(s) for s in plan["profile"])
        self.fake_contexts: list[IExecutionContext] = []

    @property
    def num_io_tensors(self) -> int:
        return 2

    def get_tensor_name(self, index: int) -> str:
        return (self.fake_input, self.fake_output)[index]

    def get_tensor_mode(self, name: str) -> TensorIOMode:
        return TensorIOMode.INPUT if name == self.fake_input else TensorIOMode.OUTPUT

    def get_tensor_dtype(self, name: str) -> DataType:
        return DataType.UINT8 if name == self.fake_input else DataType.FLOAT

    def get_tensor_profile_shape(self, name: str, profile_index: int) -> list[tuple[int, ...]]:
        return [tuple(s) for s in self.fake_module.fake_engine_profile or self.fake_profile]

    def create_execution_context(self) -> IExecutionContext:
        context = self.fake_module.IExecutionContext(self)
        self.fake_contexts.append(context)
        return context


class Runtime:
    fake_module: FakeTensorRT
    engine_host_code_allowed: bool = False

    def __init__(self, logger: ILogger) -> None:
        self.fake_logger = logger
        self.fake_module.fake_runtimes.append(self)
        self.fake_module.fake_logger = logger

    def deserialize_cuda_engine(self, serialized_engine: bytes) -> ICudaEngine | None:
        if not serialized_engine.startswith(PLAN_MAGIC):
            self.fake_logger.log(ILogger.Severity.ERROR, "deserializeCudaEngine: magic mismatch")
            return None
        return self.fake_module.ICudaEngine(json.loads(serialized_engine[len(PLAN_MAGIC) :]))


class FakeTensorRT:
    """Stands in for the `tensorrt` module (builder and runtime)."""

    __version__ = "11.4.0.106"
    fake_stride = 4
    TensorIOMode = TensorIOMode
    DataType = DataType
    BuilderFlag = BuilderFlag
    MemoryPoolType = MemoryPoolType
    NetworkDefinitionCreationFlag = NetworkDefinitionCreationFlag
    ILogger = ILogger

    def __init__(self, cudart: FakeCudart) -> None:
        self.fake_cudart = cudart
        self.fake_parse_errors: list[str] = []
        self.fake_network_input: tuple[str, DataType, tuple[int, ...]] = (
            "image",
            DataType.UINT8,
            (-1, -1, -1, 3),
        )
        self.fake_parsed: list[bytes] = []
        self.fake_build_error = ""
        self.fake_execute_fails = False
        self.fake_engine_profile: list[tuple[int, ...]] | None = None
        self.fake_builders = 0
        self.fake_configs: list[IBuilderConfig] = []
        self.fake_runtimes: list[Runtime] = []
        self.fake_logger: ILogger | None = None
        bound = {"fake_module": self}
        self.Runtime = type("Runtime", (Runtime,), bound)
        self.ICudaEngine = type("ICudaEngine", (ICudaEngine,), bound)
        self.IExecutionContext = type("IExecutionContext", (IExecutionContext,), bound)
        self.Builder = type("Builder", (Builder,), bound)
        self.OnnxParser = type("OnnxParser", (OnnxParser,), bound)

    def fake_log(self, message: str) -> None:
        if self.fake_logger is not None:
            self.fake_logger.log(ILogger.Severity.ERROR, message)


# The classes whose names and members must exist in the real modules, and those only the full
# builder package has (tensorrt-lean cannot show them).
RUNTIME_CLASSES = {
    "Runtime": Runtime,
    "ICudaEngine": ICudaEngine,
    "IExecutionContext": IExecutionContext,
    "ILogger": ILogger,
    "TensorIOMode": TensorIOMode,
    "DataType": DataType,
    "BuilderFlag": BuilderFlag,
    "MemoryPoolType": MemoryPoolType,
    "IOptimizationProfile": IOptimizationProfile,
    "ITimingCache": ITimingCache,
}
BUILDER_ONLY_CLASSES = {
    "Builder": Builder,
    "INetworkDefinition": INetworkDefinition,
    "IBuilderConfig": IBuilderConfig,
    "OnnxParser": OnnxParser,
    "IParserError": IParserError,
    "ITensor": ITensor,
    "NetworkDefinitionCreationFlag": NetworkDefinitionCreationFlag,
}
CUDA_TYPES = {
    "cudaError_t": cudaError_t,
    "cudaMemcpyKind": cudaMemcpyKind,
    "cudaDeviceProp": cudaDeviceProp,
    "cudaStream_t": cudaStream_t,
}

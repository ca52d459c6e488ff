"""A fake of the part of PyTorch's CUDA API that the cuda backend uses, running on the CPU.

`FakeTorch` is the real `torch` module except for `torch.cuda` (a `FakeCuda`) and `torch.empty`
(which tracks pinned buffers). It is strict where a GPU differs from the CPU:

- a CUDA graph replays the tensor operations recorded while it was captured, into the tensors
  created then: a static input that was not refreshed gives stale results, as on a GPU;
- non-blocking copies and graph replays issued under `torch.cuda.stream(s)` are queued on `s`
  and run only when it (or the device) is synchronised: reading a result early gives old data;
- a non-blocking copy from or to host memory that is not pinned fails (on a GPU it would
  silently be a synchronous copy);
- replaying a graph that was never captured, capturing one twice, or capturing without a pool
  handle from `graph_pool_handle` fails.

Test helpers are named `fake_*`; every other public name mirrors torch's, and
tests/gpu/test_torch_api_surface.py checks them against the installed PyTorch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

Call = tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any], Any]


class _Record(TorchFunctionMode):
    """Records every top-level tensor operation (what a CUDA graph capture sees)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[Call] = []

    def __torch_function__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None
    ) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        self.calls.append((func, args, kwargs, out))
        return out


class _Enqueue(TorchFunctionMode):
    """Queues non-blocking copies on a stream instead of running them."""

    def __init__(self, stream: Stream, pinned: set[int]) -> None:
        super().__init__()
        self.stream, self.pinned = stream, pinned

    def __torch_function__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None
    ) -> Any:
        kwargs = kwargs or {}
        if func is torch.Tensor.copy_ and kwargs.get("non_blocking"):
            # Every such copy here is between the device and the host: one side must be pinned.
            if not any(tensor.data_ptr() in self.pinned for tensor in args[:2]):
                raise AssertionError("a non-blocking copy without a pinned host buffer")
            self.stream.fake_queue.append(lambda: func(*args, **kwargs))
            return args[0]
        return func(*args, **kwargs)


class Stream:
    def __init__(self, device: Any = None, priority: int = 0) -> None:
        self.fake_queue: list[Callable[[], Any]] = []

    def synchronize(self) -> None:
        with torch.inference_mode():
            while self.fake_queue:
                self.fake_queue.pop(0)()

    def wait_stream(self, stream: Stream) -> None:
        stream.synchronize()


class CUDAGraph:
    def __init__(self) -> None:
        self.fake_calls: list[Call] | None = None
        self.fake_cuda: FakeCuda | None = None

    def replay(self) -> None:
        if self.fake_calls is None or self.fake_cuda is None:
            raise RuntimeError("replay of a graph that was never captured")
        self.fake_cuda.fake_current.fake_queue.append(self.fake_run)

    def fake_run(self) -> None:
        assert self.fake_calls is not None
        self.fake_cuda.fake_replays += 1  # type: ignore[union-attr]
        with torch.inference_mode():
            for func, args, kwargs, out in self.fake_calls:
                new = func(*args, **kwargs)
                if isinstance(out, torch.Tensor) and new is not out:
                    out.copy_(new)


class FakeCuda:
    """Stands in for `torch.cuda`; its device memory is the CPU's."""

    OutOfMemoryError = torch.cuda.OutOfMemoryError
    Stream = Stream
    CUDAGraph = CUDAGraph

    def __init__(self, devices: tuple[str, ...] = ("NVIDIA H200",)) -> None:
        self.fake_devices = devices
        self.fake_default = Stream()
        self.fake_current = self.fake_default
        self.fake_pinned: set[int] = set()
        self.fake_pools: list[object] = []
        self.fake_captures = 0
        self.fake_replays = 0
        self.fake_capture_error: BaseException | None = None

    def is_available(self) -> bool:
        return bool(self.fake_devices)

    def device_count(self) -> int:
        return len(self.fake_devices)

    def current_device(self) -> int:
        return 0

    def get_device_name(self, device: Any = None) -> str:
        return self.fake_devices[0]

    def synchronize(self, device: Any = None) -> None:
        self.fake_default.synchronize()
        self.fake_current.synchronize()

    def graph_pool_handle(self) -> object:
        self.fake_pools.append(object())
        return self.fake_pools[-1]

    @contextlib.contextmanager
    def device(self, device: Any) -> Iterator[None]:
        yield

    @contextlib.contextmanager
    def stream(self, stream: Stream | None) -> Iterator[None]:
        previous, self.fake_current = self.fake_current, stream or self.fake_current
        try:
            with _Enqueue(self.fake_current, self.fake_pinned):
                yield
        finally:
            self.fake_current = previous

    @contextlib.contextmanager
    def graph(
        self,
        cuda_graph: CUDAGraph,
        pool: object = None,
        stream: Stream | None = None,
        capture_error_mode: str = "global",
    ) -> Iterator[None]:
        if cuda_graph.fake_calls is not None:
            raise RuntimeError("this graph was already captured")
        if pool is not None and pool not in self.fake_pools:
            raise RuntimeError("pool is not a graph_pool_handle()")
        assert capture_error_mode in ("global", "thread_local", "relaxed")
        if self.fake_capture_error is not None:
            raise self.fake_capture_error
        record = _Record()
        with self.stream(stream), record:
            yield
        cuda_graph.fake_calls, cuda_graph.fake_cuda = record.calls, self
        self.fake_captures += 1


class FakeTorch:
    """The real `torch`, with `cuda` faked and pinned allocations tracked."""

    def __init__(self, cuda: FakeCuda | None = None) -> None:
        self.cuda = cuda or FakeCuda()

    def __getattr__(self, name: str) -> Any:
        return getattr(torch, name)

    def empty(self, *size: Any, pin_memory: bool = False, **kwargs: Any) -> torch.Tensor:
        tensor = torch.empty(*size, **kwargs)
        if pin_memory:
            self.cuda.fake_pinned.add(tensor.data_ptr())
        return tensor

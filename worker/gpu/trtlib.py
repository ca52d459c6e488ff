"""Importing TensorRT and hearing what it says.

The worker needs only the runtime: the full `tensorrt` package when present (build machines),
otherwise the lean runtime `tensorrt_lean` (PyPI `tensorrt-lean-cu13`, 44 MB of libraries), which
runs version-compatible engines. Building needs the full package. TensorRT reports failures by
logging them and returning None or False; `capture_log` keeps the error lines so that the
exceptions raised here can say what TensorRT said.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from typing import Any

from ..errors import GpuUnavailableError

log = logging.getLogger(__name__)

# Error lines kept for the next exception message; older ones are only in the log.
KEPT_ERRORS = 20


def load_runtime() -> Any:
    """The TensorRT module to run engines with: `tensorrt`, else `tensorrt_lean`."""
    try:
        import tensorrt

        return tensorrt
    except ImportError:
        pass
    try:
        import tensorrt_lean

        return tensorrt_lean
    except ImportError as exc:
        raise GpuUnavailableError(
            "no TensorRT runtime is installed (pip install 'cropworker[gpu]' for tensorrt-lean)"
        ) from exc


def load_builder() -> Any:
    """The full `tensorrt` package, which alone can parse ONNX and build engines."""
    try:
        import tensorrt
    except ImportError as exc:
        raise GpuUnavailableError(
            "building engines needs the full TensorRT package `tensorrt` (NVIDIA's index, or "
            "the TensorRT container); the lean runtime cannot build"
        ) from exc
    return tensorrt


class LogCapture:
    """Receives TensorRT's log lines (forwarded by the `ILogger` subclass that `capture_log`
    makes), passes them to Python logging, and keeps the recent errors."""

    def __init__(self) -> None:
        self._errors: deque[str] = deque(maxlen=KEPT_ERRORS)
        self._lock = threading.Lock()  # TensorRT may log from its own threads

    def record(self, severity: int, message: str) -> None:
        # TensorRT's severities: 0 internal error, 1 error, 2 warning, 3 info, 4 verbose.
        if severity <= 1:
            log.error("TensorRT: %s", message)
            with self._lock:
                self._errors.append(message)
        elif severity == 2:
            log.warning("TensorRT: %s", message)
        else:
            log.debug("TensorRT: %s", message)

    def take(self) -> list[str]:
        """The error lines since the last call."""
        with self._lock:
            errors = list(self._errors)
            self._errors.clear()
        return errors

    def explain(self, message: str) -> str:
        errors = self.take()
        return message + (": " + " | ".join(errors) if errors else "")


def capture_log(trt: Any) -> tuple[Any, LogCapture]:
    """A `trt.ILogger` forwarding to a new `LogCapture`. Keep the logger referenced for as long
    as anything made with it lives: TensorRT holds only a borrowed pointer."""
    capture = LogCapture()

    class _Logger(trt.ILogger):  # type: ignore[misc]
        def __init__(self) -> None:
            trt.ILogger.__init__(self)

        def log(self, severity: Any, msg: str) -> None:
            capture.record(int(severity), msg)

    return _Logger(), capture

"""Decoding in child processes: a decoder that crashes takes down its process, not the worker.

Image decoders are the usual attack surface of an upload service, and a crash in one (a
segfault in C) would kill the worker; the upload, redelivered to the next worker, would kill that
one too. With `decode_isolation` on, each decode thread hands the encoded bytes to a child
process of its own and waits for the decoded network input (a few hundred kB each way). A child
that dies fails only its upload (`decoder_crashed`); one that outlasts `prepare_timeout_s` is
killed (`timeout`), so its thread is not lost either. The next image starts a new child. A child
that does not start, or a bug in the decoder (an exception outside the error tree), fails its
upload as `internal_error`, with the cause in the worker's log.

Children are started with `spawn` (the worker has threads, and librdkafka's, so `fork` is not
safe) and are daemons: they end with the worker, or on their own when its end of the pipe
closes.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.connection
import signal
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..decode import DecodedImage
from ..errors import CropworkerError, DecoderCrashedError, InternalError, PrepareTimeoutError
from .logs import fields

log = logging.getLogger(__name__)
Decode = Callable[[bytes], DecodedImage]
_CONTEXT = multiprocessing.get_context("spawn")
# A new child imports Python, NumPy and OpenCV before it can take an image: not part of any
# image's time limit, but bounded too.
STARTUP_TIMEOUT_S = 60.0


@dataclass
class _Child:
    process: Any  # multiprocessing's SpawnProcess
    conn: multiprocessing.connection.Connection


class ProcessDecoder:
    """A `Cropper` decoder: `decode(data)` run in a child process per calling thread.

    `decode` must be picklable (a module-level function, or a `functools.partial` of one)."""

    def __init__(self, decode: Decode, timeout_s: float) -> None:
        self._decode, self._timeout_s = decode, timeout_s
        self._local = threading.local()
        self._lock = threading.Lock()
        self._children: list[_Child] = []

    def __call__(self, data: bytes) -> DecodedImage:
        child = self._child()
        try:
            child.conn.send_bytes(data)
            if not child.conn.poll(self._timeout_s):
                self._discard(child)
                raise PrepareTimeoutError(
                    f"decoding took over {self._timeout_s:g} s; the decoder process was killed"
                )
            kind, value = child.conn.recv()
        except (EOFError, OSError):  # the child died: a closed or broken pipe
            self._discard(child)
            raise DecoderCrashedError(
                f"the decoder process died ({_exit(child.process.exitcode)}) on this image"
            ) from None
        if kind == "bug":
            problem, trace = value
            log.error(
                "decoding failed in the decoder process: %s", problem, extra=fields(exception=trace)
            )
            raise InternalError(f"decoding failed in the decoder process: {problem}")
        if kind == "error":
            raise value
        assert isinstance(value, DecodedImage)
        return value

    def close(self) -> None:
        """End every child (they would also end with the process)."""
        with self._lock:
            children, self._children = self._children, []
        for child in children:
            child.conn.close()
            child.process.kill()
            child.process.join(5)

    def _child(self) -> _Child:
        child: _Child | None = getattr(self._local, "child", None)
        if child is not None and not child.process.is_alive():
            self._discard(child)  # died while idle (the OOM killer?): not this image's doing
            child = None
        if child is None:
            ours, theirs = _CONTEXT.Pipe()
            process = _CONTEXT.Process(
                target=_serve, args=(theirs, self._decode), name="cropworker-decoder", daemon=True
            )
            process.start()
            theirs.close()
            child = self._local.child = _Child(process, ours)
            with self._lock:
                self._children.append(child)
            try:
                ready = ours.poll(STARTUP_TIMEOUT_S) and ours.recv() == ("ready", None)
            except (EOFError, OSError):
                ready = False
            if not ready:
                self._discard(child)
                # not the image's fault: dead-lettered as internal_error, and logged
                problem = f"the decoder process did not start ({_exit(process.exitcode)})"
                log.error(problem)
                raise InternalError(problem)
        return child

    def _discard(self, child: _Child) -> None:
        self._local.child = None
        with self._lock:
            if child in self._children:
                self._children.remove(child)
        child.process.kill()
        child.process.join(5)
        child.conn.close()


def _exit(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit status {code}"


def _serve(conn: multiprocessing.connection.Connection, decode: Decode) -> None:
    """The child: decode what arrives until the pipe closes."""
    import cv2

    cv2.setNumThreads(1)  # one decode per child; the worker runs several children
    conn.send(("ready", None))
    while True:
        try:
            data = conn.recv_bytes()
        except (EOFError, OSError):
            return
        try:
            reply: tuple[str, Any] = ("ok", decode(data))
        except CropworkerError as exc:
            reply = ("error", exc)
        except Exception as exc:  # a bug: the traceback goes to the worker's log
            reply = ("bug", (repr(exc), traceback.format_exc()))
        conn.send(reply)

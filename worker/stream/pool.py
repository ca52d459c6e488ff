"""The fetch-and-decode pool: daemon threads whose overdue jobs can be given up on.

A decoder or a fetch that never returns (a library bug, a pathological input that the pixel and
scan limits missed) would hold its thread for ever, and with it its event's offset: the
partition could never commit past it. Python cannot interrupt a thread stuck in C, so the pool
lets the worker *abandon* it instead: the job's future is forgotten, a new thread takes the
stuck one's place, and the stuck thread exits if its job ever returns. The threads are daemons,
so a stuck one never blocks the process from exiting.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")
Task = tuple["concurrent.futures.Future[Any]", Callable[..., Any], tuple[Any, ...], dict[str, Any]]


class DecodePool:
    def __init__(
        self, threads: int, name: str, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._tasks: queue.SimpleQueue[Task | None] = queue.SimpleQueue()
        self._name, self._clock = name, clock
        self._numbers = itertools.count(1)
        self._lock = threading.Lock()
        self._started: dict[concurrent.futures.Future[Any], float] = {}  # running: start time
        self._abandoned: set[concurrent.futures.Future[Any]] = set()  # their threads are stuck
        self._threads = threads
        for _ in range(threads):
            self._spawn()

    def submit(
        self, fn: Callable[..., T], /, *args: Any, **kwargs: Any
    ) -> concurrent.futures.Future[T]:
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._tasks.put((future, fn, args, kwargs))
        return future

    def overdue(self, started_before: float) -> list[concurrent.futures.Future[Any]]:
        """Running jobs (not abandoned) that started before `started_before` (pool clock)."""
        with self._lock:
            return [f for f, t in self._started.items() if t < started_before]

    def abandon(self, future: concurrent.futures.Future[Any]) -> None:
        """Give up on a running job: its thread is replaced now and exits when (if) it returns;
        its future completes then as usual, and nobody need look at it."""
        with self._lock:
            if self._started.pop(future, None) is None:
                return  # finished meanwhile, or not running
            self._abandoned.add(future)
        self._spawn()

    @property
    def stuck(self) -> int:
        """Threads still running a job that was abandoned."""
        with self._lock:
            return len(self._abandoned)

    def shutdown(self) -> None:
        """Cancel queued jobs and let the threads exit after their current job (no waiting)."""
        while True:
            try:
                task = self._tasks.get_nowait()
            except queue.Empty:
                break
            if task is not None:
                task[0].cancel()
        for _ in range(self._threads):
            self._tasks.put(None)

    def _spawn(self) -> None:
        name = f"{self._name}-{next(self._numbers)}"
        threading.Thread(target=self._serve, name=name, daemon=True).start()

    def _serve(self) -> None:
        while (task := self._tasks.get()) is not None:
            future, fn, args, kwargs = task
            if not future.set_running_or_notify_cancel():
                continue
            with self._lock:
                self._started[future] = self._clock()
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:
                future.set_exception(exc)
            else:
                future.set_result(result)
            with self._lock:
                self._started.pop(future, None)
                if future in self._abandoned:
                    self._abandoned.discard(future)
                    return  # replaced when abandoned

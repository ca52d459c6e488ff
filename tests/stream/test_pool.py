"""The decode pool: futures like an executor's, and jobs that can be abandoned without losing a
thread or blocking the process's exit."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from cropworker.stream.pool import DecodePool
from tests.stream.conftest import wait_for


def pool_threads(name: str) -> int:
    return sum(t.name.startswith(f"{name}-") and t.is_alive() for t in threading.enumerate())


@pytest.fixture
def release() -> Iterator[threading.Event]:
    event = threading.Event()
    yield event
    event.set()  # never leave a thread blocked past the test


def test_results_and_exceptions_come_back_through_futures() -> None:
    pool = DecodePool(2, "t-results")
    try:
        assert pool.submit(pow, 2, 10).result(5) == 1024
        with pytest.raises(ZeroDivisionError):
            pool.submit(lambda: 1 / 0).result(5)
    finally:
        pool.shutdown()


def test_an_abandoned_job_costs_no_capacity_and_its_thread_retires(
    release: threading.Event,
) -> None:
    pool = DecodePool(1, "t-abandon")
    try:
        stuck = pool.submit(release.wait)
        assert wait_for(lambda: pool.overdue(time.monotonic() + 1) == [stuck])
        queued = pool.submit(lambda: "after")
        time.sleep(0.1)
        assert not queued.done()  # the only thread is stuck
        pool.abandon(stuck)
        assert queued.result(5) == "after"  # its replacement took the queue
        assert pool.stuck == 1 and pool_threads("t-abandon") == 2
        assert pool.overdue(time.monotonic() + 1) == []  # abandoned jobs are not reported again
        release.set()
        assert wait_for(lambda: pool.stuck == 0 and pool_threads("t-abandon") == 1)
        assert stuck.result(5) is True  # it finished after all; nobody has to look
        assert pool.submit(lambda: "still").result(5) == "still"
    finally:
        pool.shutdown()


def test_overdue_reports_only_running_jobs_by_their_start(release: threading.Event) -> None:
    now = [100.0]
    pool = DecodePool(1, "t-overdue", clock=lambda: now[0])
    try:
        running = pool.submit(release.wait)
        waiting = pool.submit(lambda: None)  # queued behind it: not started, not overdue
        assert wait_for(lambda: pool.overdue(100.5) == [running])
        assert pool.overdue(100.0) == []
        release.set()
        waiting.result(5)
        assert pool.overdue(1e9) == []
    finally:
        pool.shutdown()


def test_shutdown_cancels_queued_jobs_and_ends_the_threads(release: threading.Event) -> None:
    pool = DecodePool(1, "t-shutdown")
    busy = pool.submit(release.wait)
    queued = pool.submit(lambda: None)
    assert wait_for(lambda: pool.overdue(time.monotonic() + 1) == [busy])
    pool.shutdown()
    assert queued.cancelled()
    release.set()
    assert busy.result(5) is True
    assert wait_for(lambda: pool_threads("t-shutdown") == 0)


def test_a_thread_stuck_for_ever_does_not_keep_the_process_alive() -> None:
    """concurrent.futures joins its threads at exit, so a hung decoder would hang shutdown."""
    code = (
        "import threading, time\n"
        "from cropworker.stream.pool import DecodePool\n"
        "pool = DecodePool(1, 'p')\n"
        "future = pool.submit(threading.Event().wait)\n"
        "while not pool.overdue(time.monotonic() + 1): time.sleep(0.01)\n"
        "pool.abandon(future)\n"
        "pool.shutdown()\n"
        "print('exiting', flush=True)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "exiting\n"

from __future__ import annotations

import pytest

from cropworker.stream.schedule import (
    BUSY_POLL_S,
    IDLE_POLL_S,
    Commits,
    Watchdog,
    poll_wait,
)


def test_poll_waits_long_when_idle_and_not_at_all_when_work_is_ready() -> None:
    assert poll_wait(10.0, None, ready=False, busy=False) == IDLE_POLL_S
    assert poll_wait(10.0, None, ready=True, busy=False) == 0.0  # decoded images to collect
    assert poll_wait(10.0, 9.5, ready=False, busy=False) == 0.0  # a batch is overdue
    assert poll_wait(10.0, 10.0, ready=False, busy=True) == 0.0


def test_poll_wakes_for_the_next_batch_and_polls_often_while_busy() -> None:
    assert poll_wait(10.0, 10.03, ready=False, busy=False) == pytest.approx(0.03)
    assert poll_wait(10.0, 12.0, ready=False, busy=False) == IDLE_POLL_S
    assert poll_wait(10.0, None, ready=False, busy=True) == BUSY_POLL_S
    assert poll_wait(10.0, 10.001, ready=False, busy=True) == pytest.approx(0.001)


def test_the_watchdog_looks_once_per_interval_for_work_older_than_the_timeout() -> None:
    watchdog = Watchdog(timeout_s=60.0, threads=4, interval_s=0.5)
    assert watchdog.due(100.0) == 40.0  # the first step looks at once
    assert watchdog.due(100.2) is None
    assert watchdog.due(100.499) is None
    assert watchdog.due(100.5) == pytest.approx(40.5)
    assert watchdog.due(103.0) == 43.0  # a late step looks once, not once per missed interval
    assert watchdog.due(103.1) is None


def test_the_worker_is_live_while_a_thread_is_not_stuck() -> None:
    watchdog = Watchdog(timeout_s=1.0, threads=2)
    assert watchdog.live(0) and watchdog.live(1)
    assert not watchdog.live(2)


def test_a_commit_is_due_once_an_offset_is_stored_and_the_interval_passed() -> None:
    commits = Commits(interval_s=1.0)
    assert not commits.due(5.0)  # nothing stored
    commits.stored()
    assert commits.due(5.0)  # the first commit need not wait
    commits.sent(5.0)
    assert not commits.due(5.5)
    commits.stored()
    assert not commits.due(5.9)
    assert commits.due(6.0)


def test_with_no_interval_every_stored_offset_is_committed_at_once() -> None:
    commits = Commits(interval_s=0.0)
    commits.stored()
    commits.sent(1.0)
    assert not commits.due(1.0)
    commits.stored()
    assert commits.due(1.0)

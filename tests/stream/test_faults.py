"""Faults injected against the real (embedded) broker, with the scenarios of
benchmarks/faults.py at a small size: a worker killed with SIGKILL and restarted, the broker
restarted mid-stream, the broker frozen past the session timeout, and one inference batch longer
than max.poll.interval.ms. Nothing may be lost and no worker may crash or hang; duplicates are
allowed, and reported (`pytest -s`, and as the tests' user properties). Killing one of two
workers is in test_failover.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from cropworker.backend import OnnxBackend
from cropworker.demo.broker import EmbeddedBroker
from cropworker.stream.settings import EMBEDDED_SESSION_TIMEOUT_MS
from tests.benchmarks.conftest import load

pytestmark = [pytest.mark.broker, pytest.mark.slow]

UPLOADS = 120
RATE = 10.0  # uploads/s: the stream outlasts every fault
FAULT_S = 8.0  # longer than the session timeout and max.poll.interval.ms (6 s)
FAULT_AT = 0.15  # early enough that uploads are still sent after the fault


@pytest.fixture(scope="module")
def faults() -> ModuleType:
    return load("faults")


@pytest.fixture
def bench(faults: ModuleType, tmp_path: Path, backend: OnnxBackend) -> Iterator[Any]:
    with EmbeddedBroker() as broker:  # its own: these tests restart and freeze it
        yield faults.Bench(
            broker, tmp_path, UPLOADS, RATE, FAULT_S, 60.0, lambda: backend, FAULT_AT
        )


def check(outcome: Any, request: pytest.FixtureRequest) -> None:
    """What every scenario must show; the figures are printed and recorded on the test item."""
    print(outcome)
    for name in ("uploads", "results", "lost", "duplicated", "recovery_s"):
        request.node.user_properties.append((name, getattr(outcome, name)))
    assert outcome.lost == 0, outcome
    assert outcome.results >= outcome.uploads > 0
    assert outcome.dead_letters == 0
    assert not outcome.crashed and not outcome.hung, outcome
    assert outcome.recovery_s is not None  # uploads sent after the fault were answered


def test_kill_9_of_the_only_worker_and_a_restart_lose_nothing(
    faults: ModuleType, bench: Any, request: pytest.FixtureRequest
) -> None:
    outcome = faults.kill9_restart(bench)
    check(outcome, request)
    assert outcome.uploads == UPLOADS
    assert outcome.checks["victim exit status"] == -9


def test_a_broker_restart_mid_stream_loses_nothing_it_holds(
    faults: ModuleType, bench: Any, request: pytest.FixtureRequest
) -> None:
    outcome = faults.broker_restart(bench)
    check(outcome, request)
    # in memory, the broker forgot what came before the restart; the rest must be answered
    assert 0 < outcome.uploads < UPLOADS


def test_a_broker_stalled_past_the_session_timeout_loses_nothing(
    faults: ModuleType, bench: Any, request: pytest.FixtureRequest
) -> None:
    outcome = faults.broker_stall(bench)
    check(outcome, request)
    assert outcome.uploads == UPLOADS
    assert outcome.fault_s * 1000 > EMBEDDED_SESSION_TIMEOUT_MS
    assert outcome.checks["partitions lost"] >= 1  # the session did time out


def test_a_batch_longer_than_max_poll_interval_loses_nothing_and_stores_no_lost_work(
    faults: ModuleType, bench: Any, request: pytest.FixtureRequest
) -> None:
    outcome = faults.slow_batch(bench)
    check(outcome, request)
    assert outcome.uploads == UPLOADS
    assert outcome.checks["partitions lost"] >= 1  # librdkafka did drop the worker
    assert outcome.checks["offsets stored while lost"] == 0

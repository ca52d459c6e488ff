"""The worker in its consumer group, on the real embedded broker: what it reports (partitions
assigned, ready, the loop's heartbeat) and how it rebalances. With the cooperative-sticky
assignor a member that joins takes partitions from the others without stopping them; with an
eager assignor (range) every member gives up everything at every change."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import numpy as np
import pytest

from cropworker.backend import OnnxBackend
from cropworker.demo.broker import EmbeddedBroker
from cropworker.pipeline import Cropper
from cropworker.stream.logs import _FIELDS

from .conftest import PARTITIONS, Reader, RunningWorker, Topics, send, settings_for, wait_for
from .test_worker import NOW_MS, photo, upload_event


def revocations(caplog: pytest.LogCaptureFixture, worker: RunningWorker) -> list[list[str]]:
    """The partitions each "partitions revoked" line of `worker` named, in order."""
    name = worker.thread.name
    return [
        getattr(r, _FIELDS)["partitions"]
        for r in caplog.records
        if r.getMessage() == "partitions revoked" and r.threadName == name
    ]


def uploads(prefix: str, count: int) -> list[tuple[bytes, bytes]]:
    image = photo("chelsea.jpg")
    return [
        (f"{prefix}{i}".encode(), upload_event(f"{prefix}{i}", NOW_MS, data=image))
        for i in range(count)
    ]


@pytest.mark.parametrize(
    ("assignor", "incremental"), [("cooperative-sticky", True), ("range", False)]
)
def test_a_joining_worker_takes_partitions_and_nothing_is_lost(
    broker: EmbeddedBroker,
    topics: Topics,
    start_worker: Callable[..., RunningWorker],
    reader_factory: Callable[[Topics], Reader],
    caplog: pytest.LogCaptureFixture,
    assignor: str,
    incremental: bool,
) -> None:
    caplog.set_level(logging.INFO, logger="cropworker.stream.worker")
    settings = settings_for(broker.bootstrap, topics, assignor=assignor)
    reader = reader_factory(topics)
    first = start_worker(settings)
    assert wait_for(lambda: first.value("cropworker_partitions_assigned") == PARTITIONS)
    assert first.value("cropworker_ready") == 1
    before = uploads("a", 20)
    send(broker.bootstrap, topics.input, before)
    second = start_worker(settings)
    assert wait_for(
        lambda: (
            second.value("cropworker_partitions_assigned") > 0
            and first.value("cropworker_partitions_assigned")
            + second.value("cropworker_partitions_assigned")
            == PARTITIONS
        ),
        timeout=40,
    )
    after = uploads("b", 20)
    send(broker.bootstrap, topics.input, after)

    reader.until(lambda seen: len(seen) >= len(before) + len(after), 60)
    keys = {m.key() for m in reader.on(topics.output)}
    assert keys == {k for k, _ in before + after}  # every upload has a result (duplicates ok)
    revoked = revocations(caplog, first)
    assert revoked, "the first worker gave nothing up"
    if incremental:  # only what the newcomer took, never the whole assignment
        assert all(len(r) < PARTITIONS for r in revoked), revoked
        assert sum(map(len, revoked)) == second.value("cropworker_partitions_assigned")
    else:
        assert len(revoked[0]) == PARTITIONS
    assert first.health.ready and second.health.ready


def test_ready_and_assignment_drop_when_the_worker_leaves(
    broker: EmbeddedBroker, topics: Topics, start_worker: Callable[..., RunningWorker]
) -> None:
    running = start_worker(settings_for(broker.bootstrap, topics))
    assert wait_for(lambda: running.value("cropworker_ready") == 1)
    assert running.value("cropworker_partitions_assigned") == PARTITIONS
    beat = running.value("cropworker_loop_heartbeat_timestamp_seconds")
    assert abs(beat - time.time()) < 5
    running.worker.stop()
    running.thread.join(30)
    assert running.value("cropworker_partitions_assigned") == 0
    assert running.value("cropworker_ready") == 0 and not running.health.ready


class HangingBackend:
    """The real backend, whose next inference blocks until released: a hung loop."""

    def __init__(self, backend: OnnxBackend) -> None:
        self.inner, self.info = backend, backend.info
        self.release = threading.Event()

    def infer(self, images: np.ndarray) -> np.ndarray:
        self.release.wait(60)
        return self.inner.infer(images)


def test_a_hung_loop_fails_liveness_until_it_turns_again(
    broker: EmbeddedBroker,
    topics: Topics,
    start_worker: Callable[..., RunningWorker],
    backend: OnnxBackend,
) -> None:
    settings = settings_for(broker.bootstrap, topics, shutdown_timeout_s=0.5, loop_timeout_s=1.0)
    hanging = HangingBackend(backend)
    running = start_worker(settings, cropper=Cropper(hanging, aspects=settings.aspects))
    try:
        assert wait_for(lambda: running.health.ready)
        send(broker.bootstrap, topics.input, uploads("h", 1))
        assert wait_for(lambda: not running.health.live, timeout=30)
        assert running.health.threads_ok  # the decode threads are fine: the loop is not
        assert running.health.describe()["loop_age_s"] > settings.loop_timeout_s  # type: ignore[operator]
    finally:
        hanging.release.set()
    assert wait_for(lambda: running.health.live)

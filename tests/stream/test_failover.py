"""Two worker processes (`python -m cropworker run`) share a stream; one of them dies: by
`kill -9` (nothing is lost, at most one batch is duplicated) or by SIGTERM (nothing is lost or
duplicated, and it exits in bounded time)."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Producer

from cropworker.demo.broker import EmbeddedBroker
from cropworker.stream.events import upload_event
from cropworker.stream.settings import Settings
from tests.benchmarks.conftest import load
from tests.stream.conftest import Reader, Topics, settings_for, small_jpeg

pytestmark = [pytest.mark.broker, pytest.mark.slow]

UPLOADS = 120
RATE_PER_S = 40.0
KILL_AFTER = 30  # results seen before one worker is stopped


class WorkerProcess(load("faults").WorkerProcess):
    """The fault benchmark's worker process, plus what these tests look at."""

    def owned(self) -> set[str]:
        """The partitions it owns now, replayed from its log: the cooperative assignor names
        only what changes owner in each "partitions assigned" / "revoked" / "lost" line."""
        lines = [json.loads(line) for line in self.log.read_text().splitlines() if line[:1] == "{"]
        owned: set[str] = set()
        for r in lines:
            if r["message"] == "partitions assigned":
                owned |= set(r["partitions"])
            elif r["message"] in ("partitions revoked", "partitions lost; dropping their work"):
                owned -= set(r["partitions"])
        return owned

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[list[WorkerProcess]]:
    started: list[WorkerProcess] = []
    yield started
    for worker in started:
        worker.stop()


def start_pair(
    broker: EmbeddedBroker, topics: Topics, tmp_path: Path, started: list[WorkerProcess]
) -> tuple[WorkerProcess, WorkerProcess, Settings]:
    settings = settings_for(broker.bootstrap, topics, max_batch=4, log_format="json")
    started += [WorkerProcess(settings, tmp_path / f"worker{i}.log") for i in range(2)]
    deadline = time.monotonic() + 60
    while not all(w.ready() for w in started):
        assert time.monotonic() < deadline, [w.log.read_text()[-2000:] for w in started]
        time.sleep(0.2)
    return started[0], started[1], settings


def stream(bootstrap: str, topic: str) -> threading.Thread:
    """Send UPLOADS small JPEG uploads at RATE_PER_S in the background."""

    def run() -> None:
        producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
        start = time.monotonic()
        for i in range(UPLOADS):
            time.sleep(max(0.0, start + i / RATE_PER_S - time.monotonic()))
            now_ms = time.time_ns() // 1_000_000
            producer.produce(topic, upload_event(f"u{i}", now_ms, data=small_jpeg(i)), f"u{i}")
            producer.poll(0)
        producer.flush(30)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def results_after_stopping(
    broker: EmbeddedBroker, topics: Topics, victim: WorkerProcess, how: signal.Signals, bound: float
) -> Counter[bytes]:
    """Stream the uploads, stop `victim` with `how` part-way (it must exit within `bound`
    seconds), and count the results per media id once every upload has one."""
    reader = Reader(broker.bootstrap, (topics.output, topics.dead_letter))
    try:
        sender = stream(broker.bootstrap, topics.input)
        reader.until(lambda seen: len(seen) >= KILL_AFTER, 60)
        victim.process.send_signal(how)
        victim.process.wait(bound)
        reader.until(lambda seen: len({m.key() for m in seen}) >= UPLOADS, 90)
        sender.join(30)
        end = time.monotonic() + 1.0  # a duplicate may trail the last first copy
        reader.until(lambda seen: time.monotonic() > end, 2.0)
        assert reader.on(topics.dead_letter) == []
        return Counter(m.key() for m in reader.on(topics.output) if m.key())
    finally:
        reader.close()


def test_kill_9_loses_nothing_and_duplicates_at_most_one_batch(
    broker: EmbeddedBroker,
    topics: Topics,
    tmp_path: Path,
    spawn: list[WorkerProcess],
    request: pytest.FixtureRequest,
) -> None:
    victim, survivor, settings = start_pair(broker, topics, tmp_path, spawn)
    assert victim.owned()  # it owns partitions of the stream
    counts = results_after_stopping(broker, topics, victim, signal.SIGKILL, 5)
    assert victim.process.returncode == -signal.SIGKILL
    lost = UPLOADS - len(set(counts) & {f"u{i}".encode() for i in range(UPLOADS)})
    duplicates = sum(counts.values()) - len(counts)
    print(f"kill -9 of one of two workers: {UPLOADS} uploads, lost {lost}, duplicated {duplicates}")
    request.node.user_properties += [("lost", lost), ("duplicated", duplicates)]
    assert set(counts) == {f"u{i}".encode() for i in range(UPLOADS)}
    assert duplicates <= settings.max_batch, counts.most_common(10)
    assert survivor.process.poll() is None
    assert len(survivor.owned()) == 4


def test_sigterm_drains_without_duplicates(
    broker: EmbeddedBroker, topics: Topics, tmp_path: Path, spawn: list[WorkerProcess]
) -> None:
    victim, survivor, settings = start_pair(broker, topics, tmp_path, spawn)
    assert victim.owned()
    counts = results_after_stopping(
        broker, topics, victim, signal.SIGTERM, settings.shutdown_timeout_s + 5
    )
    assert len(survivor.owned()) == 4  # it took the victim's partitions over
    assert victim.process.returncode == 0, victim.log.read_text()[-3000:]
    assert set(counts) == {f"u{i}".encode() for i in range(UPLOADS)}
    assert sum(counts.values()) == UPLOADS, counts.most_common(10)
    log = victim.log.read_text()
    assert '"message": "worker stopped"' in log and '"unacknowledged": 0' in log
    assert survivor.process.poll() is None

"""Fixtures for the streaming worker: unique topics per test on the real embedded broker (the
session-wide `broker` fixture in tests/conftest.py), settings for in-process workers, and helpers
to send events and read what comes out."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import cv2
import numpy as np
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, Producer, TopicPartition
from prometheus_client import CollectorRegistry

from cropworker.backend import OnnxBackend
from cropworker.demo.broker import EmbeddedBroker, create_topics
from cropworker.stream import app
from cropworker.stream.metrics import Health
from cropworker.stream.settings import EMBEDDED_SESSION_TIMEOUT_MS, Settings
from cropworker.stream.worker import Worker

PARTITIONS = 4


@dataclass(frozen=True)
class Topics:
    input: str
    output: str
    dead_letter: str

    @property
    def all(self) -> tuple[str, str, str]:
        return self.input, self.output, self.dead_letter


def new_topics(bootstrap: str) -> Topics:
    run = uuid.uuid4().hex[:8]
    topics = Topics(f"uploads-{run}", f"crops-{run}", f"dead-{run}")
    create_topics(bootstrap, dict.fromkeys(topics.all, PARTITIONS))
    return topics


@pytest.fixture
def topics(broker: EmbeddedBroker) -> Topics:
    return new_topics(broker.bootstrap)


def settings_for(bootstrap: str, topics: Topics, **changes: Any) -> Settings:
    base = Settings(
        brokers=bootstrap,
        group_id=f"group-{topics.input}",
        input_topic=topics.input,
        output_topic=topics.output,
        dead_letter_topic=topics.dead_letter,
        session_timeout_ms=EMBEDDED_SESSION_TIMEOUT_MS,
        statistics_interval_ms=500,
        metrics_port=0,
        shutdown_timeout_s=10.0,
    )
    return replace(base, **changes)


def wait_for(check: Callable[[], bool], timeout: float = 20.0) -> bool:
    """Poll `check` until it holds (True) or `timeout` passes (False)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def send(bootstrap: str, topic: str, messages: list[tuple[bytes, bytes | None]]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "message.max.bytes": 16 * 1024 * 1024})
    for key, value in messages:
        producer.produce(topic, value, key)
    assert producer.flush(30) == 0


class Reader:
    """Reads topics from the beginning (assigned, no group) and keeps everything it saw."""

    def __init__(self, bootstrap: str, topics: tuple[str, ...]) -> None:
        self.consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"reader-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 20,
            }
        )
        self.consumer.assign(
            [TopicPartition(t, p, OFFSET_BEGINNING) for t in topics for p in range(PARTITIONS)]
        )
        self.messages: list[Message] = []

    def on(self, topic: str) -> list[Message]:
        return [m for m in self.messages if m.topic() == topic]

    def until(self, done: Callable[[list[Message]], bool], timeout: float) -> list[Message]:
        deadline = time.monotonic() + timeout
        while not done(self.messages) and time.monotonic() < deadline:
            for message in self.consumer.consume(100, 0.1):
                if message.error() is None:
                    self.messages.append(message)
        return self.messages

    def close(self) -> None:
        self.consumer.close()


@pytest.fixture
def reader_factory(broker: EmbeddedBroker) -> Iterator[Callable[[Topics], Reader]]:
    readers: list[Reader] = []

    def make(topics: Topics) -> Reader:
        readers.append(Reader(broker.bootstrap, (topics.output, topics.dead_letter)))
        return readers[-1]

    yield make
    for reader in readers:
        reader.close()


@dataclass
class RunningWorker:
    worker: Worker
    registry: CollectorRegistry
    health: Health
    thread: threading.Thread
    errors: list[BaseException]

    def value(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0


@pytest.fixture
def start_worker(backend: OnnxBackend) -> Iterator[Callable[..., RunningWorker]]:
    """Factory: a worker assembled by the composition root (`app.build`, with the session's
    network, or `cropper=`; other keywords go to the Worker) running in a thread (stopped and
    joined at teardown)."""
    running: list[RunningWorker] = []
    services: list[app.Service] = []

    def start(settings: Settings, **kwargs: Any) -> RunningWorker:
        service = app.build(settings, backend=backend, **kwargs)
        services.append(service)
        worker, registry, health = service.worker, service.registry, service.health
        errors: list[BaseException] = []

        def target() -> None:
            try:
                worker.run()
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=target, daemon=True)
        thread.start()
        running.append(RunningWorker(worker, registry, health, thread, errors))
        return running[-1]

    yield start
    for r in running:
        r.worker.stop()
        r.thread.join(30)
        assert not r.thread.is_alive(), "worker did not stop"
        assert not r.errors, r.errors
    for service in services:
        service.close()


def small_jpeg(seed: int, width: int = 160, height: int = 120) -> bytes:
    """A small distinct JPEG (a bright blob on noise) that decodes fast."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 60, (height, width, 3), dtype=np.uint8)
    x, y = int(rng.integers(20, width - 20)), int(rng.integers(20, height - 20))
    cv2.circle(image, (x, y), 15, (255, 240, 200), -1)
    ok, encoded = cv2.imencode(".jpg", image)
    assert ok
    return encoded.tobytes()

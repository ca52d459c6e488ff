"""The worker against the real (embedded) broker, in-process: results, dead letters, offsets,
per-event aspects, backpressure and metrics."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import jsonschema
import numpy as np
import pytest
from confluent_kafka import Consumer, TopicPartition

from cropworker.backend import OnnxBackend
from cropworker.decode import DecodedImage, decode_image
from cropworker.demo.broker import EmbeddedBroker, create_topics
from cropworker.pipeline import Cropper
from cropworker.stream.events import RESULT_SCHEMA, UploadEvent, schema, upload_event
from cropworker.stream.settings import Settings
from tests.images import SAMPLES, photo
from tests.stream.conftest import (
    PARTITIONS,
    Reader,
    RunningWorker,
    Topics,
    new_topics,
    send,
    settings_for,
    wait_for,
)

pytestmark = pytest.mark.broker

NOW_MS = int(time.time() * 1000)


def committed_total(bootstrap: str, settings: Settings) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": settings.group_id})
    try:
        parts = [TopicPartition(settings.input_topic, p) for p in range(PARTITIONS)]
        return sum(max(tp.offset, 0) for tp in consumer.committed(parts, timeout=10))
    finally:
        consumer.close()


def test_every_upload_gives_one_correct_result(
    broker: EmbeddedBroker,
    topics: Topics,
    start_worker: Callable[..., RunningWorker],
    reader_factory: Callable[[Topics], Reader],
    backend: OnnxBackend,
) -> None:
    names = [*sorted(p.name for p in SAMPLES.glob("*.jp*g")), "camera.png"]
    events = []
    for i, name in enumerate(names):
        if i % 2:
            event = upload_event(f"m{i}", NOW_MS, url=(SAMPLES / name).as_uri())
        else:
            event = upload_event(f"m{i}", NOW_MS, data=photo(name))
        events.append((f"m{i}".encode(), event))
    events.append(
        (b"wide", upload_event("wide", NOW_MS, data=photo("coffee.jpg"), aspects=["3:1"]))
    )
    settings = settings_for(broker.bootstrap, topics, file_root=SAMPLES)
    reader = reader_factory(topics)
    running = start_worker(settings)
    send(broker.bootstrap, topics.input, events)

    reader.until(lambda seen: len(seen) >= len(events), 60)
    results = [json.loads(m.value() or b"") for m in reader.on(topics.output)]
    assert sorted(r["media_id"] for r in results) == sorted(k.decode() for k, _ in events)
    assert reader.on(topics.dead_letter) == []
    result_schema = schema(RESULT_SCHEMA)
    cropper = Cropper(backend)
    by_id = {r["media_id"]: r for r in results}
    for i, name in enumerate(names):
        result = by_id[f"m{i}"]
        jsonschema.validate(result, result_schema)
        expected = cropper.crop(photo(name)).to_json(name)
        assert (result["width"], result["height"]) == (expected["width"], expected["height"])
        assert result["crops"] == expected["crops"], name
        assert result["salient_points"] == expected["salient_points"]
        assert result["model"] == "vanilla@1" and result["timestamp_ms"] == NOW_MS
    wide = Cropper(backend, aspects=["3:1"]).crop(photo("coffee.jpg")).crops
    assert by_id["wide"]["crops"] == {"3:1": list(wide["3:1"])}
    assert all(
        m.key() == json.loads(m.value() or b"")["media_id"].encode() for m in reader.messages
    )

    n = len(events)
    assert wait_for(lambda: committed_total(broker.bootstrap, settings) == n)
    assert wait_for(lambda: running.value("cropworker_images_processed_total", result="ok") == n)
    assert running.value("cropworker_end_to_end_latency_seconds_count") == n
    assert running.value("cropworker_batch_size_sum") == n
    assert running.value("cropworker_decode_seconds_count") == n
    assert running.value("cropworker_in_flight_images") == 0
    assert running.value("cropworker_model_info", model="vanilla@1") == 1
    assert running.health.ready

    used = sorted({r["source"]["partition"] for r in results})

    def lag() -> list[float | None]:
        return [
            running.registry.get_sample_value(
                "cropworker_consumer_lag", {"topic": topics.input, "partition": str(p)}
            )
            for p in used
        ]

    assert wait_for(lambda: lag() == [0.0] * len(used)), lag()


class _ImageServer(BaseHTTPRequestHandler):
    """/ok/NAME serves a sample photo; /flaky answers 503 every time."""

    hits: ClassVar[dict[str, int]] = {}

    def do_GET(self) -> None:
        self.hits[self.path] = self.hits.get(self.path, 0) + 1
        if self.path.startswith("/ok/"):
            body = photo(self.path.removeprefix("/ok/"))
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        else:
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def image_server() -> Iterator[str]:
    _ImageServer.hits.clear()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ImageServer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_poison_messages_are_dead_lettered_and_good_ones_flow(
    broker: EmbeddedBroker,
    topics: Topics,
    start_worker: Callable[..., RunningWorker],
    reader_factory: Callable[[Topics], Reader],
    image_server: str,
) -> None:
    poison: dict[str, tuple[bytes | None, str, int]] = {  # key: (value, error type, attempts)
        "bad-json": (b"{not json", "bad_event", 1),
        "no-value": (None, "bad_event", 1),
        "old-schema": (json.dumps({"schema": "cropworker.upload.v0"}).encode(), "bad_event", 1),
        "bad-aspect": (
            upload_event("bad-aspect", NOW_MS, data=b"x", aspects=["16x9"]),
            "bad_event",
            1,
        ),
        "truncated": (
            upload_event("truncated", NOW_MS, data=photo("coffee.jpg")[:3000]),
            "corrupt",
            1,
        ),
        "html": (upload_event("html", NOW_MS, data=b"<html></html>"), "unsupported_format", 1),
        "too-big": (upload_event("too-big", NOW_MS, data=photo("camera.png")), "too_large", 1),
        "escape": (upload_event("escape", NOW_MS, url="file:///etc/passwd"), "fetch_forbidden", 1),
        "missing": (
            upload_event("missing", NOW_MS, url=(SAMPLES / "nope.jpg").as_uri()),
            "fetch_failed",
            1,
        ),
        "flaky": (
            upload_event("flaky", NOW_MS, url=f"{image_server}/flaky"),
            "fetch_failed",
            3,
        ),
        "elsewhere": (
            upload_event("elsewhere", NOW_MS, url="https://example.com/a.jpg"),
            "fetch_forbidden",
            1,
        ),
    }
    good = {
        f"good-{i}": upload_event(f"good-{i}", NOW_MS, data=photo(name))
        if i % 2
        else upload_event(f"good-{i}", NOW_MS, url=f"{image_server}/ok/{name}")
        for i, name in enumerate(["coffee.jpg", "chelsea.jpg", "rocket.jpg", "nus_258.jpg"] * 2)
    }
    messages: list[tuple[bytes, bytes | None]] = []
    for (key, (value, _, _)), good_key in zip(poison.items(), list(good) * 2, strict=False):
        messages += [(key.encode(), value), (good_key.encode(), good[good_key])]
    messages = list(dict(messages).items())  # each good event once
    settings = settings_for(
        broker.bootstrap,
        topics,
        file_root=SAMPLES,
        max_image_bytes=120_000,  # camera.png (148 kB) is over, every JPEG sample under
        http_allowed_hosts=("127.0.0.1",),
        http_allow_private=True,
        fetch_backoff_s=0.01,
    )
    reader = reader_factory(topics)
    running = start_worker(settings)
    send(broker.bootstrap, topics.input, messages)

    reader.until(lambda seen: len(seen) >= len(messages), 60)
    results = {(m.key() or b"").decode() for m in reader.on(topics.output)}
    assert results == set(good)
    letters = reader.on(topics.dead_letter)
    assert sorted((m.key() or b"").decode() for m in letters) == sorted(poison)
    for letter in letters:
        key = (letter.key() or b"").decode()
        value, error_type, attempts = poison[key]
        headers = dict(letter.headers() or [])
        assert letter.value() == value, key
        assert headers["error.type"] == error_type.encode(), (key, headers)
        assert headers["error.attempts"] == str(attempts).encode(), key
        assert headers["error.message"]
        assert headers["source.topic"] == topics.input.encode()
        assert int(headers["source.offset"] or b"-1") >= 0
    assert _ImageServer.hits["/flaky"] == 3
    assert wait_for(lambda: committed_total(broker.bootstrap, settings) == len(messages))
    assert running.value("cropworker_dead_letters_total", type="bad_event") == 4
    assert running.value("cropworker_images_processed_total", result="dead_letter") == len(poison)
    assert running.value("cropworker_images_processed_total", result="ok") == len(good)


def test_a_hung_decode_is_dead_lettered_and_its_partition_moves_on(
    broker: EmbeddedBroker,
    topics: Topics,
    start_worker: Callable[..., RunningWorker],
    reader_factory: Callable[[Topics], Reader],
    backend: OnnxBackend,
) -> None:
    """A decoder that never returns (here: until the test lets it) costs its event a `timeout`
    dead letter and its thread, not the partition: the events behind it get their results and
    every offset is committed. With the only decode thread stuck the worker is not live."""
    hang = photo("rocket.jpg")
    release = threading.Event()

    def decoder(data: bytes) -> DecodedImage:
        if data == hang:
            release.wait(60)
        return decode_image(data, backend.info.long_side)

    settings = settings_for(broker.bootstrap, topics, decode_threads=1, prepare_timeout_s=1.0)
    cropper = Cropper(backend, aspects=settings.aspects, decoder=decoder)
    good = {
        f"good-{i}": upload_event(f"good-{i}", NOW_MS, data=photo("chelsea.jpg")) for i in range(6)
    }
    hung = upload_event("hung", NOW_MS, data=hang)
    messages = [(b"good-0", good["good-0"]), (b"hung", hung)]
    messages += [(k.encode(), v) for k, v in good.items() if k != "good-0"]
    reader = reader_factory(topics)
    try:
        running = start_worker(settings, cropper=cropper)
        send(broker.bootstrap, topics.input, messages)

        reader.until(lambda seen: len(seen) >= len(messages), 60)
        assert {(m.key() or b"").decode() for m in reader.on(topics.output)} == set(good)
        [letter] = reader.on(topics.dead_letter)
        headers = dict(letter.headers() or [])
        assert letter.key() == b"hung" and letter.value() == hung
        assert headers["error.type"] == b"timeout"
        assert wait_for(lambda: committed_total(broker.bootstrap, settings) == len(messages))
        assert running.value("cropworker_dead_letters_total", type="timeout") == 1
        assert running.value("cropworker_decode_threads_stuck") == 1
        assert not running.health.live
    finally:
        release.set()
    assert wait_for(lambda: running.value("cropworker_decode_threads_stuck") == 0)
    assert wait_for(lambda: running.health.live)
    time.sleep(0.5)  # the hung decode has finished: its late result must go nowhere
    assert running.value("cropworker_images_processed_total", result="ok") == len(good)
    assert [m.key() for m in reader.until(lambda seen: False, 0.5)].count(b"hung") == 1
    assert running.value("cropworker_in_flight_images") == 0


class SlowBackend:
    """The real backend, slowed down so that a backlog builds up."""

    def __init__(self, backend: OnnxBackend, delay_s: float) -> None:
        self.inner, self.info, self.delay_s = backend, backend.info, delay_s

    def infer(self, images: np.ndarray) -> np.ndarray:
        time.sleep(self.delay_s)
        return self.inner.infer(images)


def test_a_backlog_pauses_partitions_and_stays_bounded(
    broker: EmbeddedBroker,
    topics: Topics,
    start_worker: Callable[..., RunningWorker],
    reader_factory: Callable[[Topics], Reader],
    backend: OnnxBackend,
) -> None:
    settings = settings_for(broker.bootstrap, topics, max_batch=2, max_in_flight=6)
    observed: list[tuple[float, float]] = []
    holder: list[RunningWorker] = []

    def sample(event: UploadEvent, result: Any) -> None:
        if holder:
            observed.append(
                (
                    holder[0].value("cropworker_in_flight_images"),
                    holder[0].value("cropworker_partitions_paused"),
                )
            )

    cropper = Cropper(SlowBackend(backend, 0.05), max_batch=2)
    holder.append(start_worker(settings, cropper=cropper, on_result=sample))
    count = 40
    reader = reader_factory(topics)
    send(
        broker.bootstrap,
        topics.input,
        [
            (f"b{i}".encode(), upload_event(f"b{i}", NOW_MS, data=photo("chelsea.jpg")))
            for i in range(count)
        ],
    )
    reader.until(lambda seen: len(seen) >= count, 90)
    assert len({m.key() for m in reader.on(topics.output)}) == count
    assert max(in_flight for in_flight, _ in observed) <= settings.max_in_flight
    assert any(paused == 1 for _, paused in observed)
    assert wait_for(lambda: holder[0].value("cropworker_partitions_paused") == 0)


def test_broker_restart_is_survived(start_worker: Callable[..., RunningWorker]) -> None:
    """An in-memory broker restart loses topics, offsets and producer ids: the worker rejoins,
    replaces its producer and keeps going."""
    with EmbeddedBroker() as own:
        topics = new_topics(own.bootstrap)
        running = start_worker(settings_for(own.bootstrap, topics))
        before = [
            (f"a{i}".encode(), upload_event(f"a{i}", NOW_MS, data=photo("chelsea.jpg")))
            for i in range(4)
        ]
        send(own.bootstrap, topics.input, before)
        reader = Reader(own.bootstrap, (topics.output,))
        assert len(reader.until(lambda seen: len(seen) >= 4, 60)) == 4
        reader.close()

        own.restart()
        create_topics(own.bootstrap, dict.fromkeys(topics.all, PARTITIONS))
        after = [
            (f"b{i}".encode(), upload_event(f"b{i}", NOW_MS, data=photo("coffee.jpg")))
            for i in range(4)
        ]
        send(own.bootstrap, topics.input, after)
        reader = Reader(own.bootstrap, (topics.output,))
        seen = reader.until(lambda seen: len({m.key() for m in seen}) >= 4, 60)
        reader.close()
        assert {m.key() for m in seen} == {key for key, _ in after}
        running.worker.stop()
        running.thread.join(30)
        assert not running.errors

"""`cropworker demo`: the whole streaming path on one machine, in one command.

Starts an embedded Kafka-compatible broker (unless told to use `--brokers`), creates the topics,
runs the worker in a background thread, publishes every sample image as an upload event, prints
each crop result as it arrives on the output topic (and each dead letter), writes the visual report
and stops. With `--follow` it keeps consuming until Ctrl-C, so more events can be sent. Every
Kafka client it makes takes its config from `Settings`, so an external broker behind TLS or SASL
works as it does for `cropworker run`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TextIO

import cv2
from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, Producer, TopicPartition

from .. import report
from ..decode import decode_preview
from ..errors import BrokerError, SettingsError
from ..pipeline import CropResult
from ..stream.app import build
from ..stream.events import UploadEvent, upload_event
from ..stream.settings import Settings
from ..stream.worker import Worker
from .broker import EmbeddedBroker, create_topics

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}
PARTITIONS = 4  # what the embedded broker gives auto-created topics anyway
PREVIEW_SIDE = 960
RESULT_TIMEOUT_S = 120.0


@dataclass
class _Run:
    """What the demo has sent and what came back."""

    sent: dict[str, Path]  # media id -> sample file
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    maps: dict[str, CropResult] = field(default_factory=dict)  # from the worker, for drawing

    @property
    def finished(self) -> bool:
        return len(self.results) + len(self.failures) >= len(self.sent)


def sample_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*") if p.suffix.lower() in IMAGE_SUFFIXES)


def run_demo(settings: Settings, out: TextIO | None = None) -> int:
    """Run the demo, printing to `out` (stdout); 0 when every sample gave a result, else 1."""
    out = out or sys.stdout
    samples = sample_files(settings.samples)
    if not samples:
        raise SettingsError(f"no sample images in {settings.samples}")
    prefix = f"demo-{uuid.uuid4().hex[:8]}"
    run = _Run({f"{prefix}/{p.name}": p for p in samples})
    with contextlib.ExitStack() as stack:
        if settings.embedded_broker:
            broker = stack.enter_context(EmbeddedBroker())
            settings = replace(settings, brokers=broker.bootstrap)
        topics = (settings.input_topic, settings.output_topic, settings.dead_letter_topic)
        create_topics(settings.admin_config(), dict.fromkeys(topics, PARTITIONS))

        def keep_map(event: UploadEvent, result: CropResult) -> None:
            run.maps[event.media_id] = result

        service = build(settings, on_result=keep_map)
        stack.callback(service.close)
        stack.enter_context(_running(service.worker))
        service.server.start()
        print(f"metrics: {service.server.url}  (and /healthz, /readyz)", file=out, flush=True)
        reader = _reader(settings)
        stack.callback(reader.close)
        _publish(settings, run.sent)
        deadline = time.monotonic() + RESULT_TIMEOUT_S
        while not run.finished and time.monotonic() < deadline:
            _read(reader, settings, run, out)
        print(f"report: {_write_report(settings, run)}", file=out, flush=True)
        if settings.follow:
            print("following the output topic; Ctrl-C to stop", file=out, flush=True)
            while True:
                _read(reader, settings, run, out)
    missing = len(run.sent) - len(run.results)
    if missing:
        print(f"{missing} of {len(run.sent)} samples gave no result", file=sys.stderr)
    return 1 if missing else 0


@contextlib.contextmanager
def _running(worker: Worker) -> Iterator[None]:
    """Run the worker in a thread for the duration of the block, then drain and stop it."""
    failure: list[BaseException] = []

    def target() -> None:
        try:
            worker.run()
        except BaseException as exc:  # re-raised in the demo's thread below
            failure.append(exc)

    thread = threading.Thread(target=target, name="cropworker-worker", daemon=True)
    thread.start()
    try:
        yield
    finally:
        worker.stop()
        thread.join(worker.settings.shutdown_timeout_s + 10)
    if failure:
        raise BrokerError(f"the worker failed: {failure[0]!r}") from failure[0]


def _reader(settings: Settings) -> Consumer:
    """A consumer of the output and dead-letter topics, from the beginning (no group join)."""
    consumer = Consumer(settings.reader_config(f"cropworker-demo-reader-{uuid.uuid4().hex[:8]}"))
    consumer.assign(
        [
            TopicPartition(topic, p, OFFSET_BEGINNING)
            for topic in (settings.output_topic, settings.dead_letter_topic)
            for p in range(PARTITIONS)
        ]
    )
    return consumer


def _publish(settings: Settings, sent: dict[str, Path]) -> None:
    producer = Producer(settings.producer_config())
    now_ms = time.time_ns() // 1_000_000
    for media_id, path in sent.items():
        value = upload_event(media_id, now_ms, data=path.read_bytes())
        producer.produce(settings.input_topic, value, media_id.encode())
    if producer.flush(30):
        raise BrokerError("could not publish the sample upload events")


def _read(reader: Consumer, settings: Settings, run: _Run, out: TextIO) -> None:
    message: Message | None = reader.poll(0.2)
    if message is None or message.error() is not None:
        return
    media_id = (message.key() or b"").decode(errors="replace")
    ours = media_id in run.sent
    if not ours and not settings.follow:
        return  # from an earlier run on an external broker
    if message.topic() == settings.dead_letter_topic:
        headers = dict(message.headers() or [])
        reason = f"{_text(headers.get('error.type'))}: {_text(headers.get('error.message'))}"
        if ours:
            run.failures[media_id] = reason
        print(f"dead letter {media_id}: {reason}", file=out, flush=True)
        return
    record = json.loads(message.value() or b"{}")
    if ours:
        run.results[media_id] = record
    print(json.dumps(record), file=out, flush=True)


def _text(value: object) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _write_report(settings: Settings, run: _Run) -> Path:
    entries = []
    for media_id, record in run.results.items():
        result, path = run.maps.get(media_id), run.sent.get(media_id)
        if result is None or path is None:
            continue
        preview = decode_preview(path.read_bytes(), PREVIEW_SIDE, settings.limits)
        picture = report.render(preview, result)
        name = f"{path.stem}.jpg"
        settings.report_dir.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(settings.report_dir / name), picture, [cv2.IMWRITE_JPEG_QUALITY, 88])
        entries.append((path.name, name, record))
    return report.write_html(settings.report_dir, entries)

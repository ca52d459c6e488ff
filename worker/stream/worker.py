"""The streaming worker: upload events in, one crop result (or dead letter) out per event.

    consume ─▶ decode pool (parse event, fetch, decode) ─▶ micro-batcher ─▶ network + crops
            ─▶ produce result / dead letter ─▶ delivery callback ─▶ store offset ─▶ commit

One thread runs the loop: it consumes, hands each message to a small thread pool (OpenCV and the
fetch release the GIL), batches decoded images by input shape and runs the network, so decoding
of the next batch overlaps inference of the current one. Delivery is at-least-once: an input
offset is stored only when the output for it and for every earlier message of its partition is
acknowledged by the broker (`OffsetTracker`), and committed right after. At most `max_in_flight`
images, holding at most `max_in_flight_bytes` (plus one message), are inside the worker; at
either limit the input partitions are paused until both are down to half, so a backlog costs no
memory (docs/limits.md). One consume() takes no more messages than the byte room left holds at
the largest message size, and at least one, so an image larger than the limit still passes
alone. An event still being fetched and decoded after `prepare_timeout_s` is dead-lettered as
`timeout` and its thread replaced (stream/pool.py); once as many threads are stuck as the pool
has, the worker reports itself not live, to be restarted. On revocation the worker finishes
what it holds, flushes and commits before giving the partitions up; on loss (a session timeout,
or a batch longer than `max_poll_interval_ms`) it drops their work uncommitted. `stop()`
(SIGTERM) stops consuming, drains, flushes, commits and closes within `shutdown_timeout_s`.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from ..errors import BrokerError, PrepareTimeoutError, PublishError
from ..pipeline import Cropper, CropRequest, CropResult
from .batcher import Batch, MicroBatcher
from .events import UploadEvent, dead_letter_headers, result_message
from .fetch import Fetcher, FetchPolicy
from .jobs import Job, prepare
from .logs import fields
from .metrics import Health, WorkerMetrics
from .offsets import OffsetTracker, PartitionKey, Ticket
from .pool import DecodePool
from .publish import Outgoing, ProducerLike, Publisher
from .settings import Settings

log = logging.getLogger(__name__)

# How long one consume() may block: long when idle (callbacks are still served), short while
# images are being decoded or results await acknowledgement (their completion does not wake it).
IDLE_POLL_S = 0.1
BUSY_POLL_S = 0.002
WATCHDOG_INTERVAL_S = 0.5  # how often overdue fetches and decodes are looked for
RESULT, DEAD_LETTER = "result", "dead_letter"
Delivery = tuple[Job, str]  # the job and what was sent for it: RESULT or DEAD_LETTER


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


class Worker:
    """Runs until `stop()`. Kafka clients, fetcher, clocks and metrics are injected."""

    def __init__(
        self,
        settings: Settings,
        cropper: Cropper,
        metrics: WorkerMetrics,
        *,
        health: Health | None = None,
        fetcher: Fetcher | None = None,
        consumer_factory: Callable[[dict[str, Any]], Consumer] = Consumer,
        producer_factory: Callable[[dict[str, Any]], ProducerLike] = Producer,
        clock: Callable[[], float] = time.monotonic,
        wall_ms: Callable[[], int] = _wall_ms,
        on_result: Callable[[UploadEvent, CropResult], None] | None = None,
    ) -> None:
        self.settings = settings
        self.cropper = cropper
        self.metrics = metrics
        self.health = health or Health(loop_timeout_s=settings.loop_timeout_s, clock=clock)
        self.metrics.watch(self.health)
        self.fetcher = fetcher or Fetcher(FetchPolicy.from_settings(settings))
        self._consumer_factory = consumer_factory
        self._producer_factory = producer_factory
        self._clock = clock
        self._wall_ms = wall_ms
        self._on_result = on_result
        self._stop = threading.Event()
        self._tracker = OffsetTracker()
        self._batcher: MicroBatcher[tuple[int, ...], Job] = MicroBatcher(
            settings.max_batch, settings.max_wait_ms / 1000
        )
        self._done: queue.SimpleQueue[concurrent.futures.Future[Job]] = queue.SimpleQueue()
        self._pending: dict[concurrent.futures.Future[Job], Job] = {}
        self._in_flight = 0
        self._in_flight_bytes = 0
        self._paused = False
        self._commit_due = False
        self._last_commit = float("-inf")
        self._next_watchdog = float("-inf")
        self._abandon = False  # set when the loop dies: revocation then commits nothing
        self._deadline: float | None = None  # set at stop(): bounds every drain that follows
        self._fatal: BrokerError | None = None
        self._consumer: Consumer | None = None
        self._assigned: set[PartitionKey] = set()

    def stop(self) -> None:
        """Ask the loop to drain and exit (safe from a signal handler or another thread)."""
        self._stop.set()

    def run(self) -> None:
        s = self.settings
        self._pool = pool = DecodePool(s.decode_threads, "cropworker-decode", self._clock)
        self._publisher: Publisher[Delivery] = Publisher(
            self._new_producer, self._delivered, self._clock
        )
        self._consumer = consumer = self._consumer_factory(self._consumer_config())
        completed = False
        try:
            consumer.subscribe(
                [s.input_topic],
                on_assign=self._on_assign,
                on_revoke=self._on_revoke,
                on_lost=self._on_lost,
            )
            self.health.beat()
            self.health.running = True
            log.info("worker running", extra=fields(settings=s.describe()))
            while not self._stop.is_set():
                self._step(pool)
            self._deadline = self._clock() + s.shutdown_timeout_s
            self._drain(self._deadline)
            self._commit_now()
            completed = True
        finally:
            self._abandon = not completed
            self.health.running = False
            consumer.close()  # revokes (nothing left to drain) and leaves the group
            pool.shutdown()
            log.info("worker stopped", extra=fields(unacknowledged=self._publisher.unacknowledged))

    # The loop -------------------------------------------------------------------------------

    def _step(self, pool: DecodePool) -> None:
        consumer = self._consumer
        assert consumer is not None
        self.health.beat()
        for message in consumer.consume(self._room(), self._wait_time()):
            self._accept(message, pool)
        if self._fatal is not None:
            raise self._fatal
        now = self._clock()
        self._watchdog(now)
        self._collect(now)
        if batch := self._batcher.pop_ready(now):
            self._run_batch(batch)
        self._publisher.poll(0)
        if self._commit_due and now - self._last_commit >= self.settings.commit_interval_ms / 1e3:
            self._commit_async(now)
        self._backpressure()

    def _room(self) -> int:
        """Messages the next consume() may return, from both limits, counting each message at
        the largest size it may have; at least one, so that the worker always makes progress."""
        s = self.settings
        by_count = s.max_in_flight - self._in_flight
        by_bytes = (s.max_in_flight_bytes - self._in_flight_bytes) // s.max_message_bytes
        return max(1, min(by_count, by_bytes))

    def _wait_time(self) -> float:
        due = self._batcher.next_deadline()
        now = self._clock()
        if not self._done.empty() or (due is not None and due <= now):
            return 0.0
        wait = IDLE_POLL_S if due is None else min(IDLE_POLL_S, due - now)
        if self._pending or self._publisher.unacknowledged:
            wait = min(wait, BUSY_POLL_S)
        return wait

    def _accept(self, message: Message, pool: DecodePool) -> None:
        err = message.error()
        if err is not None:
            self._kafka_error(err)
            return
        topic, partition, offset = message.topic(), message.partition(), message.offset()
        assert topic is not None and partition is not None and offset is not None
        job = Job.from_message(message, self._tracker.track(topic, partition, offset))
        self._in_flight += 1
        self.metrics.in_flight.set(self._in_flight)
        self._account(job)
        future = pool.submit(
            prepare,
            job,
            max_image_bytes=self.settings.max_image_bytes,
            fetcher=self.fetcher,
            cropper=self.cropper,
            metrics=self.metrics,
            clock=self._clock,
        )
        self._pending[future] = job
        future.add_done_callback(self._done.put)

    def _collect(self, now: float) -> None:
        while True:
            try:
                future = self._done.get_nowait()
            except queue.Empty:
                return
            if self._pending.pop(future, None) is None:
                continue  # abandoned by the watchdog: already dead-lettered
            job = future.result()
            if not self._tracker.is_current(job.ticket):
                self._finish(job)  # its partition was lost or revoked meanwhile
            elif job.error_type:
                job.drop_image()
                self._account(job)
                self._dead_letter(job)
            else:
                assert job.decoded is not None
                job.release_payload()  # decoded: the encoded bytes need not stay in memory
                self._account(job)
                self._batcher.add(job.decoded.rgb.shape, job, now)

    def _watchdog(self, now: float) -> None:
        """Dead-letter the events whose fetch and decode outlasted `prepare_timeout_s`, and
        leave their threads behind. The dead letter is a copy of the job: the stuck thread may
        still write to the original, which nobody reads again."""
        if now < self._next_watchdog:
            return
        self._next_watchdog = now + WATCHDOG_INTERVAL_S
        timeout = self.settings.prepare_timeout_s
        for future in self._pool.overdue(now - timeout):
            job = self._pending.pop(future, None)
            if job is None:
                continue
            self._pool.abandon(future)
            message = f"fetching and decoding took over {timeout:g} s; given up"
            letter = dataclasses.replace(job, decoded=None)
            letter.error_type, letter.error_message = PrepareTimeoutError.code, message
            log.error(
                "event abandoned: %s",
                message,
                extra=fields(threads_stuck=self._pool.stuck, **job.where()),
            )
            if not self._tracker.is_current(letter.ticket):
                self._finish(letter)
                continue
            letter.drop_image()
            self._account(letter)
            self._dead_letter(letter)
        stuck = self._pool.stuck
        self.metrics.stuck_threads.set(stuck)
        self.health.threads_ok = stuck < self.settings.decode_threads

    def _run_batch(self, batch: Batch[tuple[int, ...], Job]) -> None:
        self.metrics.batch_size.observe(len(batch.items))
        self.metrics.batch_wait.observe(batch.waited_s)
        start = self._clock()
        images = [job.decoded for job in batch.items if job.decoded is not None]
        events = [job.event for job in batch.items if job.event is not None]
        assert len(images) == len(events) == len(batch.items)
        # Each event's own aspects and keep-regions, so its crops are placed once, here.
        requests = [CropRequest(event.aspects, event.keep) for event in events]
        results = self.cropper.crop_decoded(images, requests)
        self.metrics.inference.observe(self._clock() - start)
        processed_at = self._wall_ms()
        for job, event, result in zip(batch.items, events, results, strict=True):
            job.decoded = None
            self._account(job)
            if self._on_result is not None:
                self._on_result(event, result)
            value = result_message(event, result, job.source, processed_at)
            headers = [("content-type", b"application/json")]
            key = event.media_id.encode()
            self._publisher.send(
                Outgoing(self.settings.output_topic, key, value, headers, (job, RESULT))
            )

    def _dead_letter(self, job: Job, drop_payload: bool = False) -> None:
        log.warning(
            "dead-lettering event: %s",
            job.error_message,
            extra=fields(error_type=job.error_type, attempts=job.attempts, **job.where()),
        )
        headers = dead_letter_headers(
            job.error_type, job.error_message, job.attempts, job.source, job.headers
        )
        value = None if drop_payload else job.value
        if drop_payload or job.payload_released:
            headers.append(("error.payload_dropped", b"true"))
        topic = self.settings.dead_letter_topic
        self._publisher.send(Outgoing(topic, job.key, value, headers, (job, DEAD_LETTER)))

    def _delivered(self, sent: Outgoing[Delivery], err: KafkaError | None) -> None:
        """A publish finished: acknowledged (err None) or failed permanently."""
        job, kind = sent.context
        if err is not None:
            if kind == RESULT:
                job.error_type, job.error_message = PublishError.code, err.str()
                self._dead_letter(job)
                return
            if sent.value is not None:  # e.g. over the size limit: say why, without the payload
                self._dead_letter(job, drop_payload=True)
                return
            log.error("cannot dead-letter event, skipping it", extra=fields(**job.where()))
        elif kind == RESULT:
            assert job.event is not None
            self.metrics.images.labels("ok").inc()
            self.metrics.end_to_end.observe(max(0, self._wall_ms() - job.event.timestamp_ms) / 1e3)
        else:
            self.metrics.images.labels("dead_letter").inc()
            self.metrics.dead_letters.labels(job.error_type).inc()
        next_offset = self._tracker.ack(job.ticket)
        if next_offset is not None:
            self._store(job.ticket, next_offset)
        self._finish(job)

    def _finish(self, job: Job) -> None:
        self._in_flight -= 1
        self.metrics.in_flight.set(self._in_flight)
        self._in_flight_bytes -= job.counted_bytes
        job.counted_bytes = 0
        self.metrics.in_flight_bytes.set(self._in_flight_bytes)

    def _account(self, job: Job) -> None:
        """Bring the in-flight byte count up to date with what `job` holds now."""
        held = job.held_bytes()
        self._in_flight_bytes += held - job.counted_bytes
        job.counted_bytes = held
        self.metrics.in_flight_bytes.set(self._in_flight_bytes)

    # Offsets, backpressure, rebalancing -----------------------------------------------------

    def _store(self, ticket: Ticket, next_offset: int) -> None:
        assert self._consumer is not None
        try:
            self._consumer.store_offsets(
                offsets=[TopicPartition(ticket.topic, ticket.partition, next_offset)]
            )
            self._commit_due = True
        except KafkaException as exc:  # the partition went away between ack and store
            log.info("offset not stored: %s", exc, extra=fields(partition=ticket.partition))

    def _commit_async(self, now: float) -> None:
        assert self._consumer is not None
        self._commit_due, self._last_commit = False, now
        try:
            self._consumer.commit(asynchronous=True)
        except KafkaException as exc:
            log.info("commit not sent: %s", exc)

    def _commit_now(self) -> None:
        assert self._consumer is not None
        self._commit_due = False
        try:
            self._consumer.commit(asynchronous=False)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError._NO_OFFSET:
                log.warning("commit failed: %s", exc)

    def _backpressure(self) -> None:
        assert self._consumer is not None
        images, size = self.settings.max_in_flight, self.settings.max_in_flight_bytes
        full = self._in_flight >= images or self._in_flight_bytes >= size
        half_empty = self._in_flight <= images // 2 and self._in_flight_bytes <= size // 2
        if not self._paused and full:
            self._consumer.pause(self._consumer.assignment())
            self._paused = True
        elif self._paused and half_empty:
            self._consumer.resume(self._consumer.assignment())
            self._paused = False
        self.metrics.paused.set(1 if self._paused else 0)

    def _drain(self, deadline: float) -> None:
        """Finish everything in the worker (decode, infer, publish) before `deadline`."""
        while self._pending and (left := deadline - self._clock()) > 0:
            self.health.beat()  # draining is bounded by `deadline`: not a hung loop
            concurrent.futures.wait(
                set(self._pending), min(left, 0.05), concurrent.futures.FIRST_COMPLETED
            )
            self._watchdog(self._clock())
            self._collect(self._clock())
        self._collect(self._clock())
        for batch in self._batcher.pop_all(self._clock()):
            self._run_batch(batch)
        if not self._publisher.flush(max(0.0, deadline - self._clock())):
            log.warning(
                "drain timed out; unfinished events will be redelivered",
                extra=fields(unacknowledged=self._publisher.unacknowledged),
            )

    # With the cooperative assignor these callbacks get only the partitions that change owner
    # (incremental); with an eager one, the whole assignment each time.

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("partitions assigned", extra=fields(partitions=_names(partitions)))
        self.health.joined = True
        self._assigned |= {(p.topic, p.partition) for p in partitions}
        self.metrics.assigned.set(len(self._assigned))
        self._paused = False  # new assignments fetch; the next step re-applies backpressure

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("partitions revoked", extra=fields(partitions=_names(partitions)))
        if not self._abandon:
            self._drain(self._deadline or self._clock() + self.settings.shutdown_timeout_s)
            self._commit_now()
        self._forget([(p.topic, p.partition) for p in partitions])

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.warning(
            "partitions lost; dropping their work", extra=fields(partitions=_names(partitions))
        )
        self.health.joined = False  # out of the group until it assigns again
        self._forget([(p.topic, p.partition) for p in partitions])

    def _forget(self, keys: list[PartitionKey]) -> None:
        gone = set(keys)
        self._assigned -= gone
        self.metrics.assigned.set(len(self._assigned))
        for job in self._batcher.remove(lambda job: job.ticket.key in gone):
            self._finish(job)
        self._tracker.drop(keys)
        self.metrics.forget_partitions(keys)

    # Client construction and callbacks ------------------------------------------------------

    def _consumer_config(self) -> dict[str, Any]:
        return {
            **self.settings.consumer_config(),
            "error_cb": self._kafka_error,
            "stats_cb": self._statistics,
            "on_commit": self._committed,
            "logger": logging.getLogger("cropworker.kafka.consumer"),
        }

    def _new_producer(self, error_cb: Callable[[KafkaError], None]) -> ProducerLike:
        return self._producer_factory(
            {
                **self.settings.producer_config(),
                "error_cb": error_cb,
                "logger": logging.getLogger("cropworker.kafka.producer"),
            }
        )

    def _kafka_error(self, err: KafkaError) -> None:
        """The consumer's `error_cb` (and errors in consumed messages). librdkafka recovers from
        all but fatal ones by itself: they are logged, and all-brokers-down marks us unready."""
        level = logging.INFO
        if err.code() == KafkaError._ALL_BROKERS_DOWN:
            self.health.broker_up = False
            level = logging.WARNING
        if err.fatal():
            self._fatal = BrokerError(err.str(), kafka_code=err.code(), kafka_name=err.name())
            level = logging.ERROR
        log.log(level, "consumer error: %s", err.str(), extra=fields(error=err.name()))

    def _statistics(self, stats_json: str) -> None:
        stats = json.loads(stats_json)
        self.metrics.record_statistics(stats)
        brokers = stats.get("brokers", {}).values()
        self.health.broker_up = any(b.get("state") == "UP" for b in brokers)

    def _committed(self, err: KafkaError | None, partitions: list[TopicPartition]) -> None:
        if err is not None and err.code() != KafkaError._NO_OFFSET:
            log.warning("offset commit failed: %s", err.str(), extra=fields(error=err.name()))


def _names(partitions: list[TopicPartition]) -> list[str]:
    return [f"{p.topic}[{p.partition}]" for p in partitions]

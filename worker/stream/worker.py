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

The decisions are pure parts fed the time, each tested without a broker: admission and
backpressure (inflight.py), the poll wait, the watchdog's timing and the commit interval
(schedule.py), batching (batcher.py) and which offsets may be committed (offsets.py). A job's
progress is a typed state (jobs.py). `Worker` holds what is injected; each `run()` creates a
`_Loop` that owns the consumer, the publisher and the decode pool, so none is ever missing.
"""

from __future__ import annotations

import concurrent.futures
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
from .inflight import Flow, InFlight
from .jobs import Cropped, Job, Prepared, Rejected, prepare
from .logs import fields
from .metrics import Health, WorkerMetrics
from .offsets import OffsetTracker, PartitionKey, Ticket
from .pool import DecodePool
from .publish import Outgoing, ProducerLike, Publisher
from .schedule import Commits, Watchdog, poll_wait
from .settings import Settings

log = logging.getLogger(__name__)

Outcome = concurrent.futures.Future[Prepared | Rejected]  # what the decode pool makes of a job


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
        self.consumer_factory = consumer_factory
        self.producer_factory = producer_factory
        self.clock = clock
        self.wall_ms = wall_ms
        self.on_result = on_result
        self.stopping = threading.Event()

    def stop(self) -> None:
        """Ask the loop to drain and exit (safe from a signal handler or another thread)."""
        self.stopping.set()

    def run(self) -> None:
        """Consume, crop and publish until `stop()`; then drain, commit and leave the group."""
        _Loop(self).run()


class _Loop:
    """One run of a worker: its consumer, publisher and decode pool, and what is in flight."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.settings = s = worker.settings
        self.metrics, self.health, self.clock = worker.metrics, worker.health, worker.clock
        self._tracker = OffsetTracker()
        self._batcher: MicroBatcher[tuple[int, ...], Job] = MicroBatcher(
            s.max_batch, s.max_wait_ms / 1000
        )
        self._in_flight: InFlight[Ticket] = InFlight(
            s.max_in_flight, s.max_in_flight_bytes, s.max_message_bytes
        )
        self._watchdog = Watchdog(s.prepare_timeout_s, s.decode_threads)
        self._commits = Commits(s.commit_interval_ms / 1000)
        self._done: queue.SimpleQueue[Outcome] = queue.SimpleQueue()
        self._pending: dict[Outcome, Job] = {}
        self._abandon = False  # set when the loop dies: revocation then commits nothing
        self._deadline: float | None = None  # set at stop(): bounds every drain that follows
        self._fatal: BrokerError | None = None
        self._assigned: set[PartitionKey] = set()
        self.pool = DecodePool(s.decode_threads, "cropworker-decode", self.clock)
        self.publisher: Publisher[Job] = Publisher(self._new_producer, self._delivered, self.clock)
        self.consumer = worker.consumer_factory(self._consumer_config())

    def run(self) -> None:
        s = self.settings
        completed = False
        try:
            self.consumer.subscribe(
                [s.input_topic],
                on_assign=self._on_assign,
                on_revoke=self._on_revoke,
                on_lost=self._on_lost,
            )
            self.health.beat()
            self.health.running = True
            log.info("worker running", extra=fields(settings=s.describe()))
            while not self.worker.stopping.is_set():
                self._step()
            self._deadline = self.clock() + s.shutdown_timeout_s
            self._drain(self._deadline)
            self._commit_now()
            completed = True
        finally:
            self._abandon = not completed
            self.health.running = False
            self.consumer.close()  # revokes (nothing left to drain) and leaves the group
            self.pool.shutdown()
            log.info("worker stopped", extra=fields(unacknowledged=self.publisher.unacknowledged))

    # The loop -------------------------------------------------------------------------------

    def _step(self) -> None:
        self.health.beat()
        for message in self.consumer.consume(self._in_flight.room(), self._wait_time()):
            self._accept(message)
        if self._fatal is not None:
            raise self._fatal
        now = self.clock()
        self._watch(now)
        self._collect(now)
        if batch := self._batcher.pop_ready(now):
            self._run_batch(batch)
        self.publisher.poll(0)
        if self._commits.due(now):
            self._commit_async(now)
        self._backpressure()

    def _wait_time(self) -> float:
        busy = bool(self._pending) or self.publisher.unacknowledged > 0
        ready = not self._done.empty()
        return poll_wait(self.clock(), self._batcher.next_deadline(), ready=ready, busy=busy)

    def _accept(self, message: Message) -> None:
        err = message.error()
        if err is not None:
            self._kafka_error(err)
            return
        topic, partition, offset = message.topic(), message.partition(), message.offset()
        assert topic is not None and partition is not None and offset is not None
        job = Job.from_message(message, self._tracker.track(topic, partition, offset))
        self._hold(job)
        future = self.pool.submit(
            prepare,
            job,
            max_image_bytes=self.settings.max_image_bytes,
            fetcher=self.worker.fetcher,
            cropper=self.worker.cropper,
            metrics=self.metrics,
            clock=self.clock,
        )
        self._pending[future] = job
        future.add_done_callback(self._done.put)

    def _collect(self, now: float) -> None:
        while True:
            try:
                future = self._done.get_nowait()
            except queue.Empty:
                return
            job = self._pending.pop(future, None)
            if job is None:
                continue  # abandoned by the watchdog: already dead-lettered
            outcome = future.result()
            if not self._tracker.is_current(job.ticket):
                self._release(job)  # its partition was lost or revoked meanwhile
            elif isinstance(outcome, Rejected):
                self._reject(job, outcome)
            else:
                job.prepared(outcome)
                self._hold(job)
                self._batcher.add(outcome.image.rgb.shape, job, now)

    def _watch(self, now: float) -> None:
        """Dead-letter the events whose fetch and decode outlasted `prepare_timeout_s`, and
        leave their threads behind (what such a thread returns, if ever, is not looked at)."""
        started_before = self._watchdog.due(now)
        if started_before is None:
            return
        for future in self.pool.overdue(started_before):
            job = self._pending.pop(future, None)
            if job is None:
                continue
            self.pool.abandon(future)
            message = f"fetching and decoding took over {self._watchdog.timeout_s:g} s; given up"
            log.error(
                "event abandoned: %s",
                message,
                extra=fields(threads_stuck=self.pool.stuck, **job.where()),
            )
            if self._tracker.is_current(job.ticket):
                self._reject(job, Rejected(PrepareTimeoutError.code, message))
            else:
                self._release(job)
        stuck = self.pool.stuck
        self.metrics.stuck_threads.set(stuck)
        self.health.threads_ok = self._watchdog.live(stuck)

    def _run_batch(self, batch: Batch[tuple[int, ...], Job]) -> None:
        self.metrics.batch_size.observe(len(batch.items))
        self.metrics.batch_wait.observe(batch.waited_s)
        start = self.clock()
        inputs = [job.to_network() for job in batch.items]
        # Each event's own aspects and keep-regions, so its crops are placed once, here.
        requests = [CropRequest(p.event.aspects, p.event.keep) for p in inputs]
        results = self.worker.cropper.crop_decoded([p.image for p in inputs], requests)
        self.metrics.inference.observe(self.clock() - start)
        processed_at = self.worker.wall_ms()
        for job, prepared, result in zip(batch.items, inputs, results, strict=True):
            self._hold(job)
            event = prepared.event
            if self.worker.on_result is not None:
                self.worker.on_result(event, result)
            value = result_message(event, result, job.source, processed_at)
            headers = [("content-type", b"application/json")]
            key = event.media_id.encode()
            self.publisher.send(Outgoing(self.settings.output_topic, key, value, headers, job))

    def _reject(self, job: Job, rejected: Rejected) -> None:
        job.reject(rejected)
        self._hold(job)
        self._dead_letter(job, rejected)

    def _dead_letter(self, job: Job, rejected: Rejected, drop_payload: bool = False) -> None:
        log.warning(
            "dead-lettering event: %s",
            rejected.message,
            extra=fields(error_type=rejected.code, attempts=rejected.attempts, **job.where()),
        )
        headers = dead_letter_headers(
            rejected.code, rejected.message, rejected.attempts, job.source, job.headers
        )
        value = None if drop_payload else job.value
        if drop_payload or job.payload_released:
            headers.append(("error.payload_dropped", b"true"))
        topic = self.settings.dead_letter_topic
        self.publisher.send(Outgoing(topic, job.key, value, headers, job))

    def _delivered(self, sent: Outgoing[Job], err: KafkaError | None) -> None:
        """A publish finished: acknowledged (err None) or failed permanently. What was sent is
        the job's result if it is Cropped, its dead letter if it is Rejected."""
        job, state = sent.context, sent.context.state
        if err is not None and isinstance(state, Cropped):
            self._reject(job, Rejected(PublishError.code, err.str(), state.attempts))
            return
        if err is not None and isinstance(state, Rejected) and sent.value is not None:
            self._dead_letter(job, state, drop_payload=True)  # e.g. over the size limit: say why
            return
        if err is not None:
            log.error("cannot dead-letter event, skipping it", extra=fields(**job.where()))
        elif isinstance(state, Cropped):
            self.metrics.images.labels("ok").inc()
            waited_ms = self.worker.wall_ms() - state.event.timestamp_ms
            self.metrics.end_to_end.observe(max(0, waited_ms) / 1e3)
        elif isinstance(state, Rejected):
            self.metrics.images.labels("dead_letter").inc()
            self.metrics.dead_letters.labels(state.code).inc()
        next_offset = self._tracker.ack(job.ticket)
        if next_offset is not None:
            self._store(job.ticket, next_offset)
        self._release(job)

    def _hold(self, job: Job) -> None:
        """Count `job` in flight with what it holds now (admitted, or it let go of bytes)."""
        self._in_flight.hold(job.ticket, job.held_bytes())
        self._show_in_flight()

    def _release(self, job: Job) -> None:
        self._in_flight.release(job.ticket)
        self._show_in_flight()

    def _show_in_flight(self) -> None:
        self.metrics.in_flight.set(self._in_flight.images)
        self.metrics.in_flight_bytes.set(self._in_flight.bytes)

    # Offsets, backpressure, rebalancing -----------------------------------------------------

    def _store(self, ticket: Ticket, next_offset: int) -> None:
        try:
            self.consumer.store_offsets(
                offsets=[TopicPartition(ticket.topic, ticket.partition, next_offset)]
            )
            self._commits.stored()
        except KafkaException as exc:  # the partition went away between ack and store
            log.info("offset not stored: %s", exc, extra=fields(partition=ticket.partition))

    def _commit_async(self, now: float) -> None:
        self._commits.sent(now)
        try:
            self.consumer.commit(asynchronous=True)
        except KafkaException as exc:
            log.info("commit not sent: %s", exc)

    def _commit_now(self) -> None:
        self._commits.sent(self.clock())
        try:
            self.consumer.commit(asynchronous=False)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError._NO_OFFSET:
                log.warning("commit failed: %s", exc)

    def _backpressure(self) -> None:
        flow = self._in_flight.flow()
        if flow is Flow.PAUSE:
            self.consumer.pause(self.consumer.assignment())
        elif flow is Flow.RESUME:
            self.consumer.resume(self.consumer.assignment())
        self.metrics.paused.set(1 if self._in_flight.paused else 0)

    def _drain(self, deadline: float) -> None:
        """Finish everything in the worker (decode, infer, publish) before `deadline`."""
        while self._pending and (left := deadline - self.clock()) > 0:
            self.health.beat()  # draining is bounded by `deadline`: not a hung loop
            concurrent.futures.wait(
                set(self._pending), min(left, 0.05), concurrent.futures.FIRST_COMPLETED
            )
            self._watch(self.clock())
            self._collect(self.clock())
        self._collect(self.clock())
        for batch in self._batcher.pop_all(self.clock()):
            self._run_batch(batch)
        if not self.publisher.flush(max(0.0, deadline - self.clock())):
            log.warning(
                "drain timed out; unfinished events will be redelivered",
                extra=fields(unacknowledged=self.publisher.unacknowledged),
            )

    # With the cooperative assignor these callbacks get only the partitions that change owner
    # (incremental); with an eager one, the whole assignment each time.

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("partitions assigned", extra=fields(partitions=_names(partitions)))
        self.health.joined = True
        self._assigned |= {(p.topic, p.partition) for p in partitions}
        self.metrics.assigned.set(len(self._assigned))
        self._in_flight.assigned()  # the next step re-applies backpressure

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("partitions revoked", extra=fields(partitions=_names(partitions)))
        if not self._abandon:
            self._drain(self._deadline or self.clock() + self.settings.shutdown_timeout_s)
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
            self._release(job)
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
        return self.worker.producer_factory(
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

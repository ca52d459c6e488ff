"""Prometheus metrics of the worker and the HTTP server for /metrics, /healthz and /readyz.

Every metric is registered on the `CollectorRegistry` passed in, so tests (and two workers in
one process) use fresh registries. Names start with `cropworker_`. Consumer lag per partition
comes from librdkafka's statistics (`consumer_lag`, from Fetch high watermarks): ListOffsets-based
lag is wrong against the embedded broker (docs/notes.md#embedded-broker) and costs a request per
partition.
"""

from __future__ import annotations

import contextlib
import json
import logging
import platform
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import metadata
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from ..errors import error_codes

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.3, 0.5, 0.75, 1, 2.5, 5, 10)
STAGE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10)
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32)


class WorkerMetrics:
    def __init__(self, registry: CollectorRegistry, model: str = "") -> None:
        self.registry = registry
        self.images = Counter(
            "cropworker_images_processed",
            "Uploads finished, by result (ok: crops published; dead_letter)",
            ["result"],
            registry=registry,
        )
        self.dead_letters = Counter(
            "cropworker_dead_letters",
            "Events published to the dead-letter topic, by error type",
            ["type"],
            registry=registry,
        )
        # Every series exists from the start at 0, so that increase() and rate() count the
        # first upload of each result and the first dead letter of each type after a restart.
        for result in ("ok", "dead_letter"):
            self.images.labels(result)
        for code in sorted(error_codes()):
            self.dead_letters.labels(code)
        self.end_to_end = Histogram(
            "cropworker_end_to_end_latency_seconds",
            "Event timestamp to result acknowledged by the broker",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.fetch = _stage("fetch", "Fetching an image reference", registry)
        self.decode = _stage("decode", "Decoding an image to the network input", registry)
        self.inference = _stage("inference", "Network and crop geometry for a batch", registry)
        self.batch_wait = _stage("batch_wait", "Oldest image's wait for its batch", registry)
        self.batch_size = Histogram(
            "cropworker_batch_size",
            "Images per inference batch",
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self.in_flight = Gauge(
            "cropworker_in_flight_images",
            "Images consumed and not yet finished",
            registry=registry,
        )
        self.in_flight_bytes = Gauge(
            "cropworker_in_flight_bytes",
            "Bytes held by in-flight images: encoded messages until decoded, then network inputs",
            registry=registry,
        )
        self.stuck_threads = Gauge(
            "cropworker_decode_threads_stuck",
            "Fetch/decode threads still running an event given up on after prepare_timeout_s",
            registry=registry,
        )
        self.paused = Gauge(
            "cropworker_partitions_paused",
            "1 while input partitions are paused for backpressure",
            registry=registry,
        )
        self.assigned = Gauge(
            "cropworker_partitions_assigned",
            "Input partitions this worker owns (0 before the group assigns any, and after a loss)",
            registry=registry,
        )
        self.ready = Gauge(
            "cropworker_ready",
            "1 while /readyz answers 200 (live, running, in the group, a broker up), else 0",
            registry=registry,
        )
        self.heartbeat = Gauge(
            "cropworker_loop_heartbeat_timestamp_seconds",
            "Unix time of the consume/infer loop's last turn (0 before it starts)",
            registry=registry,
        )
        self.lag = Gauge(
            "cropworker_consumer_lag",
            "Messages behind the high watermark, per assigned partition (librdkafka statistics)",
            ["topic", "partition"],
            registry=registry,
        )
        build = Gauge(
            "cropworker_build_info",
            "Version of cropworker and of its Kafka client",
            ["version", "python", "librdkafka"],
            registry=registry,
        )
        build.labels(_version(), platform.python_version(), _librdkafka()).set(1)
        self.model = Gauge(
            "cropworker_model_info", "The saliency model served", ["model"], registry=registry
        )
        if model:
            self.model.labels(model).set(1)

    def watch(self, health: Health) -> None:
        """Read readiness and the loop's heartbeat from `health` at every scrape."""
        self.ready.set_function(lambda: 1.0 if health.ready else 0.0)
        self.heartbeat.set_function(health.heartbeat_unix)

    def record_statistics(self, stats: dict[str, Any]) -> None:
        """Update lag gauges from a librdkafka statistics document (parsed `stats_cb` JSON)."""
        for topic, t in stats.get("topics", {}).items():
            for partition, p in t.get("partitions", {}).items():
                if partition == "-1" or not p.get("desired"):
                    continue  # -1 is librdkafka's internal unassigned partition
                # consumer_lag counts from the committed offset; before the first commit it is
                # -1, and the distance from the consumed position is the best estimate.
                lag = p.get("consumer_lag", -1)
                if lag < 0 and p.get("hi_offset", -1) >= 0 and p.get("app_offset", -1) >= 0:
                    lag = p["hi_offset"] - p["app_offset"]
                if lag >= 0:
                    self.lag.labels(topic, partition).set(lag)

    def forget_partitions(self, partitions: list[tuple[str, int]]) -> None:
        for topic, partition in partitions:
            with contextlib.suppress(KeyError):
                self.lag.remove(topic, str(partition))


def _stage(name: str, what: str, registry: CollectorRegistry) -> Histogram:
    return Histogram(f"cropworker_{name}_seconds", what, buckets=STAGE_BUCKETS, registry=registry)


def _version() -> str:
    try:
        return metadata.version("cropworker")
    except metadata.PackageNotFoundError:
        return "unknown"


def _librdkafka() -> str:
    try:
        import confluent_kafka

        return str(confluent_kafka.libversion()[0])
    except ImportError:
        return "none"


@dataclass
class Health:
    """What /healthz and /readyz answer. The worker sets these from its loop.

    Live: fewer decode threads stuck than the pool has, and the consume/infer loop has turned
    within `loop_timeout_s` (a hung poll, inference or publish fails it; the loop is not watched
    before it starts, while the model loads). Ready: live, running, holding an assignment from
    the group (possibly empty: more workers than partitions), and a broker up.
    """

    threads_ok: bool = True  # fewer decode threads stuck than the pool has
    running: bool = False  # the consumer loop is polling
    joined: bool = False  # the group gave this member an assignment; reset when it is lost
    broker_up: bool = True
    loop_timeout_s: float = 60.0
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)
    last_turn: float | None = None  # clock() at the loop's last turn; None before it starts

    def beat(self) -> None:
        self.last_turn = self.clock()

    def loop_age(self) -> float | None:
        """Seconds since the loop last turned, while it runs; else None."""
        if not self.running or self.last_turn is None:
            return None
        return self.clock() - self.last_turn

    def heartbeat_unix(self) -> float:
        if self.last_turn is None:
            return 0.0
        return time.time() - (self.clock() - self.last_turn)

    @property
    def live(self) -> bool:
        age = self.loop_age()
        return self.threads_ok and (age is None or age <= self.loop_timeout_s)

    @property
    def ready(self) -> bool:
        return self.live and self.running and self.joined and self.broker_up

    def describe(self) -> dict[str, bool | float | None]:
        age = self.loop_age()
        return {
            "live": self.live,
            "threads_ok": self.threads_ok,
            "loop_age_s": None if age is None else round(age, 3),
            "running": self.running,
            "joined": self.joined,
            "broker_up": self.broker_up,
            "ready": self.ready,
        }


class MetricsServer:
    """/metrics (Prometheus text format), /healthz (200 while live), /readyz (200 when ready),
    served from a daemon thread. The port is bound at `start()`, not before (a worker that is
    built but never served holds none); port 0 picks a free one, `.port` then tells which."""

    def __init__(self, registry: CollectorRegistry, health: Health, host: str, port: int) -> None:
        self.registry, self.health, self.host, self.port = registry, health, host, port
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("", "0.0.0.0") else self.host
        return f"http://{host}:{self.port}/metrics"

    def start(self) -> MetricsServer:
        self._server = ThreadingHTTPServer(
            (self.host, self.port), _handler(self.registry, self.health)
        )
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="cropworker-metrics", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the port (nothing to do when never started)."""
        if self._server is None or self._thread is None:
            return
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
        self._server = self._thread = None


def _handler(registry: CollectorRegistry, health: Health) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?")[0]
            if path == "/metrics":
                self._send(200, generate_latest(registry), CONTENT_TYPE_LATEST)
            elif path in ("/healthz", "/readyz"):
                ok = health.live if path == "/healthz" else health.ready
                body = json.dumps(health.describe()).encode()
                self._send(200 if ok else 503, body, "application/json")
            else:
                self._send(404, b"not found\n", "text/plain")

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("http %s", format % args)

    return Handler

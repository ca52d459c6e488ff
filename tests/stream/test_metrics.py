from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry

from cropworker.errors import error_codes
from cropworker.stream.logs import JsonFormatter, fields
from cropworker.stream.metrics import Health, MetricsServer, WorkerMetrics

STATS = {
    "topics": {
        "uploads": {
            "partitions": {
                "0": {"desired": True, "consumer_lag": 7, "hi_offset": 20, "app_offset": 15},
                "1": {"desired": True, "consumer_lag": -1, "hi_offset": 9, "app_offset": 4},
                "2": {"desired": False, "consumer_lag": 3},
                "-1": {"desired": False, "consumer_lag": 100},
            }
        }
    }
}


def test_lag_from_librdkafka_statistics() -> None:
    registry = CollectorRegistry()
    metrics = WorkerMetrics(registry, model="vanilla@1")
    metrics.record_statistics(STATS)

    def lag(partition: str) -> float | None:
        return registry.get_sample_value(
            "cropworker_consumer_lag", {"topic": "uploads", "partition": partition}
        )

    assert lag("0") == 7
    assert lag("1") == 5  # not committed yet: distance from the consumed position
    assert lag("2") is None and lag("-1") is None
    metrics.forget_partitions([("uploads", 0), ("uploads", 3)])
    assert lag("0") is None and lag("1") == 5
    assert registry.get_sample_value("cropworker_model_info", {"model": "vanilla@1"}) == 1


@pytest.fixture
def served() -> Iterator[tuple[MetricsServer, Health]]:
    registry = CollectorRegistry()
    WorkerMetrics(registry).images.labels("ok").inc(3)
    health = Health()
    server = MetricsServer(registry, health, "127.0.0.1", 0).start()
    yield server, health
    server.stop()


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read().decode()


def test_metrics_health_and_readiness_endpoints(served: tuple[MetricsServer, Health]) -> None:
    server, health = served
    base = server.url.removesuffix("/metrics")
    status, text = get(server.url)
    assert status == 200
    assert 'cropworker_images_processed_total{result="ok"} 3.0' in text
    assert "cropworker_build_info{" in text
    assert get(f"{base}/healthz")[0] == 200
    status, body = get(f"{base}/readyz")
    assert status == 503 and json.loads(body)["joined"] is False
    health.running = health.joined = True
    assert get(f"{base}/readyz")[0] == 200
    health.broker_up = False
    assert get(f"{base}/readyz")[0] == 503
    assert get(f"{base}/nope")[0] == 404


def test_json_logs_carry_their_fields() -> None:
    record = logging.LogRecord(
        "cropworker.x", logging.WARNING, "f.py", 1, "dead letter %s", ("x",), None
    )
    record.__dict__.update(fields(partition=3, error_type="corrupt"))
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "dead letter x" and line["level"] == "warning"
    assert line["partition"] == 3 and line["error_type"] == "corrupt"
    assert line["logger"] == "cropworker.x" and line["time"].endswith("+00:00")


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_liveness_follows_the_loop_heartbeat_and_the_decode_threads() -> None:
    clock = FakeClock()
    health = Health(loop_timeout_s=30, clock=clock)
    registry = CollectorRegistry()
    WorkerMetrics(registry).watch(health)
    clock.now = 1000.0  # loading a model takes what it takes: not watched before the loop runs
    assert health.live and health.describe()["loop_age_s"] is None
    health.beat()
    health.running = health.joined = True
    assert health.ready and registry.get_sample_value("cropworker_ready") == 1
    clock.now += 30
    assert health.live
    clock.now += 0.5  # the loop has not turned for longer than loop_timeout_s
    assert not health.live and not health.ready
    assert registry.get_sample_value("cropworker_ready") == 0
    beat = registry.get_sample_value("cropworker_loop_heartbeat_timestamp_seconds")
    assert beat is not None and abs(time.time() - 30.5 - beat) < 1
    health.beat()
    assert health.live
    health.threads_ok = False
    assert not health.live
    health.threads_ok, health.running = True, False  # stopped: no loop to watch
    clock.now += 1000
    assert health.live and not health.ready


def test_result_and_dead_letter_series_exist_from_the_start() -> None:
    """increase() and rate() need a 0 before the first increment: each result and every error
    type of the tree is exported at 0 before anything happens."""
    registry = CollectorRegistry()
    WorkerMetrics(registry)
    for result in ("ok", "dead_letter"):
        assert (
            registry.get_sample_value("cropworker_images_processed_total", {"result": result}) == 0
        )
    codes = error_codes()
    assert {"corrupt", "timeout", "publish_failed", "internal_error"} <= codes
    for code in codes:
        assert registry.get_sample_value("cropworker_dead_letters_total", {"type": code}) == 0

"""A real Prometheus (Debian's `prometheus`, on loopback) scrapes a real worker process
(`python -m cropworker run` on the embedded broker) every second, with the chart's
PrometheusRule loaded, while a few uploads go through. Then, through Prometheus' HTTP API: every
rule group loads and evaluates without error, the healthy worker trips no alert (not even
pending), the series the alerts hinge on carry the labels they expect, and every dashboard
query returns data."""

from __future__ import annotations

import json
import math
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from confluent_kafka import Producer

from cropworker.demo.broker import EmbeddedBroker, free_port
from cropworker.stream.events import upload_event
from tests.benchmarks.conftest import load
from tests.stream.conftest import new_topics, settings_for, small_jpeg

from .conftest import NAMESPACE, RELEASE, tool
from .test_monitoring import EXTERNAL, GRAFANA_VARIABLES, PROMTOOL, RULE_VALUES, dashboard_queries

pytestmark = [pytest.mark.deploy, pytest.mark.broker]

JOB = f"{RELEASE}-cropworker"  # the job the chart's ServiceMonitor gives the workers
SCRAPE = "1s"
WAVE = 6  # uploads per wave: 5 good ones and a corrupt one (a dead letter, cause content)
TIMEOUT_S = 45.0
# Dashboard queries that cannot return data here: they read kube-state-metrics' view of the
# Deployment and of KEDA's HPA (the Replicas panel), and no cluster runs here.
NEEDS_KUBE_STATE_METRICS = 3


class Prometheus:
    def __init__(self, binary: str, directory: Path, rules: dict[str, Any], target: str) -> None:
        self.port = free_port()
        (directory / "rules.yaml").write_text(yaml.safe_dump(rules))
        config = {
            "global": {"scrape_interval": SCRAPE, "evaluation_interval": SCRAPE},
            "rule_files": ["rules.yaml"],
            "scrape_configs": [
                {
                    "job_name": JOB,
                    # what Kubernetes service discovery would add
                    "static_configs": [
                        {"targets": [target], "labels": {"namespace": NAMESPACE, "pod": "w-0"}}
                    ],
                }
            ],
        }
        (directory / "prometheus.yaml").write_text(yaml.safe_dump(config))
        self.log = directory / "prometheus.log"
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [
                    binary,
                    f"--config.file={directory / 'prometheus.yaml'}",
                    f"--storage.tsdb.path={directory / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--log.level=warn",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def api(self, path: str, **params: str) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}{query}"
        with urllib.request.urlopen(url, timeout=5) as response:
            body = json.load(response)
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.api("query", query=expr)["result"]
        return result

    def total(self, expr: str) -> float:
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else 0.0

    def up(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=1):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


def wait_for(check: Callable[[], bool], what: str, deadline: float, logs: list[Path]) -> None:
    while not check():
        if time.monotonic() > deadline:
            tails = {str(p): p.read_text()[-1500:] for p in logs if p.exists()}
            pytest.fail(f"timed out waiting for {what}: {tails}")
        time.sleep(0.1)


@pytest.fixture
def prometheus_rules(render: Any) -> dict[str, Any]:
    """The groups of the chart's PrometheusRule (the rules file plus the release's group)."""
    rule = render(RULE_VALUES).one("PrometheusRule")
    return {"groups": rule["spec"]["groups"]}


@pytest.fixture
def running(
    broker: EmbeddedBroker, tmp_path: Path, prometheus_rules: dict[str, Any]
) -> Iterator[tuple[Any, Prometheus, str]]:
    """A worker process and a Prometheus scraping it, started side by side."""
    binary = tool("prometheus", PROMTOOL)
    topics = new_topics(broker.bootstrap)
    settings = settings_for(broker.bootstrap, topics, model="vanilla", log_format="json")
    worker = load("faults").WorkerProcess(settings, tmp_path / "worker.log")
    try:
        prometheus = Prometheus(binary, tmp_path, prometheus_rules, f"127.0.0.1:{worker.port}")
        try:
            yield worker, prometheus, topics.input
        finally:
            prometheus.stop()
    finally:
        worker.terminate()


def send_wave(bootstrap: str, topic: str, wave: int) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    now_ms = time.time_ns() // 1_000_000
    for i in range(WAVE - 1):
        key = f"w{wave}-{i}"
        producer.produce(topic, upload_event(key, now_ms, data=small_jpeg(10 * wave + i)), key)
    corrupt = small_jpeg(99)[:300]  # a truncated JPEG
    producer.produce(topic, upload_event(f"w{wave}-bad", now_ms, data=corrupt), f"w{wave}-bad")
    assert producer.flush(10) == 0


@pytest.mark.slow
def test_prometheus_evaluates_the_rules_and_the_dashboard_on_a_live_worker(
    broker: EmbeddedBroker, running: tuple[Any, Prometheus, str], prometheus_rules: dict[str, Any]
) -> None:
    worker, prometheus, topic = running
    logs = [worker.log, prometheus.log]
    deadline = time.monotonic() + TIMEOUT_S
    wait_for(lambda: worker.ready() and prometheus.up(), "worker and Prometheus", deadline, logs)
    wait_for(lambda: prometheus.total(f'up{{job="{JOB}"}}') == 1, "a scrape", deadline, logs)

    # Two waves, each seen by Prometheus before the next: rates need an increase between two
    # scrapes, and the counters of a label value appear only at its first increment.
    processed = f'sum(cropworker_images_processed_total{{job="{JOB}"}})'
    for wave in (1, 2):
        send_wave(broker.bootstrap, topic, wave)
        seen = lambda done=wave * WAVE: prometheus.total(processed) >= done  # noqa: E731
        wait_for(seen, f"wave {wave}", deadline, logs)
    time.sleep(2.5)  # two more rule evaluations over the full data

    groups = prometheus.api("rules")["groups"]
    assert sorted(g["name"] for g in groups) == sorted(
        g["name"] for g in prometheus_rules["groups"]
    )
    for group in groups:
        for rule in group["rules"]:
            assert rule["health"] == "ok" and not rule.get("lastError"), (group["name"], rule)
    active = [(a["labels"]["alertname"], a["state"]) for a in prometheus.api("alerts")["alerts"]]
    assert active == [], "a healthy worker trips no alert"

    # the series the alerts hinge on, with the labels the rules group by
    where = f'namespace="{NAMESPACE}",job="{JOB}"'
    assert prometheus.total(f"cropworker_partitions_assigned{{{where}}}") > 0
    assert prometheus.total(f"cropworker_ready{{{where}}}") == 1
    assert prometheus.total(f"time() - cropworker_loop_heartbeat_timestamp_seconds{{{where}}}") < 5
    assert prometheus.total(f'cropworker:dead_letters:increase15m{{{where},cause="content"}}') > 0

    skipped = []
    for query in dashboard_queries():
        if any(name in query for name in EXTERNAL):
            skipped.append(query)
            continue
        for variable, value in GRAFANA_VARIABLES.items():
            query = query.replace(variable, value)
        values = [float(sample["value"][1]) for sample in prometheus.query(query)]
        assert any(math.isfinite(v) for v in values), f"no data for {query}: {values}"
    assert len(skipped) == NEEDS_KUBE_STATE_METRICS, skipped

"""Streaming worker throughput, end-to-end latency and memory, with the embedded broker.

One worker process (`python -m cropworker run`, the shipped model, default settings) consumes
upload events that reference camera-like 1200x900 JPEGs (`file://`, as an upload service would
reference object storage); this process produces the events and reads the results.

- backlog: `--backlog-s` seconds' worth of uploads at the target rate are queued at once and
  drained; uploads/s sustained is measured between the first and the last result, and the
  worker's RSS is sampled meanwhile (flat: the end within 10% of the start).
- steady: uploads offered at `--rate` (default half the target) for `--steady-s` seconds;
  end-to-end latency is event timestamp to result received here (so it includes this reader's
  fetch, a little more than the worker's own event-to-acknowledged histogram).

    python benchmarks/worker_throughput.py [--backlog-s 8] [--steady-s 20] [--rate 75]
    python benchmarks/worker_throughput.py --backlog-s 600   # the 10-minute backlog RSS check
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from crop_speed import camera_like_jpeg

from cropworker.stream.broker import EmbeddedBroker, create_topics, free_port
from cropworker.stream.events import upload_event
from cropworker.stream.settings import EMBEDDED_SESSION_TIMEOUT_MS

TARGET_RATE = 150.0  # uploads/s sustained
TARGET_P99_MS = 250.0  # at half the target rate
PARTITIONS = 4
DISTINCT_IMAGES = 8
RSS_FLAT_TOLERANCE = 0.10


@dataclass
class Results:
    """Results seen by the reader thread: media id -> (received at, ms since epoch)."""

    received: dict[str, float] = field(default_factory=dict)
    timestamps: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, prefix: str) -> int:
        with self.lock:
            return sum(1 for key in self.received if key.startswith(prefix))


def read_results(bootstrap: str, topic: str, results: Results, stop: threading.Event) -> None:
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "bench-reader", "fetch.wait.max.ms": 5}
    )
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
    while not stop.is_set():
        for message in consumer.consume(500, 0.05):
            if message.error() is None:
                now = time.time() * 1000
                doc = json.loads(message.value() or b"{}")
                with results.lock:
                    results.received.setdefault(doc["media_id"], now)
                    results.timestamps[doc["media_id"]] = doc["timestamp_ms"]
    consumer.close()


def send(producer: Producer, topic: str, media_id: str, url: str) -> None:
    event = upload_event(media_id, time.time_ns() // 1_000_000, url=url)
    while True:
        try:
            producer.produce(topic, event, media_id.encode())
            producer.poll(0)
            return
        except BufferError:
            producer.poll(0.05)


def wait_for(results: Results, prefix: str, count: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while results.count(prefix) < count:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def start_worker(
    bootstrap: str, image_dir: Path, args: argparse.Namespace
) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    env = {
        "CROPWORKER_BROKERS": bootstrap,
        "CROPWORKER_GROUP_ID": "bench",
        "CROPWORKER_SESSION_TIMEOUT_MS": str(EMBEDDED_SESSION_TIMEOUT_MS),
        "CROPWORKER_FILE_ROOT": str(image_dir),
        "CROPWORKER_METRICS_HOST": "127.0.0.1",
        "CROPWORKER_METRICS_PORT": str(port),
        "CROPWORKER_MODEL": args.model,
        "CROPWORKER_LOG_LEVEL": "WARNING",
    }
    worker = subprocess.Popen(
        [sys.executable, "-m", "cropworker", "run"], env={**os.environ, **env}
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1):
                return worker, port
        except OSError:
            time.sleep(0.2)
    worker.kill()
    raise SystemExit("the worker did not become ready")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backlog-s", type=float, default=8.0)
    parser.add_argument("--steady-s", type=float, default=20.0)
    parser.add_argument("--rate", type=float, default=TARGET_RATE / 2)
    parser.add_argument("--model", default="vanilla")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp, EmbeddedBroker() as broker:
        image_dir = Path(tmp)
        urls = []
        for seed in range(DISTINCT_IMAGES):
            path = image_dir / f"photo{seed}.jpg"
            path.write_bytes(camera_like_jpeg(1200, 900, seed))
            urls.append(path.as_uri())
        create_topics(broker.bootstrap, {"uploads": PARTITIONS, "crops": PARTITIONS})
        worker, _ = start_worker(broker.bootstrap, image_dir, args)
        results, stop = Results(), threading.Event()
        reader = threading.Thread(
            target=read_results, args=(broker.bootstrap, "crops", results, stop), daemon=True
        )
        reader.start()
        producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 2})
        try:
            for i in range(40):
                send(producer, "uploads", f"warm-{i}", urls[i % len(urls)])
            producer.flush(10)
            assert wait_for(results, "warm-", 40, 120), "warm-up did not finish"
            backlog = drain_backlog(producer, results, worker.pid, urls, args)
            steady = steady_rate(producer, results, urls, args)
        finally:
            stop.set()
            worker.send_signal(signal.SIGTERM)
            worker.wait(60)
    report(backlog, steady, args)


@dataclass
class Backlog:
    uploads: int
    rate: float
    rss: list[float]


def drain_backlog(
    producer: Producer, results: Results, pid: int, urls: list[str], args: argparse.Namespace
) -> Backlog:
    count = int(TARGET_RATE * args.backlog_s)
    for i in range(count):
        send(producer, "uploads", f"backlog-{i}", urls[i % len(urls)])
    producer.flush(60)
    rss: list[float] = []
    while results.count("backlog-") < count:
        rss.append(rss_mb(pid))
        time.sleep(0.5)
    with results.lock:
        times = sorted(t for k, t in results.received.items() if k.startswith("backlog-"))
    rate = (len(times) - 1) / ((times[-1] - times[0]) / 1000) if len(times) > 1 else 0.0
    return Backlog(count, rate, rss)


@dataclass
class Steady:
    offered: float
    achieved: float
    latencies_ms: list[float]


def steady_rate(
    producer: Producer, results: Results, urls: list[str], args: argparse.Namespace
) -> Steady:
    count = int(args.rate * args.steady_s)
    start = time.monotonic()
    for i in range(count):
        time.sleep(max(0.0, start + i / args.rate - time.monotonic()))
        send(producer, "uploads", f"steady-{i}", urls[i % len(urls)])
    producer.flush(10)
    offered = count / (time.monotonic() - start)
    wait_for(results, "steady-", count, 120)
    with results.lock:
        keys = [k for k in results.received if k.startswith("steady-")]
        latencies = [results.received[k] - results.timestamps[k] for k in keys]
        received = sorted(results.received[k] for k in keys)
    achieved = len(received) / ((received[-1] - received[0]) / 1000 + 1 / args.rate)
    return Steady(offered, achieved, latencies)


def report(backlog: Backlog, steady: Steady, args: argparse.Namespace) -> None:
    lat = steady.latencies_ms
    p50, p95, p99 = (percentile(lat, q) for q in (0.5, 0.95, 0.99))
    print(
        f"cropworker streaming worker, model {args.model}, embedded broker (tansu), "
        f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}, "
        f"load average before the run {os.getloadavg()[0]:.2f}\n"
    )
    print(f"  {'measure':<46} {'value':>10} {'target':>12} {'ratio':>7}")
    rows = [
        (f"uploads/s sustained (backlog of {backlog.uploads})", backlog.rate, TARGET_RATE, "x"),
        (f"offered uploads/s (steady, {args.steady_s:.0f} s)", steady.offered, args.rate, ""),
        ("achieved uploads/s (steady)", steady.achieved, args.rate, "x"),
        ("end-to-end latency p50 ms (steady)", p50, TARGET_P99_MS, ""),
        ("end-to-end latency p95 ms (steady)", p95, TARGET_P99_MS, ""),
        ("end-to-end latency p99 ms (steady)", p99, TARGET_P99_MS, "x"),
    ]
    for name, value, target, show in rows:
        ratio = f"{value / target:7.2f}" if show else ""
        print(f"  {name:<46} {value:10.1f} {target:12.1f} {ratio:>7}")
    rss = backlog.rss or [float("nan")]
    tenth = max(1, len(rss) // 10)
    start, end = statistics.mean(rss[:tenth]), statistics.mean(rss[-tenth:])
    flat = end <= start * (1 + RSS_FLAT_TOLERANCE)
    print(
        f"\n  worker RSS while draining the backlog ({len(rss)} samples, every 0.5 s): "
        f"start {start:.0f} MB, peak {max(rss):.0f} MB, end {end:.0f} MB, "
        f"end/start {end / start:.2f} ({'flat' if flat else 'GROWING'})"
    )
    print(
        f"  targets: >= {TARGET_RATE:.0f} uploads/s (ratio >= 1 meets it); p99 <= "
        f"{TARGET_P99_MS:.0f} ms at {TARGET_RATE / 2:.0f}/s (ratio <= 1 meets it)"
    )


if __name__ == "__main__":
    main()

"""Streaming worker throughput, latency, scaling and capacity, with the embedded broker.

Worker processes (`python -m cropworker run`, the model of `--model`) consume upload events that
reference camera-like 1200x900 JPEGs (`file://`, as an upload service would reference object
storage); this process produces the events and reads the results. Every scenario has its own
input topic, consumer group and fresh worker processes.

- batch sweep: one worker per `--max-batch` value; a backlog (`--backlog-s` seconds' worth at the
  target rate) is queued at once and drained: uploads/s sustained (first to last result), the
  mean batch the worker formed, the CPU cores it kept busy, its RSS (flat: the end within 10% of
  the start).
- offered rates: the default-batch worker then gets uploads at fractions of its own sustained
  rate (and at half the target rate, where that is below it), `--steady-s` each: achieved rate
  and end-to-end latency percentiles (event timestamp to result received here, so a little more
  than the worker's own event-to-acknowledged histogram).
- processes: two workers in one group on this machine drain the same backlog: uploads/s, and
  how close that is to twice one worker.
- capacity: replicas for 1, 10 and 100 million uploads a day at `--peak-to-average`, each
  replica planned at `--utilisation` of its sustained rate.

    python benchmarks/worker_throughput.py --quick        # about a minute
    python benchmarks/worker_throughput.py                # about five minutes
    python benchmarks/worker_throughput.py --backlog-s 600 --batches 8 --loads "" --no-pair
                                                          # the 10-minute backlog RSS check
"""

from __future__ import annotations

import argparse
import json
import math
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
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from crop_speed import RESULTS, camera_like_jpeg

from cropworker.backend import DEFAULT_MODEL
from cropworker.demo.broker import EmbeddedBroker, create_topics, free_port
from cropworker.stream.events import upload_event
from cropworker.stream.settings import EMBEDDED_SESSION_TIMEOUT_MS

TARGET_RATE = 150.0  # uploads/s sustained by one worker
TARGET_P99_MS = 250.0  # at half the target rate
PARTITIONS = 4
DISTINCT_IMAGES = 8
WARM_UP = 40
RSS_FLAT_TOLERANCE = 0.10
DEFAULT_BATCH = 8  # the worker's own default --max-batch
DAILY_VOLUMES = (1_000_000, 10_000_000, 100_000_000)
SECONDS_PER_DAY = 86_400
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
BATCHES_METRIC, IMAGES_METRIC = "cropworker_batch_size_count", "cropworker_batch_size_sum"
LATENCY_METRIC = "cropworker_end_to_end_latency_seconds"


@dataclass
class Results:
    """Results seen by the reader thread: media id -> (received at, ms since epoch)."""

    received: dict[str, float] = field(default_factory=dict)
    timestamps: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, prefix: str) -> int:
        with self.lock:
            return sum(1 for key in self.received if key.startswith(prefix))

    def times(self, prefix: str) -> list[float]:
        with self.lock:
            return sorted(t for k, t in self.received.items() if k.startswith(prefix))

    def latencies(self, prefix: str) -> list[float]:
        with self.lock:
            return [
                t - self.timestamps[k] for k, t in self.received.items() if k.startswith(prefix)
            ]


def read_results(bootstrap: str, topic: str, results: Results, stop: threading.Event) -> None:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "bench-reader",
            "fetch.wait.max.ms": 5,
            "log_level": 3,  # errors only: the broker closing at the end is expected
        }
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


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (/proc/PID/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def scrape(port: int) -> dict[str, float]:
    """The worker's /metrics samples, by name with labels."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


@dataclass(frozen=True)
class Bench:
    """What every scenario shares: the broker, the images, the producer and the reader."""

    bootstrap: str
    image_dir: Path
    urls: list[str]
    producer: Producer
    results: Results
    model: str
    worker_env: dict[str, str]


@contextmanager
def bench_session(image_dir: Path, model: str, worker_env: dict[str, str]) -> Iterator[Bench]:
    """An embedded broker, DISTINCT_IMAGES camera-like 1200x900 JPEGs in `image_dir` (referenced
    by file:// URLs), a producer and a thread reading every result, for as long as the block."""
    with EmbeddedBroker() as broker:
        urls = []
        for seed in range(DISTINCT_IMAGES):
            path = image_dir / f"photo{seed}.jpg"
            path.write_bytes(camera_like_jpeg(1200, 900, seed))
            urls.append(path.as_uri())
        create_topics(broker.bootstrap, {"crops": PARTITIONS})
        results, stop = Results(), threading.Event()
        reader = threading.Thread(
            target=read_results, args=(broker.bootstrap, "crops", results, stop), daemon=True
        )
        reader.start()
        producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 2, "log_level": 3})
        try:
            yield Bench(broker.bootstrap, image_dir, urls, producer, results, model, worker_env)
        finally:
            stop.set()
            reader.join(5)


def start_worker(
    bench: Bench, topic: str, group: str, max_batch: int
) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    env = {
        "CROPWORKER_BROKERS": bench.bootstrap,
        "CROPWORKER_INPUT_TOPIC": topic,
        "CROPWORKER_GROUP_ID": group,
        "CROPWORKER_SESSION_TIMEOUT_MS": str(EMBEDDED_SESSION_TIMEOUT_MS),
        "CROPWORKER_FILE_ROOT": str(bench.image_dir),
        "CROPWORKER_METRICS_HOST": "127.0.0.1",
        "CROPWORKER_METRICS_PORT": str(port),
        "CROPWORKER_MODEL": bench.model,
        "CROPWORKER_MAX_BATCH": str(max_batch),
        "CROPWORKER_LOG_LEVEL": "WARNING",
        **bench.worker_env,
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


@contextmanager
def workers(
    bench: Bench, name: str, count: int, max_batch: int
) -> Iterator[list[tuple[subprocess.Popen[bytes], int]]]:
    """`count` fresh workers in one group on a fresh topic, warmed up on every partition."""
    topic = f"uploads-{name}"
    create_topics(bench.bootstrap, {topic: PARTITIONS})
    started = [start_worker(bench, topic, f"bench-{name}", max_batch) for _ in range(count)]
    try:
        for i in range(WARM_UP):
            send(bench.producer, topic, f"{name}-warm-{i}", bench.urls[i % len(bench.urls)])
        bench.producer.flush(10)
        if not wait_for(bench.results, f"{name}-warm-", WARM_UP, 120):
            raise SystemExit(f"{name}: warm-up did not finish")
        yield started
    finally:
        for worker, _ in started:
            worker.send_signal(signal.SIGTERM)
        for worker, _ in started:
            worker.wait(60)


@dataclass
class Drain:
    scenario: str
    workers: int
    max_batch: int
    uploads: int
    rate: float  # uploads/s, first to last result
    mean_batch: float
    cores_busy: float  # CPU seconds of the workers per second of wall time
    rss_mb: list[float]


def drain(
    bench: Bench,
    name: str,
    started: list[tuple[subprocess.Popen[bytes], int]],
    max_batch: int,
    count: int,
) -> Drain:
    topic, prefix = f"uploads-{name}", f"{name}-backlog-"
    before = [scrape(port) for _, port in started]
    cpu_before = sum(cpu_seconds(w.pid) for w, _ in started)
    wall_before = time.monotonic()
    for i in range(count):
        send(bench.producer, topic, f"{prefix}{i}", bench.urls[i % len(bench.urls)])
    bench.producer.flush(60)
    rss: list[float] = []
    while bench.results.count(prefix) < count:
        rss.append(sum(rss_mb(w.pid) for w, _ in started))
        time.sleep(0.5)
    cores = (sum(cpu_seconds(w.pid) for w, _ in started) - cpu_before) / (
        time.monotonic() - wall_before
    )
    after = [scrape(port) for _, port in started]
    pairs = list(zip(after, before, strict=True))
    batches = sum(a[BATCHES_METRIC] - b[BATCHES_METRIC] for a, b in pairs)
    images = sum(a[IMAGES_METRIC] - b[IMAGES_METRIC] for a, b in pairs)
    times = bench.results.times(prefix)
    rate = (len(times) - 1) / ((times[-1] - times[0]) / 1000) if len(times) > 1 else 0.0
    mean_batch = images / batches if batches else float("nan")
    return Drain(name, len(started), max_batch, count, rate, mean_batch, cores, rss)


@dataclass
class Steady:
    offered: float
    achieved: float
    p50: float
    p95: float
    p99: float
    worker_mean: float  # the worker's own event-to-acknowledged latency, mean, ms


def steady(bench: Bench, name: str, port: int, rate: float, seconds: float) -> Steady:
    topic, prefix = f"uploads-{name}", f"{name}-steady-{rate:.1f}-"
    count = max(2, int(rate * seconds))
    before = scrape(port)
    start = time.monotonic()
    for i in range(count):
        time.sleep(max(0.0, start + i / rate - time.monotonic()))
        send(bench.producer, topic, f"{prefix}{i}", bench.urls[i % len(bench.urls)])
    bench.producer.flush(10)
    offered = count / (time.monotonic() - start)
    wait_for(bench.results, prefix, count, 120)
    received = bench.results.times(prefix)
    latencies = bench.results.latencies(prefix)
    achieved = len(received) / ((received[-1] - received[0]) / 1000 + 1 / rate)
    p50, p95, p99 = (percentile(latencies, q) for q in (0.5, 0.95, 0.99))
    after = scrape(port)
    seconds_sum, seen = (
        after[k] - before[k] for k in (LATENCY_METRIC + "_sum", LATENCY_METRIC + "_count")
    )
    worker_mean = 1000 * seconds_sum / seen if seen else float("nan")
    return Steady(offered, achieved, p50, p95, p99, worker_mean)


def offered_rates(sustained: float, loads: Sequence[float]) -> list[float]:
    """Fractions of the sustained rate, plus half the target rate where a worker can carry it."""
    rates = {round(f * sustained, 1) for f in loads}
    if 0.95 * sustained > TARGET_RATE / 2:
        rates.add(TARGET_RATE / 2)
    return sorted(rates)


def capacity(rate: float, peak_to_average: float, utilisation: float) -> dict[int, int]:
    """Replicas for each daily volume: the peak rate over what one replica is planned to carry."""
    per_replica = rate * utilisation
    return {
        daily: math.ceil(daily / SECONDS_PER_DAY * peak_to_average / per_replica)
        for daily in DAILY_VOLUMES
    }


def rss_summary(rss: list[float]) -> str:
    if not rss:
        return "no samples"
    tenth = max(1, len(rss) // 10)
    start, end = statistics.mean(rss[:tenth]), statistics.mean(rss[-tenth:])
    flat = end <= start * (1 + RSS_FLAT_TOLERANCE)
    return (
        f"{start:.0f} -> {end:.0f} MB (peak {max(rss):.0f}, {len(rss)} samples): "
        f"{'flat' if flat else 'GROWING'}"
    )


def format_report(report: dict[str, Any]) -> str:
    lines = [
        f"cropworker streaming worker, model {report['model']}, embedded broker (tansu), "
        f"{report['machine']}, load average before the run {report['load_average']:.2f}",
        "",
        f"backlog drained ({report['backlog']} uploads of a 1200x900 JPEG; target "
        f"{TARGET_RATE:.0f} uploads/s per worker)",
        f"  {'scenario':<24} {'workers':>7} {'max batch':>9} {'uploads/s':>10} {'x target':>9} "
        f"{'mean batch':>10} {'cores busy':>10} {'uploads/s/core':>14}",
    ]
    for d in report["drains"]:
        lines.append(
            f"  {d['scenario']:<24} {d['workers']:>7} {d['max_batch']:>9} {d['rate']:10.1f} "
            f"{d['rate'] / TARGET_RATE:9.2f} {d['mean_batch']:10.1f} {d['cores_busy']:10.2f} "
            f"{d['rate'] / max(d['cores_busy'], 1e-9):14.1f}"
        )
    for d in report["drains"]:
        lines.append(f"  RSS {d['scenario']}: {rss_summary(d['rss_mb'])}")
    if report.get("scaling") is not None:
        lines.append(
            f"  two workers / one worker: {report['scaling']:.2f}x "
            f"({report['scaling'] / 2:.0%} of linear) on {os.cpu_count()} cores"
        )
    if report["steady"]:
        lines += [
            "",
            f"offered rates (one worker, max batch {DEFAULT_BATCH}, {report['steady_s']:.0f} s "
            "each); end-to-end latency in ms (here; worker mean: its own event-to-acknowledged "
            f"histogram); target p99 <= {TARGET_P99_MS:.0f} ms at "
            f"{TARGET_RATE / 2:.0f}/s",
            f"  {'offered/s':>10} {'of sustained':>12} {'achieved/s':>10} {'p50':>8} {'p95':>8} "
            f"{'p99':>8} {'p99/target':>10} {'worker mean':>11}",
        ]
        for s in report["steady"]:
            lines.append(
                f"  {s['offered']:10.1f} {s['offered'] / report['sustained']:12.2f} "
                f"{s['achieved']:10.1f} {s['p50']:8.0f} {s['p95']:8.0f} {s['p99']:8.0f} "
                f"{s['p99'] / TARGET_P99_MS:10.2f} {s['worker_mean']:11.0f}"
            )
    lines += [
        "",
        f"capacity: replicas for a day's uploads at a peak-to-average ratio of "
        f"{report['peak_to_average']:g}, each replica planned at {report['utilisation']:.0%} "
        "of its sustained rate",
        f"  {'replica':<44} {'uploads/s':>9}"
        + "".join(f"{d / 1e6:>9.0f} M" for d in DAILY_VOLUMES),
    ]
    for row in report["capacity"]:
        cells = (
            "".join(f"{row['replicas'][str(d)]:>11}" for d in DAILY_VOLUMES)
            if row["rate"]
            else f"{'not measured':>33}"
        )
        rate = f"{row['rate']:9.1f}" if row["rate"] else f"{'-':>9}"
        lines.append(f"  {row['replica']:<44} {rate}{cells}")
    lines.append(
        "  (peak uploads/s: "
        + ", ".join(
            f"{d / 1e6:.0f} M/day -> {d / SECONDS_PER_DAY * report['peak_to_average']:.0f}"
            for d in DAILY_VOLUMES
        )
        + ")"
    )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> dict[str, Any]:
    load_average = os.getloadavg()[0]
    backlog = max(DISTINCT_IMAGES, int(TARGET_RATE * args.backlog_s))
    worker_env = dict(item.split("=", 1) for item in args.worker_env)
    drains: list[Drain] = []
    steadies: list[Steady] = []
    with (
        tempfile.TemporaryDirectory() as tmp,
        bench_session(Path(tmp), args.model, worker_env) as bench,
    ):
        for batch in args.batches:
            name = f"batch{batch}"
            with workers(bench, name, 1, batch) as started:
                drains.append(drain(bench, name, started, batch, backlog))
                if batch == DEFAULT_BATCH and args.loads:
                    rates = offered_rates(drains[-1].rate, args.loads)
                    port = started[0][1]
                    steadies = [steady(bench, name, port, r, args.steady_s) for r in rates]
        if args.pair:
            with workers(bench, "pair", 2, DEFAULT_BATCH) as started:
                drains.append(drain(bench, "pair", started, DEFAULT_BATCH, backlog))
    one = next((d for d in drains if d.workers == 1 and d.max_batch == DEFAULT_BATCH), None)
    one = one or next((d for d in drains if d.workers == 1), None)
    pair = next((d for d in drains if d.workers == 2), None)
    sustained = one.rate if one else 0.0
    backend = worker_env.get("CROPWORKER_BACKEND", "cpu")
    rows = [
        (f"one worker process, {backend}, max batch {one.max_batch if one else '-'}", sustained),
        (f"a {os.cpu_count()}-core host running 2 workers", pair.rate if pair else 0.0),
        ("one GPU worker (--gpu-rate)", args.gpu_rate or 0.0),
    ]
    return {
        "model": args.model,
        "machine": f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}",
        "load_average": load_average,
        "backlog": backlog,
        "steady_s": args.steady_s,
        "drains": [asdict(d) for d in drains],
        "scaling": pair.rate / one.rate if pair and one and one.rate else None,
        "sustained": sustained,
        "steady": [asdict(s) for s in steadies],
        "peak_to_average": args.peak_to_average,
        "utilisation": args.utilisation,
        "capacity": [
            {
                "replica": name,
                "rate": rate,
                "replicas": {
                    str(d): n
                    for d, n in (
                        capacity(rate, args.peak_to_average, args.utilisation).items()
                        if rate
                        else []
                    )
                },
            }
            for name, rate in rows
        ],
    }


def numbers(text: str, kind: type[float] | type[int]) -> list[Any]:
    return [kind(part) for part in text.split(",") if part.strip()]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--quick", action="store_true", help="small backlog, fewer settings")
    parser.add_argument("--backlog-s", type=float, default=None, help="default 4 (quick 1)")
    parser.add_argument("--steady-s", type=float, default=None, help="default 15 (quick 5)")
    parser.add_argument("--batches", default=None, help="max batch values, default 1,4,8,16")
    parser.add_argument(
        "--loads", default=None, help="offered rates as fractions of sustained (0.25,0.5,0.75,0.9)"
    )
    parser.add_argument("--no-pair", dest="pair", action="store_false", help="skip 2 workers")
    parser.add_argument("--peak-to-average", type=float, default=3.0)
    parser.add_argument("--utilisation", type=float, default=0.7)
    parser.add_argument(
        "--gpu-rate", type=float, default=None, help="uploads/s of one GPU worker, for the table"
    )
    parser.add_argument(
        "--worker-env", action="append", default=[], help="KEY=VALUE for the workers (repeat)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    quick = args.quick
    args.backlog_s = args.backlog_s if args.backlog_s is not None else (1.0 if quick else 4.0)
    args.steady_s = args.steady_s if args.steady_s is not None else (5.0 if quick else 15.0)
    args.batches = numbers(args.batches or ("1,8" if quick else "1,4,8,16"), int)
    loads = args.loads if args.loads is not None else ("0.5,0.9" if quick else "0.25,0.5,0.75,0.9")
    args.loads = numbers(loads, float)
    report = run(args)
    print(format_report(report))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "worker_throughput.json").write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()

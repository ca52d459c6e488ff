"""Fault injection against the embedded broker: uploads lost (must be 0), duplicated, and the
time the stream takes to recover, for the faults a worker meets in production.

Every scenario streams small JPEG uploads at `--rate` into fresh topics, injects its fault once
a quarter of them have results, and waits until every upload has one:

- kill9-one-of-two: two worker processes; one is killed with SIGKILL, the other takes over.
- kill9-restart: the only worker is killed with SIGKILL and started again.
- broker-restart: the broker is restarted. It keeps everything in memory, so it forgets the
  topics, committed offsets and producer ids: here an upload is one the restarted broker holds.
- broker-stall: the broker is frozen (SIGSTOP) for `--fault-s` seconds, longer than the
  session timeout, then resumed (SIGCONT).
- slow-batch: one inference batch takes `--fault-s`, longer than `max.poll.interval.ms`, so the
  consumer leaves the group and its partitions are lost. The network must be slowed down from
  inside, so this worker runs in this process (a thread); the others are `cropworker run`.

Counting: an upload is a message of the input topic; it is lost when no result and no dead
letter names it; `duplicated` is the number of results beyond the first. Recovery is the time
from the end of the fault until every partition has given a result for an upload sent after it,
so it includes working off what queued up during the fault. A worker that exits by itself has
crashed; one that does not exit within its drain time after SIGTERM has hung.

    python benchmarks/faults.py                          # 2,000 uploads per scenario, ~3 min
    python benchmarks/faults.py --uploads 200 --scenarios broker-stall,slow-batch

The tests (tests/stream/test_faults.py) run the same scenarios with fewer uploads.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from cropworker.backend import DEFAULT_MODEL, Backend, OnnxBackend
from cropworker.demo.broker import EmbeddedBroker, create_topics, free_port
from cropworker.stream import app
from cropworker.stream.events import upload_event
from cropworker.stream.settings import EMBEDDED_SESSION_TIMEOUT_MS, ENV_PREFIX, Settings

RESULTS = Path(__file__).resolve().parent / "results"
PARTITIONS = 4
FAULT_AT = 0.25  # share of the uploads answered before the fault (default)
SETTLE_S = 1.5  # after the last first result: duplicates may trail it
READY_TIMEOUT_S = 60.0
EXIT_MARGIN_S = 10.0  # beyond shutdown_timeout_s, before a worker that ignores SIGTERM is hung


@dataclass(frozen=True)
class Topics:
    input: str
    output: str
    dead_letter: str

    @classmethod
    def create(cls, bootstrap: str, name: str) -> Topics:
        topics = cls(f"uploads-{name}", f"crops-{name}", f"dead-{name}")
        topics.recreate(bootstrap)
        return topics

    def recreate(self, bootstrap: str) -> None:
        create_topics(
            bootstrap, dict.fromkeys((self.input, self.output, self.dead_letter), PARTITIONS)
        )


@dataclass
class Outcome:
    scenario: str
    uploads: int  # distinct media ids in the input topic
    results: int  # results and dead letters, duplicates included
    lost: int
    duplicated: int
    dead_letters: int
    fault_s: float
    recovery_s: float | None  # None: no upload was sent after the fault ended
    crashed: bool = False
    hung: bool = False
    checks: dict[str, int] = field(default_factory=dict)  # scenario-specific counts


@dataclass
class Bench:
    """What the scenarios share."""

    broker: EmbeddedBroker
    workdir: Path  # worker logs
    uploads: int
    rate: float  # uploads/s
    fault_s: float  # how long a broker stall or the slow batch lasts
    timeout_s: float  # for all uploads to be answered after the fault
    backend: Callable[[], Backend]  # the network of the in-process worker
    fault_at: float = FAULT_AT

    def settings(self, topics: Topics, **changes: Any) -> Settings:
        base = Settings(
            brokers=self.broker.bootstrap,
            group_id=f"group-{topics.input}",
            input_topic=topics.input,
            output_topic=topics.output,
            dead_letter_topic=topics.dead_letter,
            session_timeout_ms=EMBEDDED_SESSION_TIMEOUT_MS,
            statistics_interval_ms=1_000,
            metrics_host="127.0.0.1",
            metrics_port=0,
            shutdown_timeout_s=10.0,
            log_format="json",
        )
        return replace(base, **changes)


def tiny_jpeg(seed: int) -> bytes:
    """A distinct 160x120 JPEG (a bright disc on noise): decoding stays out of the way."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 60, (120, 160, 3), dtype=np.uint8)
    cv2.circle(image, (int(rng.integers(20, 140)), int(rng.integers(20, 100))), 15, (255,) * 3, -1)
    ok, encoded = cv2.imencode(".jpg", image)
    assert ok
    return bytes(encoded.tobytes())


class Sender(threading.Thread):
    """Produces `count` uploads at `rate` per second, remembering when each was produced."""

    def __init__(self, bootstrap: str, topic: str, count: int, rate: float) -> None:
        super().__init__(daemon=True)
        self.bootstrap, self.topic, self.count, self.rate = bootstrap, topic, count, rate
        self.sent_at: dict[str, float] = {}
        self.done = threading.Event()

    def run(self) -> None:
        producer = Producer({"bootstrap.servers": self.bootstrap, "linger.ms": 5, "log_level": 0})
        start = time.monotonic()
        for i in range(self.count):
            time.sleep(max(0.0, start + i / self.rate - time.monotonic()))
            key = f"u{i}"
            event = upload_event(key, time.time_ns() // 1_000_000, data=tiny_jpeg(i))
            while True:
                try:
                    producer.produce(self.topic, event, key.encode())
                    break
                except BufferError:
                    producer.poll(0.05)
            self.sent_at[key] = time.monotonic()
            producer.poll(0)
        producer.flush(60)
        self.done.set()


class Tally(threading.Thread):
    """Reads the three topics from the beginning: which uploads the broker holds (and on which
    partition), and when each got its first result. `reset()` starts over (a broker restart)."""

    def __init__(self, bootstrap: str, topics: Topics) -> None:
        super().__init__(daemon=True)
        self.bootstrap, self.topics = bootstrap, topics
        self.lock = threading.Lock()
        self.inputs: dict[str, int] = {}  # media id -> input partition
        self.answers: Counter[str] = Counter()  # media id -> results and dead letters
        self.first: dict[str, float] = {}  # media id -> when its first answer was read
        self.dead_letters = 0
        self._halt, self._reset = threading.Event(), threading.Event()

    def run(self) -> None:
        consumer = self._consumer()
        while not self._halt.is_set():
            if self._reset.is_set():
                consumer.close()
                with self.lock:
                    self.inputs, self.answers, self.first = {}, Counter(), {}
                    self.dead_letters = 0
                consumer = self._consumer()
                self._reset.clear()
            for message in consumer.consume(500, 0.05):
                if message.error() is None:
                    self._add(message.topic(), message.partition(), message.key())
        consumer.close()

    def _consumer(self) -> Consumer:
        consumer = Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "group.id": "faults-tally",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "fetch.wait.max.ms": 20,
                "log_level": 0,
            }
        )
        names = (self.topics.input, self.topics.output, self.topics.dead_letter)
        consumer.assign(
            [TopicPartition(t, p, OFFSET_BEGINNING) for t in names for p in range(PARTITIONS)]
        )
        return consumer

    def _add(self, topic: str | None, partition: int | None, key: bytes | None) -> None:
        media_id = (key or b"").decode()
        with self.lock:
            if topic == self.topics.input:
                self.inputs[media_id] = partition if partition is not None else -1
                return
            self.answers[media_id] += 1
            self.first.setdefault(media_id, time.monotonic())
            self.dead_letters += topic == self.topics.dead_letter

    def reset(self) -> None:
        self._reset.set()

    def stop(self) -> None:
        self._halt.set()
        self.join(10)

    def answered(self) -> int:
        with self.lock:
            return len(self.first)

    def complete(self) -> bool:
        with self.lock:
            return bool(self.inputs) and all(k in self.first for k in self.inputs)


class WorkerProcess:
    """`python -m cropworker run` with `settings`, its output in `log`."""

    def __init__(self, settings: Settings, log: Path) -> None:
        self.port = free_port()
        self.settings = settings
        env = {ENV_PREFIX + k.upper(): v for k, v in settings.describe().items()}
        env[ENV_PREFIX + "METRICS_PORT"] = str(self.port)
        self.log = log
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "cropworker", "run"],
                env={**os.environ, **env},
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=1) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def terminate(self) -> tuple[bool, bool]:
        """SIGTERM: (crashed, hung). Crashed: it had already exited, or exited non-zero."""
        if self.process.poll() is not None:
            return True, False
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(self.settings.shutdown_timeout_s + EXIT_MARGIN_S) != 0, False
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
            return False, True


def wait_ready(workers: list[WorkerProcess]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not all(w.ready() for w in workers):
        if time.monotonic() > deadline or any(w.process.poll() is not None for w in workers):
            tails = [w.log.read_text()[-2000:] for w in workers]
            raise RuntimeError(f"a worker did not become ready: {tails}")
        time.sleep(0.2)


@dataclass(frozen=True)
class Fault:
    start: float
    end: float


def observe(bench: Bench, name: str, topics: Topics, inject: Callable[[Tally], Fault]) -> Outcome:
    """Stream the uploads, `inject` the fault once FAULT_AT of them are answered, wait until all
    are (or the timeout), and count."""
    tally = Tally(bench.broker.bootstrap, topics)
    sender = Sender(bench.broker.bootstrap, topics.input, bench.uploads, bench.rate)
    tally.start()
    sender.start()
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while tally.answered() < bench.uploads * bench.fault_at and time.monotonic() < deadline:
            time.sleep(0.05)
        fault = inject(tally)
        deadline = time.monotonic() + bench.timeout_s
        while not (sender.done.is_set() and tally.complete()) and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(SETTLE_S)
    finally:
        tally.stop()
    with tally.lock:
        answers = sum(tally.answers.values())
        outcome = Outcome(
            scenario=name,
            uploads=len(tally.inputs),
            results=answers,
            lost=sum(1 for k in tally.inputs if k not in tally.first),
            duplicated=answers - len(tally.answers),
            dead_letters=tally.dead_letters,
            fault_s=fault.end - fault.start,
            recovery_s=recovery(tally, sender.sent_at, fault.end),
        )
        if forgotten := len(set(tally.answers) - set(tally.inputs)):
            outcome.checks["answers to uploads the broker forgot"] = forgotten
    return outcome


def recovery(tally: Tally, sent_at: dict[str, float], since: float) -> float | None:
    """Seconds from `since` until every partition answered an upload sent after `since`."""
    first: dict[int, float] = {}
    for key, partition in tally.inputs.items():
        if sent_at.get(key, 0.0) >= since:
            answered = tally.first.get(key, float("inf"))
            first[partition] = min(first.get(partition, float("inf")), answered)
    return max(first.values()) - since if first else None


def losses(log: Path) -> int:
    """Partitions a worker's JSON log says it lost (a session that timed out)."""
    lines = [json.loads(line) for line in log.read_text().splitlines() if line[:1] == "{"]
    return sum(len(r["partitions"]) for r in lines if r["message"].startswith("partitions lost"))


def finish(outcome: Outcome, workers: list[WorkerProcess]) -> Outcome:
    """SIGTERM every worker still meant to run; record crashes and hangs."""
    for worker in workers:
        crashed, hung = worker.terminate()
        outcome.crashed |= crashed
        outcome.hung |= hung
    return outcome


# The scenarios ---------------------------------------------------------------------------------


def kill9_one_of_two(bench: Bench) -> Outcome:
    topics = Topics.create(bench.broker.bootstrap, "kill9-pair")
    settings = bench.settings(topics)
    victim, survivor = (WorkerProcess(settings, bench.workdir / f"pair{i}.log") for i in (0, 1))
    wait_ready([victim, survivor])

    def inject(_: Tally) -> Fault:
        now = time.monotonic()
        victim.kill()
        return Fault(now, now)

    outcome = observe(bench, "kill9-one-of-two", topics, inject)
    outcome.checks["victim exit status"] = victim.process.returncode
    return finish(outcome, [survivor])


def kill9_restart(bench: Bench) -> Outcome:
    topics = Topics.create(bench.broker.bootstrap, "kill9-restart")
    settings = bench.settings(topics)
    log = bench.workdir / "restart.log"
    workers = [WorkerProcess(settings, log)]
    wait_ready(workers)

    def inject(_: Tally) -> Fault:
        now = time.monotonic()
        workers[0].kill()
        workers.append(WorkerProcess(settings, log))
        return Fault(now, now)

    outcome = observe(bench, "kill9-restart", topics, inject)
    outcome.checks["victim exit status"] = workers[0].process.returncode
    return finish(outcome, workers[1:])


def broker_restart(bench: Bench) -> Outcome:
    topics = Topics.create(bench.broker.bootstrap, "broker-restart")
    workers = [WorkerProcess(bench.settings(topics), bench.workdir / "broker-restart.log")]
    wait_ready(workers)

    def inject(tally: Tally) -> Fault:
        start = time.monotonic()
        bench.broker.restart()
        topics.recreate(bench.broker.bootstrap)
        tally.reset()  # count what the restarted broker holds
        return Fault(start, time.monotonic())

    outcome = finish(observe(bench, "broker-restart", topics, inject), workers)
    outcome.checks["partitions lost"] = losses(workers[0].log)
    return outcome


def broker_stall(bench: Bench) -> Outcome:
    topics = Topics.create(bench.broker.bootstrap, "broker-stall")
    workers = [WorkerProcess(bench.settings(topics), bench.workdir / "broker-stall.log")]
    wait_ready(workers)

    def inject(_: Tally) -> Fault:
        start = time.monotonic()
        bench.broker.pause()
        try:
            time.sleep(bench.fault_s)
        finally:
            bench.broker.resume()
        return Fault(start, time.monotonic())

    outcome = finish(observe(bench, "broker-stall", topics, inject), workers)
    outcome.checks["partitions lost"] = losses(workers[0].log)
    return outcome


class SlowOnce:
    """A backend whose next `infer` after `arm()` sleeps `delay_s` first."""

    def __init__(self, inner: Backend, delay_s: float) -> None:
        self.inner, self.info, self.delay_s = inner, inner.info, delay_s
        self.armed, self.slept = threading.Event(), threading.Event()
        self.started = self.ended = 0.0

    def arm(self) -> None:
        self.armed.set()

    def infer(self, images: np.ndarray) -> np.ndarray:
        if self.armed.is_set() and not self.slept.is_set():
            self.started = time.monotonic()
            time.sleep(self.delay_s)
            self.ended = time.monotonic()
            self.slept.set()
        return self.inner.infer(images)


class RecordingConsumer(Consumer):
    """A consumer that logs, in order, the rebalance callbacks and the offsets stored."""

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        self.events: list[tuple[str, int, int]] = []  # (what, partition, offset or -1)

    def subscribe(self, topics: list[str], **callbacks: Any) -> None:
        wrapped = {name: self._recorder(name, cb) for name, cb in callbacks.items()}
        super().subscribe(topics, **wrapped)

    def _recorder(self, name: str, callback: Callable[..., None]) -> Callable[..., None]:
        def record(consumer: Consumer, partitions: list[TopicPartition]) -> None:
            self.events += [(name, p.partition, -1) for p in partitions]
            callback(consumer, partitions)

        return record

    def store_offsets(self, *args: Any, **kwargs: Any) -> None:
        for p in kwargs.get("offsets", []):
            self.events.append(("store", p.partition, p.offset))
        super().store_offsets(*args, **kwargs)

    def stores_while_lost(self) -> int:
        """Offsets stored for a partition after it was lost and before it was assigned again."""
        lost: set[int] = set()
        count = 0
        for what, partition, _ in self.events:
            if what == "on_lost":
                lost.add(partition)
            elif what == "on_assign":
                lost.discard(partition)
            elif what == "store":
                count += partition in lost
        return count


def slow_batch(bench: Bench) -> Outcome:
    topics = Topics.create(bench.broker.bootstrap, "slow-batch")
    # librdkafka's smallest max.poll.interval.ms is the session timeout
    poll_ms = EMBEDDED_SESSION_TIMEOUT_MS
    settings = bench.settings(topics, max_poll_interval_ms=poll_ms, log_format="text")
    if bench.fault_s * 1000 <= poll_ms:
        raise ValueError(f"the slow batch must take longer than {poll_ms} ms")
    slow = SlowOnce(bench.backend(), bench.fault_s)
    consumers: list[RecordingConsumer] = []

    def consumer(config: dict[str, Any]) -> RecordingConsumer:
        consumers.append(RecordingConsumer(config))
        return consumers[-1]

    service = app.build(settings, backend=slow, consumer_factory=consumer)
    worker, health = service.worker, service.health
    errors: list[BaseException] = []

    def run() -> None:
        try:
            worker.run()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not health.ready and time.monotonic() < deadline and thread.is_alive():
        time.sleep(0.05)

    def inject(_: Tally) -> Fault:
        slow.arm()
        slow.slept.wait(READY_TIMEOUT_S + bench.fault_s)
        return Fault(slow.started, slow.ended)

    outcome = observe(bench, "slow-batch", topics, inject)
    worker.stop()
    thread.join(settings.shutdown_timeout_s + EXIT_MARGIN_S)
    service.close()
    outcome.crashed, outcome.hung = bool(errors), thread.is_alive()
    events = consumers[0].events if consumers else []
    outcome.checks["partitions lost"] = sum(1 for what, _, _ in events if what == "on_lost")
    outcome.checks["offsets stored while lost"] = (
        consumers[0].stores_while_lost() if consumers else 0
    )
    return outcome


SCENARIOS: dict[str, Callable[[Bench], Outcome]] = {
    "kill9-one-of-two": kill9_one_of_two,
    "kill9-restart": kill9_restart,
    "broker-restart": broker_restart,
    "broker-stall": broker_stall,
    "slow-batch": slow_batch,
}


# Report --------------------------------------------------------------------------------------


def format_report(report: dict[str, Any]) -> str:
    """A Markdown table of the outcomes."""
    command = " ".join(["python benchmarks/faults.py", *report["args"]])
    lines = [
        f"# Fault injection ({report['date']})",
        "",
        f"`{command}`: {report['uploads']} uploads per scenario at {report['rate']:g}/s, "
        f"faults of {report['fault_s']:g} s, embedded broker "
        f"(tansu), session timeout {EMBEDDED_SESSION_TIMEOUT_MS} ms, {report['machine']}, load "
        f"average {report['load_average']:.2f} before the run.",
        "",
        "| scenario | uploads | results | lost | duplicated | fault s | recovery s | worker "
        "| notes |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for o in report["outcomes"]:
        recovered = "-" if o["recovery_s"] is None else f"{o['recovery_s']:.1f}"
        health = "crashed" if o["crashed"] else "hung" if o["hung"] else "ok"
        notes = ", ".join(f"{k}: {v}" for k, v in o["checks"].items())
        lines.append(
            f"| {o['scenario']} | {o['uploads']} | {o['results']} | {o['lost']} | "
            f"{o['duplicated']} | {o['fault_s']:.1f} | {recovered} | {health} | {notes} |"
        )
    lines += [
        "",
        "lost: uploads in the input topic with neither a result nor a dead letter; duplicated: "
        "results beyond the first; recovery: end of the fault until every partition answered an "
        "upload sent after it; worker: crashed (exited by itself) or hung (no exit within its "
        "drain time after SIGTERM).",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--uploads", type=int, default=2000, help="per scenario")
    parser.add_argument("--rate", type=float, default=100.0, help="uploads/s offered")
    parser.add_argument("--fault-s", type=float, default=8.0, help="stall and slow batch")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--model", default=DEFAULT_MODEL, help="of the in-process worker")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--logs", type=Path, default=None, help="keep worker logs here")
    args = parser.parse_args(argv)
    names = [name.strip() for name in args.scenarios.split(",") if name.strip()]
    load_average = os.getloadavg()[0]
    outcomes = []
    with tempfile.TemporaryDirectory() as tmp:
        logs = args.logs or Path(tmp)
        logs.mkdir(parents=True, exist_ok=True)
        for name in names:
            with EmbeddedBroker() as broker:  # its own: a restart or stall touches nothing else
                bench = Bench(
                    broker,
                    logs,
                    args.uploads,
                    args.rate,
                    args.fault_s,
                    timeout_s=120 + 2 * args.uploads / args.rate,
                    backend=lambda: OnnxBackend(args.model, threads=1),
                )
                outcomes.append(SCENARIOS[name](bench))
                print(outcomes[-1], flush=True)
    report = {
        "date": time.strftime("%Y-%m-%d"),
        "args": argv if argv is not None else sys.argv[1:],
        "uploads": args.uploads,
        "rate": args.rate,
        "fault_s": args.fault_s,
        "machine": f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}",
        "load_average": load_average,
        "outcomes": [asdict(o) for o in outcomes],
    }
    text = format_report(report)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "faults.md").write_text(text)
    (args.out / "faults.json").write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()

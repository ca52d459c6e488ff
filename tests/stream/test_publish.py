from __future__ import annotations

from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaError

from cropworker.stream.publish import REPLACE_INTERVAL_S, Outgoing, Publisher


class FakeProducer:
    def __init__(self, error_cb: Callable[[KafkaError], None]) -> None:
        self.error_cb = error_cb
        self.sent: list[tuple[bytes | None, Callable[[KafkaError | None, Any], None]]] = []
        self.full_for = 0  # produce() raises BufferError this many times
        self.purged = False

    def produce(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        *,
        on_delivery: Callable[[KafkaError | None, Any], None],
        headers: Any = None,
    ) -> None:
        if self.full_for:
            self.full_for -= 1
            raise BufferError("queue full")
        self.sent.append((value, on_delivery))

    def poll(self, timeout: float = -1) -> int:
        return 0

    def flush(self, timeout: float = -1) -> int:
        return 0

    def purge(self, in_queue: bool = True, in_flight: bool = True, blocking: bool = True) -> None:
        self.purged = True

    def deliver(self, index: int, err: KafkaError | None = None) -> None:
        self.sent[index][1](err, None)


class Harness:
    def __init__(self) -> None:
        self.producers: list[FakeProducer] = []
        self.done: list[tuple[str, KafkaError | None]] = []
        self.now = 100.0
        self.publisher: Publisher[str] = Publisher(
            self._make, lambda m, err: self.done.append((m.context, err)), lambda: self.now
        )

    def _make(self, error_cb: Callable[[KafkaError], None]) -> FakeProducer:
        self.producers.append(FakeProducer(error_cb))
        return self.producers[-1]

    def send(self, name: str) -> None:
        self.publisher.send(Outgoing("t", name.encode(), name.encode(), [], name))


def test_acknowledged_messages_are_reported_once() -> None:
    h = Harness()
    h.send("a")
    h.send("b")
    h.producers[0].deliver(1)
    assert h.done == [("b", None)] and h.publisher.unacknowledged == 1
    h.producers[0].deliver(0)
    assert h.done == [("b", None), ("a", None)] and h.publisher.unacknowledged == 0


def test_transient_errors_are_re_sent_through_the_same_producer() -> None:
    h = Harness()
    h.send("a")
    h.producers[0].deliver(0, KafkaError(KafkaError._TRANSPORT))
    assert h.done == []
    h.publisher.poll()
    assert [value for value, _ in h.producers[0].sent] == [b"a", b"a"]
    h.producers[0].deliver(1)
    assert h.done == [("a", None)] and len(h.producers) == 1


def test_permanent_errors_go_back_to_the_owner() -> None:
    h = Harness()
    h.send("a")
    err = KafkaError(KafkaError.MSG_SIZE_TOO_LARGE)
    h.producers[0].deliver(0, err)
    assert h.done == [("a", err)] and h.publisher.unacknowledged == 0


def test_a_fatal_error_replaces_the_producer_and_re_sends_everything_unacknowledged() -> None:
    h = Harness()
    for name in "abc":
        h.send(name)
    h.producers[0].deliver(0)  # a is done
    h.producers[0].deliver(1, KafkaError(KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER, fatal=True))
    h.publisher.poll()
    assert len(h.producers) == 2 and h.producers[0].purged
    assert sorted(value or b"" for value, _ in h.producers[1].sent) == [b"b", b"c"]
    h.producers[0].deliver(2)  # a late report from the old producer is ignored
    assert h.done == [("a", None)]
    h.producers[1].deliver(0)
    h.producers[1].deliver(1)
    assert sorted(name for name, _ in h.done) == ["a", "b", "c"]


def test_timeouts_and_outages_replace_the_producer_at_most_once_per_interval() -> None:
    h = Harness()
    h.send("a")
    h.producers[0].error_cb(KafkaError(KafkaError._ALL_BROKERS_DOWN))
    h.publisher.poll()
    assert len(h.producers) == 2
    h.producers[1].deliver(0, KafkaError(KafkaError._MSG_TIMED_OUT))
    h.publisher.poll()
    assert len(h.producers) == 2  # too soon after the last replacement
    h.now += REPLACE_INTERVAL_S
    h.publisher.poll()
    assert len(h.producers) == 3 and h.producers[2].sent[0][0] == b"a"
    assert h.publisher.replaced == 2


def test_a_full_queue_waits_and_retries() -> None:
    h = Harness()
    h.producers[0].full_for = 2
    h.send("a")
    assert [value for value, _ in h.producers[0].sent] == [b"a"]

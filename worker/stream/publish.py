"""Publishing with delivery tracking, and recovery from a producer that can no longer deliver.

Every message is handed to librdkafka with its own delivery callback; the owner hears exactly once
per message, and only with success or a permanent error (the message can never be written, e.g.
over the size limit). Everything else is re-sent, so nothing is lost:

- a delivery error that librdkafka may recover from: re-sent through the same producer;
- a fatal error, a delivery timeout, or all brokers down: the producer is replaced by a new one
  and every unacknowledged message is re-sent through it. An idempotent producer cannot recover
  by itself when the broker forgets its producer id and sequence numbers (a restarted in-memory
  broker, docs/notes.md#embedded-broker): librdkafka then bumps its epoch in a loop and never
  delivers. A new producer gets a new id. Replacements are at most one per `REPLACE_INTERVAL_S`,
  so an outage does not churn producers.

A re-send can write a duplicate, which at-least-once delivery allows.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Generic, Protocol, TypeVar

from confluent_kafka import KafkaError, KafkaException, Message

from .logs import fields

log = logging.getLogger(__name__)

C = TypeVar("C")
Headers = Sequence[tuple[str, bytes]]

# Errors after which a re-send cannot succeed: the owner decides what to do instead.
PERMANENT_ERRORS = frozenset(
    {
        KafkaError.MSG_SIZE_TOO_LARGE,
        KafkaError.INVALID_MSG_SIZE,
        KafkaError.RECORD_LIST_TOO_LARGE,
        KafkaError.INVALID_RECORD,
        KafkaError.INVALID_MSG,
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError._INVALID_ARG,
    }
)
# A produce() that finds the local queue full waits this long for deliveries, then tries again.
QUEUE_FULL_WAIT_S = 0.05
REPLACE_INTERVAL_S = 5.0


class ProducerLike(Protocol):
    def produce(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        *,
        on_delivery: Callable[[KafkaError | None, Message], None],
        headers: list[tuple[str, str | bytes | None]] | None = None,
    ) -> None: ...

    def poll(self, timeout: float = -1) -> int: ...

    def flush(self, timeout: float = -1) -> int: ...

    def purge(
        self, in_queue: bool = True, in_flight: bool = True, blocking: bool = True
    ) -> None: ...


@dataclass
class Outgoing(Generic[C]):
    topic: str
    key: bytes | None
    value: bytes | None
    headers: Headers
    context: C
    sends: int = field(default=0)


class Publisher(Generic[C]):
    """Sends `Outgoing` messages; calls `on_done(message, None)` once each is acknowledged, or
    `on_done(message, error)` for a permanent error. Single-threaded: call from one thread."""

    def __init__(
        self,
        factory: Callable[[Callable[[KafkaError], None]], ProducerLike],
        on_done: Callable[[Outgoing[C], KafkaError | None], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._factory = factory
        self._on_done = on_done
        self._clock = clock
        self._replace_for = ""  # why the producer must be replaced ("": it need not)
        self._replaced_at = float("-inf")
        self._generation = 0
        self._producer = factory(self._on_error)
        self._unacknowledged: dict[int, Outgoing[C]] = {}  # id(message) -> message
        self._retry: deque[Outgoing[C]] = deque()
        self.replaced = 0  # producers replaced so far

    @property
    def unacknowledged(self) -> int:
        return len(self._unacknowledged)

    def send(self, message: Outgoing[C]) -> None:
        self._unacknowledged[id(message)] = message
        self._produce(message)

    def poll(self, timeout: float = 0) -> None:
        """Serve delivery callbacks; re-send what failed; replace a producer that cannot deliver."""
        self._producer.poll(timeout)
        if self._replace_for and self._clock() - self._replaced_at >= REPLACE_INTERVAL_S:
            self._replace()
        while self._retry:
            self._produce(self._retry.popleft())

    def flush(self, timeout: float) -> bool:
        """Wait until everything is acknowledged or `timeout` passes; True if all were."""
        deadline = self._clock() + timeout
        while self._unacknowledged and (left := deadline - self._clock()) > 0:
            self._producer.flush(min(left, 0.1))
            self.poll(0)
        return not self._unacknowledged

    def _produce(self, message: Outgoing[C]) -> None:
        message.sends += 1
        while True:
            try:
                self._producer.produce(
                    message.topic,
                    message.value,
                    message.key,
                    on_delivery=partial(self._delivered, message, self._generation),
                    headers=[(name, value) for name, value in message.headers],
                )
                return
            except BufferError:
                self._producer.poll(QUEUE_FULL_WAIT_S)
            except KafkaException as exc:
                if not isinstance(err := exc.args[0], KafkaError):
                    raise
                self._failed(message, err)
                return

    def _delivered(
        self, message: Outgoing[C], generation: int, err: KafkaError | None, _msg: Message
    ) -> None:
        if generation != self._generation or id(message) not in self._unacknowledged:
            return  # from a replaced producer: the message was re-sent through the new one
        if err is None:
            del self._unacknowledged[id(message)]
            self._on_done(message, None)
        else:
            self._failed(message, err)

    def _failed(self, message: Outgoing[C], err: KafkaError) -> None:
        if err.code() in PERMANENT_ERRORS:
            del self._unacknowledged[id(message)]
            self._on_done(message, err)
        elif err.fatal() or err.code() == KafkaError._MSG_TIMED_OUT:
            self._replace_for = self._replace_for or err.name()  # `_replace` re-sends it
        else:
            log.warning(
                "delivery failed, will re-send",
                extra=fields(topic=message.topic, error=err.name(), sends=message.sends),
            )
            self._retry.append(message)

    def _on_error(self, err: KafkaError) -> None:
        """The producer's `error_cb`."""
        if err.fatal() or err.code() == KafkaError._ALL_BROKERS_DOWN:
            self._replace_for = self._replace_for or err.name()
            log.warning("producer error: %s", err.str(), extra=fields(error=err.name()))
        else:
            log.info("producer error: %s", err.str(), extra=fields(error=err.name()))

    def _replace(self) -> None:
        log.warning(
            "replacing the producer; re-sending unacknowledged messages",
            extra=fields(reason=self._replace_for, resend=len(self._unacknowledged)),
        )
        self._producer.purge(in_queue=True, in_flight=True, blocking=False)
        self._replace_for = ""
        self._replaced_at = self._clock()
        self._generation += 1
        self._producer = self._factory(self._on_error)
        self.replaced += 1
        self._retry = deque(self._unacknowledged.values())

"""One input message on its way through the worker, and the work done on it in the decode pool.

A job is in one of four typed states, each holding only what the next step needs, so memory
stays flat:

    Received ─▶ Prepared ─▶ Cropped
        │                      │
        └──────▶ Rejected ◀────┘

- `Received`: consumed; the message (key, value, headers) is held while the pool parses,
  fetches and decodes it.
- `Prepared`: decoded, waiting for its batch; the encoded bytes (the message value and the
  inline image in the event) are let go, only the network input is held.
- `Cropped`: its result is sent; the network input is let go too.
- `Rejected`: unusable, stuck past `prepare_timeout_s`, or its result could not be published;
  its dead letter is sent, with the original message unless that was let go.

A job is done when the broker acknowledges its result or dead letter.

`prepare` runs in a pool thread and only reads the job: it returns the state the job should move
to, and the loop moves it. The loop may have given up on a stuck thread (stream/pool.py), and a
thread that returns late must not change a job that is already dead-lettered. `prepare` never
raises: a rejection is a state, so a poison message cannot stall its partition or stop the
process.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Message

from ..crop import check_keep
from ..decode import DecodedImage
from ..errors import CropworkerError, FetchError, InternalError
from ..pipeline import Cropper
from .events import InlineImage, Source, UploadEvent, parse_event
from .fetch import Fetcher
from .logs import fields
from .metrics import WorkerMetrics
from .offsets import Ticket

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Received:
    """Consumed: being parsed, fetched and decoded in the pool."""


@dataclass(frozen=True)
class Prepared:
    """Decoded, waiting for its batch."""

    event: UploadEvent
    image: DecodedImage = field(repr=False)
    attempts: int = 1  # fetch attempts: a dead letter for an unpublishable result reports them


@dataclass(frozen=True)
class Cropped:
    """Its result is sent and awaits the broker's acknowledgement."""

    event: UploadEvent
    attempts: int = 1


@dataclass(frozen=True)
class Rejected:
    """Its dead letter is sent: why (`code`, an error code of cropworker.errors, and a message)
    and after how many fetch attempts."""

    code: str
    message: str
    attempts: int = 1


State = Received | Prepared | Cropped | Rejected


@dataclass
class Job:
    ticket: Ticket
    source: Source
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    state: State = field(default_factory=Received)
    payload_released: bool = False  # the encoded bytes were let go when the image was decoded

    @classmethod
    def from_message(cls, message: Message, ticket: Ticket) -> Job:
        raw = message.headers() or []
        pairs = list(raw.items()) if isinstance(raw, dict) else list(raw)
        headers = [(k, v if isinstance(v, bytes) else (v or "").encode()) for k, v in pairs]
        source = Source(ticket.topic, ticket.partition, ticket.offset)
        return cls(ticket, source, message.key(), message.value(), headers)

    def prepared(self, prepared: Prepared) -> None:
        """Received → Prepared. The encoded bytes go: the message value and the inline image
        inside the parsed event (the event keeps the rest)."""
        if not isinstance(self.state, Received):
            raise self._illegal(Prepared)
        event = prepared.event
        if isinstance(event.image, InlineImage):
            event = dataclasses.replace(event, image=InlineImage(b""))
        self.state = dataclasses.replace(prepared, event=event)
        self.value, self.payload_released = None, True

    def to_network(self) -> Prepared:
        """Prepared → Cropped: hand the network input to the batch; the job keeps the event."""
        prepared = self.state
        if not isinstance(prepared, Prepared):
            raise self._illegal(Cropped)
        self.state = Cropped(prepared.event, prepared.attempts)
        return prepared

    def reject(self, rejected: Rejected) -> Rejected:
        """Received or Cropped → Rejected: to be dead-lettered instead."""
        if not isinstance(self.state, Received | Cropped):
            raise self._illegal(Rejected)
        self.state = rejected
        return rejected

    def held_bytes(self) -> int:
        """Bytes this job keeps alive: the message (key, value, headers) and, while prepared,
        the network input."""
        total = len(self.key or b"") + len(self.value or b"")
        total += sum(len(name) + len(value) for name, value in self.headers)
        if isinstance(self.state, Prepared):
            total += self.state.image.rgb.nbytes
        return total

    def where(self) -> dict[str, Any]:
        """Log fields naming the input message."""
        return {
            "topic": self.source.topic,
            "partition": self.source.partition,
            "offset": self.source.offset,
        }

    def _illegal(self, to: type[State]) -> InternalError:
        name = type(self.state).__name__
        return InternalError(f"a job cannot go from {name} to {to.__name__} ({self.where()})")


def prepare(
    job: Job,
    *,
    max_image_bytes: int,
    fetcher: Fetcher,
    cropper: Cropper,
    metrics: WorkerMetrics,
    clock: Callable[[], float],
) -> Prepared | Rejected:
    """Parse, fetch and decode `job` (in a pool thread): the state it should move to."""
    attempts = 1
    try:
        event = parse_event(job.value, max_image_bytes)
        start = clock()
        data, attempts = fetcher.fetch(event.image)
        decoding = clock()
        decoded = cropper.decode(data)
        metrics.fetch.observe(decoding - start)
        metrics.decode.observe(clock() - decoding)
        # The first moment the size as displayed is known; rejected here, the dead letter still
        # carries the original message.
        check_keep(event.keep, decoded.width, decoded.height)
        return Prepared(event, decoded, attempts)
    except CropworkerError as exc:
        if isinstance(exc, FetchError):
            attempts = exc.attempts
        return Rejected(exc.code, str(exc), attempts)
    except Exception as exc:  # a bug must not stall the partition: dead-letter it, loudly
        log.exception("unexpected error preparing an event", extra=fields(**job.where()))
        return Rejected(InternalError.code, repr(exc), attempts)

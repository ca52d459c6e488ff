"""One input message on its way through the worker, and the work done on it in the decode pool.

`prepare` runs in a pool thread: parse the event, fetch the image, decode it to the network
input. It never raises: a rejection is recorded on the job (error type, message, attempts) and
the job is dead-lettered by the worker loop, so a poison message cannot stall its partition or
stop the process.
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


@dataclass
class Job:
    ticket: Ticket
    source: Source
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    event: UploadEvent | None = None
    decoded: DecodedImage | None = field(default=None, repr=False)
    error_type: str = ""
    error_message: str = ""
    attempts: int = 1
    payload_released: bool = False
    counted_bytes: int = 0  # what the worker's in-flight byte count holds for this job

    @classmethod
    def from_message(cls, message: Message, ticket: Ticket) -> Job:
        raw = message.headers() or []
        pairs = list(raw.items()) if isinstance(raw, dict) else list(raw)
        headers = [(k, v if isinstance(v, bytes) else (v or "").encode()) for k, v in pairs]
        source = Source(ticket.topic, ticket.partition, ticket.offset)
        return cls(ticket, source, message.key(), message.value(), headers)

    def release_payload(self) -> None:
        """Drop the encoded bytes once the image is decoded: the message value and the inline
        image inside the parsed event (memory stays flat)."""
        self.value, self.payload_released = None, True
        self.drop_image()

    def drop_image(self) -> None:
        """Forget an inline image's bytes (decoded or rejected); the event keeps the rest."""
        if self.event is not None and isinstance(self.event.image, InlineImage):
            self.event = dataclasses.replace(self.event, image=InlineImage(b""))

    def held_bytes(self) -> int:
        """Bytes this job keeps alive: the message (key, value, headers), an inline image's
        data, the decoded network input."""
        total = len(self.key or b"") + len(self.value or b"")
        total += sum(len(name) + len(value) for name, value in self.headers)
        if self.event is not None and isinstance(self.event.image, InlineImage):
            total += len(self.event.image.data)
        if self.decoded is not None:
            total += self.decoded.rgb.nbytes
        return total

    def where(self) -> dict[str, Any]:
        """Log fields naming the input message."""
        return {
            "topic": self.source.topic,
            "partition": self.source.partition,
            "offset": self.source.offset,
        }


def prepare(
    job: Job,
    *,
    max_image_bytes: int,
    fetcher: Fetcher,
    cropper: Cropper,
    metrics: WorkerMetrics,
    clock: Callable[[], float],
) -> Job:
    """Parse, fetch and decode `job` (in a pool thread). Rejections are recorded on the job."""
    try:
        job.event = parse_event(job.value, max_image_bytes)
        start = clock()
        data, job.attempts = fetcher.fetch(job.event.image)
        decoding = clock()
        decoded = cropper.decode(data)
        metrics.fetch.observe(decoding - start)
        metrics.decode.observe(clock() - decoding)
        # The first moment the size as displayed is known; rejected here, the dead letter still
        # carries the original message.
        check_keep(job.event.keep, decoded.width, decoded.height)
        job.decoded = decoded
    except CropworkerError as exc:
        job.error_type, job.error_message = exc.code, str(exc)
        if isinstance(exc, FetchError):
            job.attempts = exc.attempts
    except Exception as exc:  # a bug must not stall the partition: dead-letter it, loudly
        log.exception("unexpected error preparing an event", extra=fields(**job.where()))
        job.error_type, job.error_message = InternalError.code, repr(exc)
    return job

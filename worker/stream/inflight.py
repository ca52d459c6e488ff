"""What is inside the worker, and whether more may come in: admission and backpressure.

At most `max_images` images, holding at most `max_bytes` plus one message, are in flight
(docs/limits.md). Each image counts the bytes it holds now; that changes as it moves on (the
encoded message is let go once decoded, the network input once cropped). One consume() takes no
more messages than the byte room left holds at the largest message size, and at least one, so
an image larger than the limit still passes alone. At either limit the input partitions are
paused until both counts are down to half, so a backlog waits in Kafka, not in memory.

Pure and single-threaded: the loop reports what each image holds and applies the decisions
(how many messages to consume, pause or resume) to the consumer and the metrics.
"""

from __future__ import annotations

import enum
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class Flow(enum.Enum):
    PAUSE = "pause"
    RESUME = "resume"


class InFlight(Generic[K]):
    """The images in flight, each under a key (the worker uses its offset ticket)."""

    def __init__(self, max_images: int, max_bytes: int, max_message_bytes: int) -> None:
        if min(max_images, max_bytes, max_message_bytes) < 1:
            raise ValueError(
                f"limits must be positive, got {max_images}, {max_bytes}, {max_message_bytes}"
            )
        self.max_images = max_images
        self.max_bytes = max_bytes
        self.max_message_bytes = max_message_bytes
        self._held: dict[K, int] = {}
        self.bytes = 0
        self.paused = False

    @property
    def images(self) -> int:
        return len(self._held)

    def hold(self, key: K, nbytes: int) -> None:
        """`key` holds `nbytes` from now on: a new image is admitted, a known one recounted."""
        self.bytes += nbytes - self._held.get(key, 0)
        self._held[key] = nbytes

    def release(self, key: K) -> None:
        """`key` left the worker (answered and acknowledged, or its partition went away).
        Releasing it twice changes nothing."""
        self.bytes -= self._held.pop(key, 0)

    def room(self) -> int:
        """Messages the next consume() may return, from both limits, counting each message at
        the largest size it may have; at least one, so that the worker always makes progress."""
        by_count = self.max_images - self.images
        by_bytes = (self.max_bytes - self.bytes) // self.max_message_bytes
        return max(1, min(by_count, by_bytes))

    def flow(self) -> Flow | None:
        """Pause when either limit is reached, resume once both are down to half; None: leave
        the partitions as they are. `paused` already says the state after the decision."""
        full = self.images >= self.max_images or self.bytes >= self.max_bytes
        half_empty = self.images <= self.max_images // 2 and self.bytes <= self.max_bytes // 2
        if not self.paused and full:
            self.paused = True
            return Flow.PAUSE
        if self.paused and half_empty:
            self.paused = False
            return Flow.RESUME
        return None

    def assigned(self) -> None:
        """New partitions were assigned, and they fetch: the next `flow()` pauses them if the
        worker is still full."""
        self.paused = False

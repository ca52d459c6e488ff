"""A pure micro-batcher: items go in with the time, batches come out when they should run.

A batch is flushed when it is full (`max_batch` items) or when its oldest item has waited
`max_wait_s`, the rule of Triton's dynamic batcher with a queue delay: under load batches fill
and run at once; at low rates no image waits longer than the delay. Items are grouped by a key
(the network input shape), so every batch is one stacked tensor. No clock is read here: the
caller passes `now`, which makes the batcher deterministic and easy to test.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")


@dataclass(frozen=True)
class Batch(Generic[K, T]):
    key: K
    items: list[T]
    waited_s: float  # how long the oldest item waited


class MicroBatcher(Generic[K, T]):
    def __init__(self, max_batch: int, max_wait_s: float) -> None:
        if max_batch < 1 or max_wait_s < 0:
            raise ValueError(
                f"need max_batch >= 1 and max_wait_s >= 0, got {max_batch}, {max_wait_s}"
            )
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self._groups: dict[K, deque[tuple[T, float]]] = {}

    def __len__(self) -> int:
        return sum(len(group) for group in self._groups.values())

    def add(self, key: K, item: T, now: float) -> None:
        self._groups.setdefault(key, deque()).append((item, now))

    def next_deadline(self) -> float | None:
        """When the next batch is due (None: nothing waits). A full group has been due since its
        oldest item arrived; any other group is due when its oldest item has waited
        `max_wait_s`."""
        due = [
            group[0][1] + (0.0 if len(group) >= self.max_batch else self.max_wait_s)
            for group in self._groups.values()
        ]
        return min(due) if due else None

    def pop_ready(self, now: float) -> Batch[K, T] | None:
        """One batch that should run now: a full one first, else the most overdue one."""
        for key, group in self._groups.items():
            if len(group) >= self.max_batch:
                return self._pop(key, now)
        overdue = [
            (group[0][1], key)
            for key, group in self._groups.items()
            if group[0][1] + self.max_wait_s <= now  # the same sum as next_deadline()
        ]
        if not overdue:
            return None
        return self._pop(min(overdue, key=lambda pair: pair[0])[1], now)

    def pop_all(self, now: float) -> list[Batch[K, T]]:
        """Everything waiting, as batches of at most `max_batch` (for draining)."""
        batches = []
        while self._groups:
            batches.append(self._pop(next(iter(self._groups)), now))
        return batches

    def remove(self, drop: Callable[[T], bool]) -> list[T]:
        """Take out and return the items for which `drop` is true (e.g. of lost partitions)."""
        dropped = []
        for key in list(self._groups):
            kept = deque(pair for pair in self._groups[key] if not drop(pair[0]))
            dropped += [item for item, _ in self._groups[key] if drop(item)]
            if kept:
                self._groups[key] = kept
            else:
                del self._groups[key]
        return dropped

    def _pop(self, key: K, now: float) -> Batch[K, T]:
        group = self._groups[key]
        taken = [group.popleft() for _ in range(min(self.max_batch, len(group)))]
        if not group:
            del self._groups[key]
        return Batch(key, [item for item, _ in taken], now - taken[0][1])

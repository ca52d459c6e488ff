"""Which input offsets may be committed: in-order, contiguous acknowledgement per partition.

Messages of a partition finish out of order (batches group images by shape; a dead letter is
quicker than a crop). An offset may be stored only when it and every earlier offset of that
partition have their output acknowledged by the broker; otherwise a crash would skip the
unfinished ones. `OffsetTracker` keeps, per partition, the offsets still outstanding and answers
with the next offset to commit (last contiguous acknowledged + 1) whenever it advances.

When a partition is revoked or lost its state is dropped and its epoch bumped: tickets issued
before can no longer move its offsets, so a late acknowledgement from a previous owner period is
ignored. Pure and single-threaded: the worker calls it from its loop only.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

PartitionKey = tuple[str, int]  # (topic, partition)


@dataclass(frozen=True)
class Ticket:
    """One consumed message, as the tracker knows it."""

    topic: str
    partition: int
    offset: int
    epoch: int

    @property
    def key(self) -> PartitionKey:
        return self.topic, self.partition


@dataclass
class _Partition:
    epoch: int
    outstanding: deque[int] = field(default_factory=deque)  # consumed, in consumption order
    acked: set[int] = field(default_factory=set)  # acknowledged but not yet contiguous


class OffsetTracker:
    def __init__(self) -> None:
        self._partitions: dict[PartitionKey, _Partition] = {}
        self._epoch = 0

    def track(self, topic: str, partition: int, offset: int) -> Ticket:
        """Record a consumed message; its offset stays uncommittable until it is acked."""
        state = self._partitions.get((topic, partition))
        if state is None:
            self._epoch += 1
            state = self._partitions[(topic, partition)] = _Partition(self._epoch)
        state.outstanding.append(offset)
        return Ticket(topic, partition, offset, state.epoch)

    def is_current(self, ticket: Ticket) -> bool:
        state = self._partitions.get(ticket.key)
        return state is not None and state.epoch == ticket.epoch

    def ack(self, ticket: Ticket) -> int | None:
        """Mark `ticket` done. Returns the partition's new commit offset if it advanced."""
        if not self.is_current(ticket):
            return None
        state = self._partitions[ticket.key]
        state.acked.add(ticket.offset)
        last = None
        while state.outstanding and state.outstanding[0] in state.acked:
            last = state.outstanding.popleft()
            state.acked.discard(last)
        return None if last is None else last + 1

    def drop(self, partitions: Iterable[PartitionKey]) -> None:
        """Forget partitions (revoked or lost); their outstanding tickets become stale."""
        for key in partitions:
            self._partitions.pop(key, None)

    def outstanding(self, key: PartitionKey | None = None) -> int:
        """Messages consumed and not yet contiguously acknowledged (one partition, or all)."""
        if key is not None:
            state = self._partitions.get(key)
            return len(state.outstanding) if state else 0
        return sum(len(state.outstanding) for state in self._partitions.values())

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from cropworker.stream.offsets import OffsetTracker


def test_an_offset_is_committable_only_when_every_earlier_one_is_acknowledged() -> None:
    tracker = OffsetTracker()
    tickets = [tracker.track("t", 0, offset) for offset in (10, 11, 12)]
    assert tracker.ack(tickets[1]) is None  # 10 is still outstanding
    assert tracker.ack(tickets[0]) == 12  # 10 and 11 done: resume at 12
    assert tracker.outstanding() == 1
    assert tracker.ack(tickets[2]) == 13
    assert tracker.outstanding() == 0


def test_partitions_are_independent() -> None:
    tracker = OffsetTracker()
    a, b = tracker.track("t", 0, 5), tracker.track("t", 1, 7)
    assert tracker.ack(b) == 8
    assert tracker.outstanding(("t", 0)) == 1
    assert tracker.ack(a) == 6


def test_after_a_drop_old_tickets_are_ignored() -> None:
    tracker = OffsetTracker()
    old = tracker.track("t", 0, 1)
    tracker.drop([("t", 0)])
    assert not tracker.is_current(old)
    new = tracker.track("t", 0, 1)  # the partition came back: the message is consumed again
    assert tracker.ack(old) is None
    assert tracker.outstanding(("t", 0)) == 1
    assert tracker.ack(new) == 2


@given(st.permutations(list(range(20))))
def test_the_commit_offset_is_the_contiguous_prefix(order: list[int]) -> None:
    tracker = OffsetTracker()
    tickets = [tracker.track("t", 0, offset) for offset in range(20)]
    done: set[int] = set()
    committed = 0
    for offset in order:
        done.add(offset)
        advanced = tracker.ack(tickets[offset])
        prefix = next(i for i in range(21) if i not in done)
        if advanced is not None:
            committed = advanced
        assert committed == prefix

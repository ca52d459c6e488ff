from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cropworker.stream.batcher import MicroBatcher


def test_a_full_batch_flushes_at_once() -> None:
    batcher: MicroBatcher[str, int] = MicroBatcher(max_batch=3, max_wait_s=1.0)
    for i in range(4):
        batcher.add("a", i, now=0.0)
    batch = batcher.pop_ready(now=0.0)
    assert batch is not None and batch.items == [0, 1, 2] and batch.waited_s == 0.0
    assert batcher.pop_ready(now=0.5) is None
    assert len(batcher) == 1


def test_a_partial_batch_waits_for_the_delay_of_its_oldest_item() -> None:
    batcher: MicroBatcher[str, int] = MicroBatcher(max_batch=8, max_wait_s=0.010)
    batcher.add("a", 1, now=1.000)
    batcher.add("a", 2, now=1.006)
    assert batcher.next_deadline() == pytest.approx(1.010)
    assert batcher.pop_ready(now=1.009) is None
    batch = batcher.pop_ready(now=1.010)
    assert batch is not None and batch.items == [1, 2]
    assert batch.waited_s == pytest.approx(0.010)
    assert batcher.next_deadline() is None and len(batcher) == 0


def test_keys_batch_separately_and_the_most_overdue_goes_first() -> None:
    batcher: MicroBatcher[tuple[int, int], str] = MicroBatcher(max_batch=4, max_wait_s=0.01)
    batcher.add((192, 256), "landscape-1", now=0.000)
    batcher.add((256, 192), "portrait-1", now=0.001)
    batcher.add((192, 256), "landscape-2", now=0.002)
    first, second = batcher.pop_ready(now=0.05), batcher.pop_ready(now=0.05)
    assert first is not None and first.key == (192, 256)
    assert first.items == ["landscape-1", "landscape-2"]
    assert second is not None and second.items == ["portrait-1"]


def test_a_full_group_is_due_even_when_another_is_older() -> None:
    batcher: MicroBatcher[str, int] = MicroBatcher(max_batch=2, max_wait_s=1.0)
    batcher.add("old", 0, now=0.0)
    batcher.add("new", 1, now=0.5)
    batcher.add("new", 2, now=0.6)
    assert batcher.next_deadline() == 0.5  # due since its oldest item arrived
    batch = batcher.pop_ready(now=0.6)
    assert batch is not None and batch.key == "new"


def test_pop_all_and_remove() -> None:
    batcher: MicroBatcher[str, int] = MicroBatcher(max_batch=2, max_wait_s=1.0)
    for i in range(5):
        batcher.add("even" if i % 2 == 0 else "odd", i, now=float(i))
    assert batcher.remove(lambda item: item == 2) == [2]
    batches = batcher.pop_all(now=10.0)
    assert [b.items for b in batches] == [[0, 4], [1, 3]]
    assert len(batcher) == 0


def test_bad_limits_are_rejected() -> None:
    with pytest.raises(ValueError, match="max_batch"):
        MicroBatcher(max_batch=0, max_wait_s=0.1)


@given(
    arrivals=st.lists(
        st.tuples(st.sampled_from("abc"), st.floats(0, 0.05)), min_size=1, max_size=60
    ),
    max_batch=st.integers(1, 8),
)
def test_every_item_comes_out_once_in_order_and_never_late(
    arrivals: list[tuple[str, float]], max_batch: int
) -> None:
    """Driven like the worker drives it (polled at every arrival and every deadline), no batch
    is larger than max_batch, no item waits past max_wait, and per key the order is kept."""
    max_wait = 0.01
    batcher: MicroBatcher[str, tuple[int, float]] = MicroBatcher(max_batch, max_wait)
    out = []

    def run_until(limit: float) -> None:  # what the loop does between two arrivals
        while (due := batcher.next_deadline()) is not None and due <= limit:
            while batch := batcher.pop_ready(due):
                out.append((batch, due))

    now = 0.0
    for i, (key, gap) in enumerate(arrivals):
        now += gap
        run_until(now)
        batcher.add(key, (i, now), now)
        run_until(now)
    run_until(float("inf"))
    items = [item for batch, _ in out for item in batch.items]
    assert sorted(i for i, _ in items) == list(range(len(arrivals)))
    for batch, flushed_at in out:
        assert 1 <= len(batch.items) <= max_batch
        assert all(flushed_at - added <= max_wait + 1e-9 for _, added in batch.items)
    for key in "abc":
        order = [i for batch, _ in out if batch.key == key for i, _ in batch.items]
        assert order == sorted(order)

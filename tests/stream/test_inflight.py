from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cropworker.stream.inflight import Flow, InFlight

MiB = 1024 * 1024


def test_room_is_bounded_by_images_and_by_bytes_at_the_largest_message() -> None:
    flight: InFlight[int] = InFlight(max_images=10, max_bytes=8 * MiB, max_message_bytes=MiB)
    assert flight.room() == 8  # the byte limit is the tighter one
    for key in range(7):
        flight.hold(key, 1000)
    assert flight.room() == 3  # now the image count is
    flight.hold(7, 6 * MiB)
    assert flight.room() == 1  # 2 MiB - 8000 bytes left: one whole message does not fit


def test_there_is_always_room_for_one_message() -> None:
    flight: InFlight[str] = InFlight(max_images=2, max_bytes=MiB, max_message_bytes=5 * MiB)
    assert flight.room() == 1  # a message may be larger than the whole limit: it passes alone
    flight.hold("a", 3 * MiB)
    flight.hold("b", 3 * MiB)
    assert flight.room() == 1


def test_a_job_is_recounted_as_it_lets_go_of_bytes_and_released_once() -> None:
    flight: InFlight[str] = InFlight(max_images=4, max_bytes=MiB, max_message_bytes=1000)
    flight.hold("a", 500)  # the message
    flight.hold("b", 300)
    flight.hold("a", 90_000)  # decoded: the network input instead of the message
    assert (flight.images, flight.bytes) == (2, 90_300)
    flight.release("a")
    flight.release("a")  # its partition was dropped too: no second decrement
    assert (flight.images, flight.bytes) == (1, 300)


def test_pause_at_either_limit_and_resume_when_both_are_down_to_half() -> None:
    flight: InFlight[int] = InFlight(max_images=4, max_bytes=1000, max_message_bytes=100)
    flight.hold(0, 1000)
    assert flight.flow() is Flow.PAUSE and flight.paused  # the byte limit
    assert flight.flow() is None  # already paused
    flight.hold(0, 400)
    for key in range(1, 4):
        flight.hold(key, 10)
    assert flight.flow() is None  # bytes below half, images still at their limit
    flight.release(3)
    assert flight.flow() is None  # 3 images: above half of 4
    flight.release(2)
    assert flight.flow() is Flow.RESUME and not flight.paused
    assert flight.flow() is None
    for key in range(2, 4):
        flight.hold(key, 10)
    assert flight.flow() is Flow.PAUSE  # the image limit


def test_an_assignment_fetches_until_the_next_decision() -> None:
    flight: InFlight[int] = InFlight(max_images=1, max_bytes=1000, max_message_bytes=100)
    flight.hold(0, 10)
    assert flight.flow() is Flow.PAUSE
    flight.assigned()
    assert not flight.paused
    assert flight.flow() is Flow.PAUSE  # still full: the new partitions are paused too


def test_bad_limits_are_rejected() -> None:
    with pytest.raises(ValueError, match="positive"):
        InFlight(max_images=1, max_bytes=0, max_message_bytes=1)


@given(
    st.lists(
        st.tuples(st.booleans(), st.integers(0, 9), st.integers(0, 5000)), min_size=1, max_size=80
    )
)
def test_the_counts_are_what_the_held_keys_hold(ops: list[tuple[bool, int, int]]) -> None:
    flight: InFlight[int] = InFlight(max_images=6, max_bytes=8000, max_message_bytes=1000)
    held: dict[int, int] = {}
    for keep, key, nbytes in ops:
        if keep:
            flight.hold(key, nbytes)
            held[key] = nbytes
        else:
            flight.release(key)
            held.pop(key, None)
        was_paused = flight.paused
        decision = flight.flow()
        assert (flight.images, flight.bytes) == (len(held), sum(held.values()))
        full = len(held) >= 6 or sum(held.values()) >= 8000
        if full:
            assert flight.paused and decision is (None if was_paused else Flow.PAUSE)
        if not flight.paused:
            assert not full
        assert 1 <= flight.room() <= max(1, 6 - len(held))

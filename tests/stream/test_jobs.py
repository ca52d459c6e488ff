"""A job's typed states: which moves are allowed, what each state holds in memory, and what
`prepare` (the pool's work) makes of good and bad messages without touching the job."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from cropworker.backend import ModelInfo
from cropworker.decode import DecodedImage
from cropworker.errors import InternalError
from cropworker.pipeline import Cropper
from cropworker.stream.events import InlineImage, Source, parse_event, upload_event
from cropworker.stream.fetch import Fetcher, FetchPolicy
from cropworker.stream.jobs import Cropped, Job, Prepared, Received, Rejected, prepare
from cropworker.stream.metrics import WorkerMetrics
from cropworker.stream.offsets import Ticket

TOPIC = "uploads"
MiB = 1024 * 1024
HEADERS = [("trace", b"abc")]  # 8 bytes with the name
NETWORK_INPUT = 160 * 192 * 3


class NoNetwork:
    """`prepare` decodes; it never runs the network."""

    info = ModelInfo("none", "0", 64, 8)

    def infer(self, images: np.ndarray) -> np.ndarray:
        raise AssertionError("prepare must not run the network")


def job_for(value: bytes | None) -> Job:
    return Job(Ticket(TOPIC, 0, 7, 1), Source(TOPIC, 0, 7), b"m1", value, list(HEADERS))


def prepared_for(value: bytes) -> Prepared:
    image = DecodedImage(np.zeros((160, 192, 3), np.uint8), 1200, 1000, "jpeg")
    return Prepared(parse_event(value, 50 * MiB), image, attempts=2)


def test_a_job_holds_its_message_then_only_its_network_input_then_neither() -> None:
    value = upload_event("m1", 0, data=bytes(range(256)) * 4096)  # a 1 MiB inline image
    job = job_for(value)
    assert job.held_bytes() == len(value) + 2 + 8
    job.prepared(prepared_for(value))
    state = job.state
    assert isinstance(state, Prepared)
    assert job.value is None and job.payload_released
    assert state.event.image == InlineImage(b"")  # the encoded bytes are not kept alive
    assert (state.event.media_id, state.event.timestamp_ms) == ("m1", 0)
    assert job.held_bytes() == NETWORK_INPUT + 2 + 8
    handed = job.to_network()
    assert handed.image.rgb.shape == (160, 192, 3)
    assert job.state == Cropped(handed.event, attempts=2)
    assert job.held_bytes() == 2 + 8


def test_a_result_that_cannot_be_published_is_rejected_instead() -> None:
    value = upload_event("m1", 0, data=b"jpeg")
    job = job_for(value)
    job.prepared(prepared_for(value))
    job.to_network()
    rejected = Rejected("publish_failed", "timed out", attempts=2)
    assert job.reject(rejected) is rejected and job.state is rejected
    assert job.payload_released  # the dead letter says so: its payload is gone


def test_a_rejected_message_keeps_its_payload_for_the_dead_letter() -> None:
    job = job_for(b"{not json")
    job.reject(Rejected("bad_event", "not JSON"))
    assert job.value == b"{not json" and not job.payload_released
    assert job.held_bytes() == len(b"{not json") + 2 + 8


def test_moves_that_skip_or_repeat_a_state_are_bugs() -> None:
    value = upload_event("m1", 0, data=b"jpeg")
    job = job_for(value)
    with pytest.raises(InternalError, match="from Received to Cropped"):
        job.to_network()
    job.prepared(prepared_for(value))
    with pytest.raises(InternalError, match="from Prepared to Prepared"):
        job.prepared(prepared_for(value))
    with pytest.raises(InternalError, match="from Prepared to Rejected"):
        job.reject(Rejected("timeout", "too slow"))
    job.to_network()
    job.reject(Rejected("publish_failed", "timed out"))
    with pytest.raises(InternalError, match="from Rejected to Rejected"):
        job.reject(Rejected("publish_failed", "again"))


def run_prepare(job: Job) -> Prepared | Rejected:
    return prepare(
        job,
        max_image_bytes=50 * MiB,
        fetcher=Fetcher(FetchPolicy()),
        cropper=Cropper(NoNetwork()),
        metrics=WorkerMetrics(CollectorRegistry()),
        clock=lambda: 0.0,
    )


def test_prepare_decodes_a_good_event_without_touching_the_job() -> None:
    ok, jpeg = cv2.imencode(".jpg", np.full((90, 120, 3), 128, np.uint8))
    assert ok
    job = job_for(upload_event("m1", 5, data=jpeg.tobytes()))
    outcome = run_prepare(job)
    assert isinstance(outcome, Prepared)
    assert (outcome.image.width, outcome.image.height) == (120, 90)
    assert outcome.image.rgb.shape[2] == 3 and max(outcome.image.rgb.shape) <= 64
    assert outcome.event.media_id == "m1" and outcome.attempts == 1
    assert isinstance(job.state, Received) and job.value is not None  # the loop moves it


@pytest.mark.parametrize(
    ("value", "code"),
    [
        (b"{not json", "bad_event"),
        (None, "bad_event"),  # a tombstone
        (upload_event("m1", 0, data=b"\xff\xd8\xff truncated"), "corrupt"),
        (upload_event("m1", 0, url="file:///etc/passwd"), "fetch_forbidden"),
    ],
)
def test_prepare_turns_every_failure_into_a_rejection(value: bytes | None, code: str) -> None:
    outcome = run_prepare(job_for(value))
    assert isinstance(outcome, Rejected)
    assert outcome.code == code and outcome.message and outcome.attempts == 1

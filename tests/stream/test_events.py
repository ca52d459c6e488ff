from __future__ import annotations

import base64
import json
from typing import Any

import jsonschema
import numpy as np
import pytest

from cropworker.errors import EventError, ImageTooLargeError
from cropworker.pipeline import CropResult
from cropworker.stream.events import (
    RESULT_SCHEMA,
    UPLOAD_SCHEMA,
    ImageUrl,
    InlineImage,
    Source,
    UploadEvent,
    dead_letter_headers,
    parse_event,
    result_message,
    schema,
    upload_event,
)

LIMIT = 1000


def doc(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "schema": UPLOAD_SCHEMA,
        "media_id": "m-1",
        "timestamp_ms": 1700000000000,
        "image": {"url": "https://img.example.com/a.jpg"},
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


VALID = [
    doc(),
    doc(image={"data_b64": base64.b64encode(b"\xff\xd8\xff").decode()}),
    doc(aspects=["16:9", "1.91:1"]),
    doc(extra_field="ignored by v1 readers"),
    doc(image={"url": "file:///data/a.jpg"}),
]
INVALID = [
    doc(schema="cropworker.upload.v2"),
    doc(media_id=""),
    doc(media_id="a\nb"),
    doc(media_id=7),
    doc(timestamp_ms=-1),
    doc(timestamp_ms="1700000000000"),
    doc(timestamp_ms=True),
    doc(image={"url": "https://a/b.jpg", "data_b64": ""}),
    doc(image={"path": "/a.jpg"}),
    doc(image={"data_b64": "not base64!"}),
    doc(aspects=[]),
    doc(aspects=["16x9"]),
    doc(aspects="16:9"),
    doc(image={"url": "ftp://example.com/a.jpg"}),
    doc(image=None),
]


@pytest.mark.parametrize("event", VALID)
def test_valid_events_parse_and_match_the_schema(event: dict[str, Any]) -> None:
    jsonschema.validate(event, schema(UPLOAD_SCHEMA))
    parsed = parse_event(json.dumps(event).encode(), LIMIT)
    assert parsed.media_id == event["media_id"]
    assert parsed.aspects == (tuple(event["aspects"]) if "aspects" in event else None)


@pytest.mark.parametrize("event", INVALID)
def test_invalid_events_are_rejected_by_parser_and_schema(event: dict[str, Any]) -> None:
    with pytest.raises(EventError):
        parse_event(json.dumps(event).encode(), LIMIT)
    validator = jsonschema.Draft202012Validator(
        schema(UPLOAD_SCHEMA), format_checker=jsonschema.FormatChecker()
    )
    if "data_b64" in event.get("image", {}) and event["image"]["data_b64"] == "not base64!":
        return  # contentEncoding is an annotation in JSON Schema 2020-12, not an assertion
    assert not validator.is_valid(event)


@pytest.mark.parametrize("value", [None, b"", b"\xff\xfe", b"[1, 2]", b"{"])
def test_values_that_are_not_json_objects_are_rejected(value: bytes | None) -> None:
    with pytest.raises(EventError):
        parse_event(value, LIMIT)


def test_inline_images_over_the_limit_are_rejected_before_decoding() -> None:
    event = upload_event("m", 1, data=bytes(LIMIT + 10))
    with pytest.raises(ImageTooLargeError):
        parse_event(event, LIMIT)
    assert parse_event(upload_event("m", 1, data=bytes(LIMIT)), LIMIT).image == InlineImage(
        bytes(LIMIT)
    )


def test_upload_event_round_trip() -> None:
    event = parse_event(upload_event("m", 5, url="file:///x.jpg", aspects=["1:1"]), LIMIT)
    assert event == UploadEvent("m", 5, ImageUrl("file:///x.jpg"), ("1:1",))


def test_result_message_matches_the_schema() -> None:
    result = CropResult(
        width=640,
        height=480,
        saliency=np.full((12, 16), 1 / 192, np.float32),
        crops={"1:1": (80, 0, 480, 480)},
        salient_points=[(320, 240, 1.0), (10, 10, 0.25)],
        model="vanilla@1",
    )
    event = UploadEvent("m-1", 1000, InlineImage(b""))
    value = result_message(event, result, Source("up", 2, 41), 1250)
    doc = json.loads(value)
    jsonschema.validate(doc, schema(RESULT_SCHEMA))
    assert doc["crops"] == {"1:1": [80, 0, 480, 480]}
    assert doc["latency_ms"] == 250
    assert doc["source"] == {"topic": "up", "partition": 2, "offset": 41}
    bad = {**doc, "crops": {"1:1": [80, 0, 480]}}
    assert not jsonschema.Draft202012Validator(schema(RESULT_SCHEMA)).is_valid(bad)


def test_dead_letter_headers_keep_the_originals_and_say_why() -> None:
    headers = dict(
        dead_letter_headers("corrupt", "x" * 5000, 2, Source("up", 1, 9), [("trace", b"abc")])
    )
    assert headers["trace"] == b"abc"
    assert headers["error.type"] == b"corrupt"
    assert len(headers["error.message"]) == 1000
    assert headers["error.attempts"] == b"2"
    assert (headers["source.partition"], headers["source.offset"]) == (b"1", b"9")

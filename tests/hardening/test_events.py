"""Hostile upload events at the library level: every rejection is a typed error, and what is
accepted can go all the way through the worker (its key encodes, its aspects give boxes)."""

from __future__ import annotations

import json

import jsonschema
import pytest

from cropworker import errors
from cropworker.stream.events import (
    MAX_TIMESTAMP_MS,
    UPLOAD_SCHEMA,
    parse_event,
    schema,
)
from fuzz.targets import answer
from tests.hardening import corpus

REJECTED = corpus.rejected_events()
ACCEPTED = corpus.accepted_events()


@pytest.mark.parametrize("case", REJECTED, ids=[c.name for c in REJECTED])
def test_hostile_events_get_their_typed_error(case: corpus.Case) -> None:
    assert case.error is not None
    with pytest.raises(errors.CropworkerError) as raised:
        parse_event(case.data, corpus.EVENT_IMAGE_LIMIT)
    assert type(raised.value) is case.error, raised.value
    assert raised.value.code == case.error.code


def test_a_message_without_a_value_is_an_event_error() -> None:
    with pytest.raises(errors.EventError, match="no value"):
        parse_event(None, corpus.EVENT_IMAGE_LIMIT)


@pytest.mark.parametrize("case", ACCEPTED, ids=[c.name for c in ACCEPTED])
def test_odd_events_are_accepted_and_can_be_answered(case: corpus.Case) -> None:
    event = parse_event(case.data, corpus.EVENT_IMAGE_LIMIT)
    answer(event)


def test_the_last_duplicate_key_wins() -> None:
    event = parse_event(corpus.event()[:-1] + b', "media_id": "m-2"}', corpus.EVENT_IMAGE_LIMIT)
    assert event.media_id == "m-2"


def test_the_largest_timestamp_survives_the_round_trip() -> None:
    event = parse_event(corpus.event(timestamp_ms=MAX_TIMESTAMP_MS), corpus.EVENT_IMAGE_LIMIT)
    assert answer(event)["timestamp_ms"] == MAX_TIMESTAMP_MS


# Rules the schema does not state: contentEncoding is only an annotation (base64 with other
# characters), the byte limit is the worker's setting, a lone surrogate is a valid JSON string,
# and the aspect pattern checks digits, not that they are above zero.
SCHEMA_CANNOT_SAY = {
    "image-not-base64",
    "image-base64-non-ascii",
    "image-base64-lone-surrogate",
    "image-over-limit",
    "media-id-lone-surrogate",
    "aspect-zero",
}


@pytest.mark.parametrize("case", REJECTED, ids=[c.name for c in REJECTED])
def test_the_schema_rejects_them_too(case: corpus.Case) -> None:
    try:
        doc = json.loads(case.data)
    except (ValueError, RecursionError):
        return  # not JSON at all: nothing for a schema to judge
    validator = jsonschema.Draft202012Validator(schema(UPLOAD_SCHEMA))
    assert validator.is_valid(doc) == (case.name in SCHEMA_CANNOT_SAY)


@pytest.mark.parametrize("case", ACCEPTED, ids=[c.name for c in ACCEPTED])
def test_the_schema_accepts_the_odd_ones(case: corpus.Case) -> None:
    jsonschema.validate(json.loads(case.data), schema(UPLOAD_SCHEMA))

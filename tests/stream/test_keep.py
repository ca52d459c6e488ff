"""Keep-regions in upload events: parsing (and agreement with the schema), the result's `keep`
field, schema compatibility of old messages, and the worker honouring them on the real broker."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import jsonschema
import numpy as np
import pytest

from cropworker import crop
from cropworker.backend import OnnxBackend
from cropworker.demo.broker import EmbeddedBroker
from cropworker.errors import EventError, KeepError
from cropworker.pipeline import Cropper, CropResult
from cropworker.stream.events import (
    MAX_KEEP,
    RESULT_SCHEMA,
    UPLOAD_SCHEMA,
    InlineImage,
    Source,
    UploadEvent,
    parse_event,
    result_message,
    schema,
    upload_event,
)
from tests.images import photo
from tests.stream.conftest import Reader, RunningWorker, Topics, send, settings_for

LIMIT = 1000
NOW_MS = int(time.time() * 1000)


def event(keep: Any) -> dict[str, Any]:
    return {
        "schema": UPLOAD_SCHEMA,
        "media_id": "m-1",
        "timestamp_ms": 1700000000000,
        "image": {"url": "https://img.example.com/a.jpg"},
        "keep": keep,
    }


@pytest.mark.parametrize(
    ("keep", "parsed"),
    [
        ([[10, 20, 30, 40]], ((10, 20, 30, 40),)),
        ([[5, 7]], ((5, 7, 1, 1),)),
        ([[0.5, 1.5, 2.25, 3], [9.9, 0]], ((0, 1, 3, 4), (9, 0, 1, 1))),
        ([[1, 1]] * MAX_KEEP, ((1, 1, 1, 1),) * MAX_KEEP),
    ],
)
def test_valid_keep_parses_and_matches_the_schema(keep: Any, parsed: tuple[crop.Box]) -> None:
    doc = event(keep)
    jsonschema.validate(doc, schema(UPLOAD_SCHEMA))
    assert parse_event(json.dumps(doc).encode(), LIMIT).keep == parsed


@pytest.mark.parametrize(
    ("keep", "says"),
    [
        ([], "keep must be a list of 1 to 16 regions"),
        ([[1, 1]] * (MAX_KEEP + 1), "keep must be a list of 1 to 16 regions"),
        ("0,0,10,10", "keep must be a list"),
        ({"x": 1, "y": 2}, "keep must be a list"),
        ([0, 0, 10, 10], r"keep\[0\] must be a box \[x, y, w, h\] or a point \[x, y\]"),
        ([[1, 2], ["1", 2]], r"keep\[1\] must be a box"),
        ([[True, 2]], r"keep\[0\] must be a box"),
        ([[None, 2]], r"keep\[0\] must be a box"),
        ([[0, 0, 10]], r"keep\[0\]: .*got 3 numbers"),
        ([[1, 2, 3, 4, 5]], r"keep\[0\]: .*got 5 numbers"),
        ([[1]], r"keep\[0\]: .*got 1 numbers"),
        ([[-1, 2]], r"keep\[0\]: .*x and y must be >= 0"),
        ([[5, 5], [0, 0, 0, 5]], r"keep\[1\]: .*positive width and height"),
        ([[0, 0, 5, -2]], r"keep\[0\]: .*positive width and height"),
    ],
)
def test_invalid_keep_is_rejected_by_parser_and_schema(keep: Any, says: str) -> None:
    doc = event(keep)
    with pytest.raises(KeepError, match=says) as info:
        parse_event(json.dumps(doc).encode(), LIMIT)
    assert isinstance(info.value, EventError) and info.value.code == "bad_event"
    assert not jsonschema.Draft202012Validator(schema(UPLOAD_SCHEMA)).is_valid(doc)


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_numbers_json_cannot_carry_are_rejected(number: str) -> None:
    """Python's JSON reader takes NaN and Infinity (and 1e400 as infinity); JSON does not."""
    value = json.dumps(event([[1, 2]])).replace("[[1, 2]]", f"[[{number}, 2]]").encode()
    with pytest.raises(KeepError, match="finite"):
        parse_event(value, LIMIT)


def test_upload_event_carries_keep() -> None:
    value = upload_event("m", 5, url="file:///x.jpg", keep=[[1, 2, 3, 4], [5, 6]])
    assert parse_event(value, LIMIT).keep == ((1, 2, 3, 4), (5, 6, 1, 1))
    assert parse_event(upload_event("m", 5, url="file:///x.jpg"), LIMIT).keep == ()


def result(keep: dict[str, Any] | None) -> CropResult:
    saliency = np.full((12, 16), 1 / 192, np.float32)
    crops = {"16:9": (0, 60, 640, 360), "1:1": (80, 0, 480, 480)}
    return CropResult(640, 480, saliency, crops, [(320, 240, 1.0)], "vanilla@1", keep)


def test_result_message_says_what_was_kept() -> None:
    ask = UploadEvent("m-1", 1000, InlineImage(b""), keep=((600, 10, 30, 30),))
    kept = result({"16:9": "all", "1:1": "partial"})
    doc = json.loads(result_message(ask, kept, Source("up", 0, 1), 1250))
    jsonschema.validate(doc, schema(RESULT_SCHEMA))
    assert doc["keep"] == {"16:9": "all", "1:1": "partial"}
    validator = jsonschema.Draft202012Validator(schema(RESULT_SCHEMA))
    assert not validator.is_valid({**doc, "keep": {"16:9": "most"}})
    assert not validator.is_valid({**doc, "keep": {}})


def test_messages_without_keep_stay_valid() -> None:
    """Producers and consumers written before keep-regions: their messages still validate, and
    a result says nothing about keeping unless the event asked."""
    old_event = {
        "schema": UPLOAD_SCHEMA,
        "media_id": "m-1",
        "timestamp_ms": 1700000000000,
        "image": {"url": "https://img.example.com/a.jpg"},
        "aspects": ["16:9"],
    }
    jsonschema.validate(old_event, schema(UPLOAD_SCHEMA))
    assert parse_event(json.dumps(old_event).encode(), LIMIT).keep == ()
    old_result = {
        "schema": RESULT_SCHEMA,
        "media_id": "m-1",
        "width": 640,
        "height": 480,
        "crops": {"16:9": [0, 60, 640, 360]},
        "salient_points": [[320, 240, 1.0]],
        "model": "vanilla@1",
        "timestamp_ms": 1000,
        "processed_at_ms": 1250,
        "latency_ms": 250,
        "source": {"topic": "up", "partition": 0, "offset": 1},
    }
    jsonschema.validate(old_result, schema(RESULT_SCHEMA))
    plain = UploadEvent("m-1", 1000, InlineImage(b""))
    doc = json.loads(result_message(plain, result(None), Source("up", 0, 1), 1250))
    assert "keep" not in doc
    assert "keep" not in schema(UPLOAD_SCHEMA)["required"]
    assert "keep" not in schema(RESULT_SCHEMA)["required"]


@pytest.mark.broker
def test_the_worker_honours_keep_and_dead_letters_bad_regions(
    broker: EmbeddedBroker,
    topics: Topics,
    start_worker: Callable[..., RunningWorker],
    reader_factory: Callable[[Topics], Reader],
    backend: OnnxBackend,
) -> None:
    coffee = photo("coffee.jpg")  # 600x400
    edge = [2, 150, 30, 60]  # at the left edge: every default aspect can hold it
    shown = [600, 10, 35, 30]  # rocket_exif6 is stored 427x640 and shown 640x427
    good = {
        "edge": upload_event("edge", NOW_MS, data=coffee, keep=[edge]),
        "apart": upload_event(
            "apart", NOW_MS, data=coffee, aspects=["16:9", "1:1"], keep=[[3, 200], [596, 200]]
        ),
        "rotated": upload_event("rotated", NOW_MS, data=photo("rocket_exif6.jpg"), keep=[shown]),
        "plain": upload_event("plain", NOW_MS, data=coffee),
    }
    bad = {
        "outside": upload_event("outside", NOW_MS, data=coffee, keep=[edge, [590, 0, 20, 20]]),
        "malformed": upload_event("malformed", NOW_MS, data=coffee, keep=[[1, 2, 3]]),
    }
    messages = [(key.encode(), value) for key, value in {**good, **bad}.items()]
    reader = reader_factory(topics)
    running = start_worker(settings_for(broker.bootstrap, topics))
    send(broker.bootstrap, topics.input, messages)

    reader.until(lambda seen: len(seen) >= len(messages), 60)
    outputs = [json.loads(m.value() or b"") for m in reader.on(topics.output)]
    results = {r["media_id"]: r for r in outputs}
    assert sorted(r["media_id"] for r in outputs) == sorted(good)
    letters = {(m.key() or b"").decode(): m for m in reader.on(topics.dead_letter)}
    assert sorted(letters) == sorted(bad)
    for doc in outputs:
        jsonschema.validate(doc, schema(RESULT_SCHEMA))

    def holds(box: list[int], region: list[int]) -> bool:
        return crop.contains(tuple(box), crop.keep_region(region))

    assert results["edge"]["keep"] == dict.fromkeys(crop.DEFAULT_ASPECTS, "all")
    assert all(holds(box, edge) for box in results["edge"]["crops"].values())
    assert results["rotated"]["keep"] == dict.fromkeys(crop.DEFAULT_ASPECTS, "all")
    assert all(holds(box, shown) for box in results["rotated"]["crops"].values())
    apart = results["apart"]
    assert apart["keep"] == {"16:9": "all", "1:1": "partial"}  # 400 px cannot span 594
    assert list(apart["crops"]) == ["16:9", "1:1"]
    assert holds(apart["crops"]["1:1"], [3, 200]) != holds(apart["crops"]["1:1"], [596, 200])
    assert "keep" not in results["plain"]
    assert results["plain"]["crops"] == Cropper(backend).crop(coffee).to_json("plain")["crops"]

    for key, says in [("outside", "outside the 600x400 image"), ("malformed", "got 3 numbers")]:
        headers = dict(letters[key].headers() or [])
        assert headers["error.type"] == b"bad_event"
        assert says in (headers["error.message"] or b"").decode()
        assert letters[key].value() == bad[key]  # rejected before the payload was dropped
    assert running.value("cropworker_dead_letters_total", type="bad_event") == len(bad)

"""What must hold for any input bytes. A fuzz target returns normally or raises the one error
family its function documents; any other exception, a failed assertion or a warning (the
fuzzers turn warnings into errors, as the test suite does) is a finding.

Accepted events are taken on through what the worker does with them after inference, because
a value the parser lets through can still fail there, inside the worker's loop, where an
exception stops the worker instead of dead-lettering one event."""

from __future__ import annotations

import json

import numpy as np

from cropworker import crop
from cropworker.decode import NETWORK_STRIDE, DecodeLimits, decode_image
from cropworker.errors import EventError, ImageError, ImageTooLargeError, KeepError
from cropworker.pipeline import CropResult
from cropworker.probe import probe
from cropworker.stream.events import Source, UploadEvent, parse_event, result_message

LONG_SIDE = 256
# Small enough that one execution stays in milliseconds; the limit logic is the same.
DECODE_LIMITS = DecodeLimits(max_bytes=1 << 20, max_pixels=4_000_000)
EVENT_IMAGE_LIMIT = 1000
_RESULT_SIZE = (640, 480)


def check_decode(data: bytes) -> None:
    """`probe` and `decode_image` raise an `ImageError` or return a sane header and image."""
    try:
        header = probe(data)
    except ImageError:
        header = None
    if header is not None:
        assert header.width > 0 and header.height > 0 and 1 <= header.orientation <= 8
    try:
        decoded = decode_image(data, LONG_SIDE, DECODE_LIMITS)
    except ImageError:
        return
    assert header is not None, "decoded what the probe refused"
    h, w, channels = decoded.rgb.shape
    assert channels == 3 and decoded.rgb.dtype == np.uint8
    assert max(h, w) == LONG_SIDE and h % NETWORK_STRIDE == 0 and w % NETWORK_STRIDE == 0
    assert decoded.width * decoded.height <= DECODE_LIMITS.max_pixels


def check_event(data: bytes) -> None:
    """`parse_event` raises `EventError` (or `ImageTooLargeError` for an inline image over the
    limit), or returns an event the worker can answer."""
    try:
        event = parse_event(data, EVENT_IMAGE_LIMIT)
    except (EventError, ImageTooLargeError):
        return
    try:
        answer(event)
    except KeepError:  # a region outside the image as decoded: dead-lettered as bad_event
        return


def answer(event: UploadEvent) -> dict[str, object]:
    """What the worker does with an accepted event after inference (on a flat saliency map):
    crops for its aspects, the result message, and its key. Returns the result document."""
    width, height = _RESULT_SIZE
    saliency = np.full((8, 8), 1 / 64, np.float32)
    asked = {name: crop.parse_aspect(name) for name in event.aspects or crop.DEFAULT_ASPECTS}
    crop.check_keep(event.keep, width, height)  # raises KeepError, as the worker would
    boxes = crop.crops(saliency, width, height, asked, event.keep)
    for x, y, w, h in boxes.values():
        assert min(x, y) >= 0 and min(w, h) >= 1 and x + w <= width and y + h <= height
    result = CropResult(width, height, saliency, boxes, [], "fuzz@1")
    event.media_id.encode()  # the result's Kafka key
    doc: dict[str, object] = json.loads(
        result_message(event, result, Source("uploads", 0, 0), processed_at_ms=1)
    )
    return doc

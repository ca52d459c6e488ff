"""The messages the worker reads and writes: upload events in, crop results and dead letters out.

The formats are versioned and documented as JSON Schema files shipped with the package
(`cropworker/schemas/upload-event.v1.json`, `crop-result.v1.json`). Events are validated here by
hand, with the same rules as the schema, so the runtime needs no schema library; the tests check
the two agree and that every result the worker writes validates against its schema.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

from .. import crop
from ..errors import CropworkerError, EventError, ImageTooLargeError, KeepError
from ..pipeline import CropResult

UPLOAD_SCHEMA = "cropworker.upload.v1"
RESULT_SCHEMA = "cropworker.crop.v1"
SCHEMA_FILES = {UPLOAD_SCHEMA: "upload-event.v1.json", RESULT_SCHEMA: "crop-result.v1.json"}
MAX_MEDIA_ID = 256
MAX_URL = 4096
MAX_ASPECTS = 16
# Each keep-region costs next to nothing to place; the limit keeps events and their error
# messages small, and a crop that had to keep more than a few regions would keep little else.
MAX_KEEP = 16
# Short enough that both numbers stay within float range: 400 nines parse as inf, and inf:inf
# is a NaN ratio that fails the crop geometry inside the worker's loop.
MAX_ASPECT_CHARS = 64
# Timestamps travel on as int64 (Kafka's own timestamps, every JSON reader in Java or Go).
MAX_TIMESTAMP_MS = 2**63 - 1
URL_SCHEMES = (
    "file://",
    "http://",
    "https://",
    "s3://",
)  # s3:// parses; this build cannot fetch it
# Dead-letter error messages are for people; keep headers small whatever an exception says.
MAX_ERROR_MESSAGE = 1000
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# A URL is printable ASCII (RFC 3986); anything else must arrive percent-encoded.
_URL_CHARS = re.compile(r"[!-~]+")


@dataclass(frozen=True)
class InlineImage:
    data: bytes


@dataclass(frozen=True)
class ImageUrl:
    url: str


ImageRef = InlineImage | ImageUrl


@dataclass(frozen=True)
class UploadEvent:
    media_id: str
    timestamp_ms: int
    image: ImageRef
    aspects: tuple[str, ...] | None = None  # None: the worker's configured aspects
    # Whole-pixel boxes the crops must keep (crop.keep_region); () when none were given.
    # Whether they lie inside the image is checked once it is decoded (crop.check_keep).
    keep: tuple[crop.Box, ...] = ()


@dataclass(frozen=True)
class Source:
    """Where a message was read: the dead-letter headers and the result name it."""

    topic: str
    partition: int
    offset: int


def schema(name: str) -> dict[str, Any]:
    """The JSON Schema document of `UPLOAD_SCHEMA` or `RESULT_SCHEMA`."""
    text = (resources.files("cropworker") / "schemas" / SCHEMA_FILES[name]).read_text()
    loaded: dict[str, Any] = json.loads(text)
    return loaded


def parse_event(value: bytes | None, max_image_bytes: int) -> UploadEvent:
    """Validate an input message's value. Raises `EventError`, or `ImageTooLargeError` for an
    inline image over `max_image_bytes` (checked before base64 decoding)."""
    if value is None:
        raise EventError("message has no value")
    try:
        doc = json.loads(value)
    # ValueError beyond malformed JSON: an integer of over 4300 digits (int_max_str_digits);
    # RecursionError: arrays or objects nested deeper than the interpreter's recursion limit.
    except (ValueError, RecursionError) as exc:
        raise EventError(f"value is not UTF-8 JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise EventError("event must be a JSON object")
    if doc.get("schema") != UPLOAD_SCHEMA:
        raise EventError(f"schema must be {UPLOAD_SCHEMA!r}, got {doc.get('schema')!r}")
    media_id = doc.get("media_id")
    if not isinstance(media_id, str) or not 0 < len(media_id) <= MAX_MEDIA_ID:
        raise EventError(f"media_id must be a string of 1 to {MAX_MEDIA_ID} characters")
    if _CONTROL.search(media_id):
        raise EventError("media_id must not contain control characters")
    if not _encodable(media_id):  # the result's key: a lone surrogate cannot be sent
        raise EventError("media_id must be valid Unicode (a lone surrogate is not)")
    timestamp = doc.get("timestamp_ms")
    if (
        not isinstance(timestamp, int)
        or isinstance(timestamp, bool)
        or not 0 <= timestamp <= MAX_TIMESTAMP_MS
    ):
        raise EventError(f"timestamp_ms must be an integer from 0 to {MAX_TIMESTAMP_MS}")
    return UploadEvent(
        media_id, timestamp, _image(doc.get("image"), max_image_bytes), _aspects(doc), _keep(doc)
    )


def _image(image: Any, max_image_bytes: int) -> ImageRef:
    if not isinstance(image, dict) or len(image) != 1:
        raise EventError('image must be {"data_b64": ...} or {"url": ...}')
    if isinstance(data := image.get("data_b64"), str):
        if len(data) // 4 * 3 > max_image_bytes + 2:  # base64 holds 3 bytes per 4 characters
            raise ImageTooLargeError(f"inline image is over the limit of {max_image_bytes} bytes")
        try:
            return InlineImage(base64.b64decode(data, validate=True))
        except ValueError as exc:  # binascii.Error, or a character outside ASCII
            raise EventError(f"image.data_b64 is not base64: {exc}") from exc
    if isinstance(url := image.get("url"), str) and 0 < len(url) <= MAX_URL:
        if not url.startswith(URL_SCHEMES):
            raise EventError(f"image.url must start with one of {', '.join(URL_SCHEMES)}")
        if not _URL_CHARS.fullmatch(url):
            raise EventError("image.url must be printable ASCII without spaces (percent-encode)")
        return ImageUrl(url)
    raise EventError(f"image.data_b64 must be a string, or image.url one of 1 to {MAX_URL}")


def _aspects(doc: dict[str, Any]) -> tuple[str, ...] | None:
    if "aspects" not in doc:
        return None
    aspects = doc["aspects"]
    if (
        not isinstance(aspects, list)
        or not 0 < len(aspects) <= MAX_ASPECTS
        or not all(isinstance(a, str) and len(a) <= MAX_ASPECT_CHARS for a in aspects)
    ):
        raise EventError(
            f"aspects must be a list of 1 to {MAX_ASPECTS} strings of at most "
            f"{MAX_ASPECT_CHARS} characters"
        )
    try:
        for name in aspects:
            crop.parse_aspect(name)
    except CropworkerError as exc:
        raise EventError(str(exc)) from exc
    return tuple(aspects)


def _keep(doc: dict[str, Any]) -> tuple[crop.Box, ...]:
    if "keep" not in doc:
        return ()
    keep = doc["keep"]
    if not isinstance(keep, list) or not 0 < len(keep) <= MAX_KEEP:
        raise KeepError(f"keep must be a list of 1 to {MAX_KEEP} regions")
    regions = []
    for i, region in enumerate(keep):
        if not isinstance(region, list) or not all(_is_number(v) for v in region):
            raise KeepError(f"keep[{i}] must be a box [x, y, w, h] or a point [x, y] of numbers")
        try:
            regions.append(crop.keep_region(region))
        except KeepError as exc:
            raise KeepError(f"keep[{i}]: {exc}") from exc
    return tuple(regions)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _encodable(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def upload_event(
    media_id: str,
    timestamp_ms: int,
    *,
    data: bytes | None = None,
    url: str | None = None,
    aspects: Sequence[str] | None = None,
    keep: Sequence[Sequence[float]] | None = None,
) -> bytes:
    """An encoded upload event (for producers, the demo and tests); `keep` as the event has it,
    boxes [x, y, w, h] and points [x, y]."""
    if (data is None) == (url is None):
        raise ValueError("give exactly one of data and url")
    doc: dict[str, Any] = {"schema": UPLOAD_SCHEMA, "media_id": media_id}
    doc["timestamp_ms"] = timestamp_ms
    if url is not None:
        doc["image"] = {"url": url}
    else:
        doc["image"] = {"data_b64": base64.b64encode(data or b"").decode()}
    if aspects is not None:
        doc["aspects"] = list(aspects)
    if keep is not None:
        doc["keep"] = [list(region) for region in keep]
    return json.dumps(doc).encode()


def result_message(
    event: UploadEvent,
    result: CropResult,
    source: Source,
    processed_at_ms: int,
) -> bytes:
    """The output message for one upload (see crop-result.v1.json): the result's crops (placed
    for the event's own aspects and keep-regions, by the pipeline) and what they kept."""
    doc: dict[str, Any] = {
        "schema": RESULT_SCHEMA,
        "media_id": event.media_id,
        "width": result.width,
        "height": result.height,
        "crops": {name: list(box) for name, box in result.crops.items()},
        "salient_points": [list(p) for p in result.salient_points],
        "model": result.model,
        "timestamp_ms": event.timestamp_ms,
        "processed_at_ms": processed_at_ms,
        "latency_ms": processed_at_ms - event.timestamp_ms,
        "source": {"topic": source.topic, "partition": source.partition, "offset": source.offset},
    }
    if result.keep is not None:
        doc["keep"] = result.keep
    return json.dumps(doc, separators=(",", ":")).encode()


def dead_letter_headers(
    error_type: str,
    message: str,
    attempts: int,
    source: Source,
    original: list[tuple[str, bytes]] | None = None,
) -> list[tuple[str, bytes]]:
    """Headers of a dead letter: the original message's headers, then why and where from."""
    return [
        *(original or []),
        ("error.type", error_type.encode()),
        ("error.message", message[:MAX_ERROR_MESSAGE].encode("utf-8", "replace")),
        ("error.attempts", str(attempts).encode()),
        ("source.topic", source.topic.encode()),
        ("source.partition", str(source.partition).encode()),
        ("source.offset", str(source.offset).encode()),
    ]

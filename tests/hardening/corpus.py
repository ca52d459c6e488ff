"""The hostile input corpus, generated at import time from code (no binary blobs in the tree).

Each entry pairs an input with the typed error the library must raise for it, or with None for
an odd input that must be accepted. The tests run every entry, the fuzz targets are seeded with
them (`python -m fuzz.make_corpus`), and the broker test sends a selection through a worker.
"""

from __future__ import annotations

import base64
import io
import json
import struct
import zipfile
import zlib
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

from cropworker import errors
from cropworker.probe import MAX_JPEG_SCANS
from cropworker.stream.events import UPLOAD_SCHEMA
from fuzz.targets import EVENT_IMAGE_LIMIT
from tests.images import encode, gradient

# Far over the default 100-megapixel limit, as a header alone declares it.
BOMB_SIDE = 60_000


@dataclass(frozen=True)
class Case:
    name: str
    data: bytes
    error: type[errors.CropworkerError] | None  # None: must be accepted


# Building blocks ----------------------------------------------------------------------------


def jpeg(width: int = 64, height: int = 48, **save: object) -> bytes:
    return encode(Image.fromarray(gradient(width, height)), "JPEG", quality=90, **save)


def png(width: int = 64, height: int = 48) -> bytes:
    return encode(Image.fromarray(gradient(width, height)), "PNG")


def png_header(width: int, height: int) -> bytes:
    """A PNG signature and a valid IHDR chunk declaring width x height, and nothing else."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    crc = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + crc


def with_chunk_length(data: bytes, kind: bytes, length: int) -> bytes:
    """A PNG whose first `kind` chunk declares `length` bytes (its data stays as it was)."""
    at = data.index(kind) - 4
    return data[:at] + struct.pack(">I", length) + data[at + 4 :]


def with_frame_size(data: bytes, width: int, height: int) -> bytes:
    """A JPEG whose baseline frame header (SOF0) declares another size."""
    sof = data.index(b"\xff\xc0")
    return data[: sof + 5] + struct.pack(">HH", height, width) + data[sof + 9 :]


def segments(data: bytes) -> list[bytes]:
    """A JPEG cut after its SOI into marker segments; a scan keeps its entropy-coded data."""
    pieces, pos = [], 2
    while pos < len(data):
        marker = data[pos + 1]
        if marker == 0xD9:
            pieces.append(data[pos : pos + 2])
            break
        end = pos + 2 + struct.unpack_from(">H", data, pos + 2)[0]
        if marker == 0xDA:  # scan data runs to the next marker that is not a stuffed 0xFF00
            while not (data[end] == 0xFF and data[end + 1] not in (0x00, *range(0xD0, 0xD8))):
                end += 1
        pieces.append(data[pos:end])
        pos = end
    return pieces


def progressive_jpeg(scans: int, side: int = 64, hide_eoi: bool = False) -> bytes:
    """A flat progressive JPEG of `scans` scans: libjpeg's 10, then its last one repeated. libjpeg
    only warns about the repeats and decodes each one over the whole image again. `hide_eoi`
    puts a comment holding an end-of-image marker in front of the scans, which a plain byte
    search would take for the end of the image."""
    flat = Image.new("RGB", (side, side), (120, 130, 140))  # flat: the repeats stay tiny
    pieces = segments(encode(flat, "JPEG", progressive=True))
    first_scan = next(i for i, p in enumerate(pieces) if p[1] == 0xDA)
    if hide_eoi:
        comment = b"\xff\xd9 hidden"
        pieces.insert(first_scan, b"\xff\xfe" + struct.pack(">H", len(comment) + 2) + comment)
    written = [p for p in pieces if p[1] == 0xDA]
    assert pieces[-1] == b"\xff\xd9" and len(written) <= scans
    # The last scan again and again: the Huffman tables in force for it stay in force.
    body = [*pieces[:-1], *[written[-1]] * (scans - len(written)), pieces[-1]]
    return b"\xff\xd8" + b"".join(body)


def exif_block(entries: list[tuple[int, int, int, int]], ifd_offset: int = 8) -> bytes:
    """Little-endian TIFF header and IFD0 of (tag, type, count, value) entries."""
    ifd = struct.pack("<H", len(entries))
    for tag, kind, count, value in entries:
        ifd += struct.pack("<HHII", tag, kind, count, value)
    return b"II*\x00" + struct.pack("<I", ifd_offset) + ifd + b"\x00\x00\x00\x00"


def with_exif(data: bytes, tiff: bytes) -> bytes:
    """A JPEG with an APP1 EXIF segment holding `tiff` right after its SOI."""
    payload = b"Exif\x00\x00" + tiff
    return data[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + data[2:]


def marked(width: int = 120, height: int = 80) -> np.ndarray:
    """Black RGB with a red block in the stored top-left corner and a green one top-right."""
    image = np.zeros((height, width, 3), np.uint8)
    image[: height // 4, : width // 4] = (255, 0, 0)
    image[: height // 4, -width // 4 :] = (0, 255, 0)
    return image


def zip_file() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("photo.jpg", jpeg())
    return buffer.getvalue()


# Images ------------------------------------------------------------------------------------

ORIENTATION = 0x0112
SHORT, LONG, ASCII = 3, 4, 2


def rejected_images() -> list[Case]:
    """Inputs `decode_image` must refuse, each with its error."""
    full_jpeg, full_png = jpeg(), png()
    return [
        Case("empty", b"", errors.EmptyImageError),
        Case("jpeg-truncated-half", full_jpeg[: len(full_jpeg) // 2], errors.CorruptImageError),
        Case("jpeg-header-only", full_jpeg[:200], errors.CorruptImageError),
        Case("jpeg-magic-only", b"\xff\xd8\xff", errors.CorruptImageError),
        Case("jpeg-zero-width", with_frame_size(full_jpeg, 0, 48), errors.CorruptImageError),
        Case("png-truncated-half", full_png[: len(full_png) // 2], errors.CorruptImageError),
        Case("png-signature-only", full_png[:8], errors.CorruptImageError),
        Case("png-no-ihdr", full_png[:8] + b"\x00" * 30, errors.CorruptImageError),
        Case("png-header-no-data", png_header(64, 48), errors.CorruptImageError),
        # Found by fuzz_decode: OpenCV 5.0 allocated the declared 4 GB before reading.
        Case(
            "png-chunk-length-4gb",
            with_chunk_length(full_png, b"IDAT", 0xFFFF_FFF0),
            errors.CorruptImageError,
        ),
        Case("gif-truncated", encode(Image.new("P", (9, 9)), "GIF")[:15], errors.CorruptImageError),
        Case("html", b"<!doctype html><html><body>hi</body></html>", errors.UnsupportedFormatError),
        Case(
            "svg",
            b'<svg xmlns="http://www.w3.org/2000/svg" width="9" height="9"/>',
            errors.UnsupportedFormatError,
        ),
        Case("zip", zip_file(), errors.UnsupportedFormatError),
        Case("pdf", b"%PDF-1.7\n1 0 obj<<>>endobj\n%%EOF", errors.UnsupportedFormatError),
        Case("nul-bytes", bytes(64), errors.UnsupportedFormatError),
        Case(
            "png-bomb-header",
            png_header(BOMB_SIDE, BOMB_SIDE),
            errors.ImageTooLargeError,
        ),
        Case(
            "jpeg-bomb-header",
            with_frame_size(full_jpeg, BOMB_SIDE, BOMB_SIDE),
            errors.ImageTooLargeError,
        ),
        Case(
            "gif-bomb-header",
            b"GIF89a" + struct.pack("<HH", 65535, 65535) + b"\x00\x00\x00;",
            errors.ImageTooLargeError,
        ),
        Case(
            "jpeg-too-many-scans",
            progressive_jpeg(MAX_JPEG_SCANS + 1),
            errors.ImageTooComplexError,
        ),
        Case(
            "jpeg-too-many-scans-eoi-hidden",
            progressive_jpeg(MAX_JPEG_SCANS + 1, hide_eoi=True),
            errors.ImageTooComplexError,
        ),
    ]


def accepted_images() -> list[Case]:
    """Odd but valid inputs `decode_image` must decode."""
    frames = [Image.new("RGB", (40, 30), c) for c in ((255, 0, 0), (0, 0, 255))]
    rgba = np.zeros((30, 40, 4), np.uint8)
    rgba[:, :20] = (255, 0, 0, 255)
    ramp16 = (np.linspace(0, 65535, 80)[None, :].repeat(40, 0)).astype(np.uint16)
    nan_float = np.full((20, 30), np.nan, np.float32)
    nan_float[:, :10] = 0.5
    base = encode(Image.fromarray(marked()), "JPEG", quality=95)
    return [
        Case("one-pixel", encode(Image.new("RGB", (1, 1), (10, 200, 30)), "PNG"), None),
        Case("100000x1", encode(Image.new("RGB", (100_000, 1), (90, 90, 90)), "PNG"), None),
        Case("1x100000", encode(Image.new("L", (1, 100_000), 90), "PNG"), None),
        Case("cmyk-jpeg", encode(Image.fromarray(gradient(64, 48)).convert("CMYK"), "JPEG"), None),
        Case("grey-jpeg", encode(Image.fromarray(gradient(64, 48)).convert("L"), "JPEG"), None),
        Case("png-16-bit-grey", cv2.imencode(".png", ramp16)[1].tobytes(), None),
        Case("png-rgba", encode(Image.fromarray(rgba, "RGBA"), "PNG"), None),
        Case("png-grey-alpha", encode(Image.fromarray(rgba, "RGBA").convert("LA"), "PNG"), None),
        Case("png-palette", encode(Image.fromarray(gradient(64, 48)).convert("P"), "PNG"), None),
        Case(
            "gif-animated",
            encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100),
            None,
        ),
        Case("tiff-float-nan", encode(Image.fromarray(nan_float, "F"), "TIFF"), None),
        Case("jpeg-progressive", jpeg(progressive=True), None),
        Case("jpeg-max-scans", progressive_jpeg(MAX_JPEG_SCANS), None),
        Case("exif-ifd-past-end", with_exif(base, exif_block([], ifd_offset=100_000)), None),
        Case(
            "exif-entry-count-past-end",
            with_exif(base, b"II*\x00\x08\x00\x00\x00\xff\xff"),
            None,
        ),
        Case(
            "exif-next-ifd-loops",
            with_exif(base, exif_block([(ORIENTATION, SHORT, 1, 6)])[:-4] + b"\x08\x00\x00\x00"),
            None,
        ),
        Case(
            "exif-sub-ifd-loops",
            with_exif(base, exif_block([(0x8769, LONG, 1, 8), (ORIENTATION, SHORT, 1, 6)])),
            None,
        ),
        Case(
            "exif-huge-count",
            with_exif(
                base, exif_block([(0x010F, ASCII, 0xFFFFFFFF, 8), (ORIENTATION, SHORT, 1, 6)])
            ),
            None,
        ),
        Case("exif-orientation-9", with_exif(base, exif_block([(ORIENTATION, SHORT, 1, 9)])), None),
        Case("exif-bad-byte-order", with_exif(base, b"XX" + exif_block([])[2:]), None),
    ]


# Events ------------------------------------------------------------------------------------


def event_doc(**changes: object) -> dict[str, object]:
    """A valid event with a small inline image, changed as asked (None drops a field). The image
    decodes, so a rule the parser misses sends the event on to inference and the result."""
    doc: dict[str, object] = {
        "schema": UPLOAD_SCHEMA,
        "media_id": "m-1",
        "timestamp_ms": 1_700_000_000_000,
        "image": {"data_b64": base64.b64encode(png(16, 12)).decode()},
    }
    doc.update(changes)
    return {k: v for k, v in doc.items() if v is not None}


def event(**changes: object) -> bytes:
    return json.dumps(event_doc(**changes)).encode()


def without(field: str) -> bytes:
    doc = event_doc()
    del doc[field]
    return json.dumps(doc).encode()


def rejected_events() -> list[Case]:
    """Message values `parse_event` must refuse (with `EVENT_IMAGE_LIMIT`)."""
    too_big = base64.b64encode(bytes(EVENT_IMAGE_LIMIT * 2)).decode()
    return [
        Case("empty-value", b"", errors.EventError),
        Case(
            "malformed-json", b'{"schema": "cropworker.upload.v1", "media_id": ', errors.EventError
        ),
        Case("not-utf8", b"\xff\xfe\xfa{}", errors.EventError),
        Case("json-array", b"[1, 2]", errors.EventError),
        Case("json-null", b"null", errors.EventError),
        Case("json-string", b'"cropworker.upload.v1"', errors.EventError),
        Case("nested-arrays", b"[" * 100_000 + b"]" * 100_000, errors.EventError),
        Case("nested-objects", b'{"a":' * 100_000 + b"1" + b"}" * 100_000, errors.EventError),
        Case(
            "nested-in-field",
            b'{"schema":"cropworker.upload.v1","x":' + b"[" * 50_000 + b"]" * 50_000 + b"}",
            errors.EventError,
        ),
        Case("integer-5000-digits", b'{"timestamp_ms": ' + b"9" * 5000 + b"}", errors.EventError),
        Case("unknown-schema-version", event(schema="cropworker.upload.v2"), errors.EventError),
        Case("no-schema", without("schema"), errors.EventError),
        Case("no-media-id", without("media_id"), errors.EventError),
        Case("no-timestamp", without("timestamp_ms"), errors.EventError),
        Case("no-image", without("image"), errors.EventError),
        Case("media-id-number", event(media_id=7), errors.EventError),
        Case("media-id-list", event(media_id=["m"]), errors.EventError),
        Case("media-id-oversized", event(media_id="m" * 257), errors.EventError),
        Case("media-id-control-char", event(media_id="a\x00b"), errors.EventError),
        Case(
            "media-id-lone-surrogate",
            event(media_id="x").replace(b'"x"', b'"\\ud800"'),
            errors.EventError,
        ),
        Case("timestamp-string", event(timestamp_ms="1700000000000"), errors.EventError),
        Case("timestamp-float", event(timestamp_ms=1.5), errors.EventError),
        Case("timestamp-bool", event(timestamp_ms=True), errors.EventError),
        Case("timestamp-negative", event(timestamp_ms=-1), errors.EventError),
        Case("timestamp-over-int64", event(timestamp_ms=2**63), errors.EventError),
        Case("timestamp-nan", event(timestamp_ms=float("nan")), errors.EventError),
        Case("image-string", event(image="https://img.example.com/a.jpg"), errors.EventError),
        Case("image-both", event(image={"url": "https://a/b", "data_b64": ""}), errors.EventError),
        Case("image-unknown-key", event(image={"path": "/etc/passwd"}), errors.EventError),
        Case("image-not-base64", event(image={"data_b64": "not base64!"}), errors.EventError),
        # Found by fuzz_events: base64 raised a plain ValueError for a non-ASCII character.
        Case(
            "image-base64-non-ascii",
            event(image={"data_b64": "iVBORw0K\u00e9Ggo="}),
            errors.EventError,
        ),
        Case(
            "image-base64-lone-surrogate",
            event(image={"data_b64": "x"}).replace(b'"x"', b'"iVBO\\ud800RwoK"'),
            errors.EventError,
        ),
        Case("image-over-limit", event(image={"data_b64": too_big}), errors.ImageTooLargeError),
        Case("url-oversized", event(image={"url": "https://a/" + "b" * 4096}), errors.EventError),
        Case("url-ftp", event(image={"url": "ftp://img.example.com/a.jpg"}), errors.EventError),
        Case("url-javascript", event(image={"url": "javascript:alert(1)"}), errors.EventError),
        Case(
            "url-non-ascii",
            event(image={"url": "https://img.example.com/ä.jpg"}),
            errors.EventError,
        ),
        Case(
            "url-space", event(image={"url": "https://img.example.com/a b.jpg"}), errors.EventError
        ),
        Case(
            "url-newline",
            event(image={"url": "https://img.example.com/a\r\nX: y"}),
            errors.EventError,
        ),
        Case("aspects-string", event(aspects="16:9"), errors.EventError),
        Case("aspects-empty", event(aspects=[]), errors.EventError),
        Case("aspects-17", event(aspects=["1:1"] * 17), errors.EventError),
        Case("aspect-number", event(aspects=[1.5]), errors.EventError),
        Case("aspect-malformed", event(aspects=["16x9"]), errors.EventError),
        Case("aspect-zero", event(aspects=["0:1"]), errors.EventError),
        Case("aspect-oversized", event(aspects=["1" * 100 + ":1"]), errors.EventError),
        Case("aspect-nan", event(aspects=["9" * 400 + ":" + "9" * 400]), errors.EventError),
    ]


def accepted_events() -> list[Case]:
    """Odd but valid values `parse_event` must accept."""
    return [
        Case("oversized-unknown-key", json.dumps({"k" * 100_000: 1, **event_doc()}).encode(), None),
        Case("oversized-unknown-value", event(note="x" * 1_000_000), None),
        Case("unicode-media-id", event(media_id="фото-🖼"), None),
        Case("media-id-256", event(media_id="m" * 256), None),
        Case("timestamp-int64-max", event(timestamp_ms=2**63 - 1), None),
        Case("aspect-64-chars", event(aspects=["9" * 31 + ":" + "9" * 32]), None),
        Case("utf8-bom", b"\xef\xbb\xbf" + event(), None),
        Case("duplicate-key-last-wins", event()[:-1] + b', "media_id": "m-2"}', None),
    ]

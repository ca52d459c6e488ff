"""Read an image's format, dimensions and EXIF orientation from its header, without decoding it.

This runs before any decoder sees the bytes, so that decompression bombs (a tiny file declaring
a huge canvas) are refused by arithmetic, and so that the decoder can be asked for a DCT-domain
reduced JPEG of the right size. Every read is bounds-checked: malformed headers raise
`CorruptImageError`, never IndexError or struct.error. A JPEG's scans are counted too, because
their number, not the file's size, sets how long a progressive JPEG takes to decode.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

from .errors import (
    CorruptImageError,
    EmptyImageError,
    ImageTooComplexError,
    UnsupportedFormatError,
)

FORMATS = ("jpeg", "png", "gif", "bmp", "webp", "tiff")

# EXIF orientations 5-8 swap width and height (the image is stored rotated by 90 degrees).
_TRANSPOSING_ORIENTATIONS = frozenset({5, 6, 7, 8})
_EXIF_ORIENTATION_TAG = 0x0112
_TIFF_WIDTH_TAG, _TIFF_HEIGHT_TAG = 256, 257
# JPEG start-of-frame markers (baseline, progressive, lossless, arithmetic); not DHT/JPG/DAC.
_SOF_MARKERS = frozenset(
    {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
)
_STANDALONE_MARKERS = frozenset({0x01, *range(0xD0, 0xD9)})
_SOS, _EOI = 0xDA, 0xD9
# A marker as libjpeg finds one after a scan: 0xFF then a byte that is not a stuffed zero, a
# restart marker (those belong to the scan) or another 0xFF (fill).
_NEXT_MARKER = re.compile(rb"\xff[\x01-\xcf\xd8-\xfe]")
# Each scan makes the decoder walk every block of the image again, whatever few bytes the scan
# holds: 1000 repeated 14-byte scans take a 4-megapixel JPEG from 0.01 s to 2.8 s to decode
# (libjpeg-turbo 3.1), about 60 ms per scan at the 100-megapixel limit. Encoders write 10
# (libjpeg's progressive script) to about 20 (mozjpeg's optimised scans); 100 leaves room.
MAX_JPEG_SCANS = 100


@dataclass(frozen=True)
class ImageHeader:
    """What the header says. `width`/`height` are as stored, before EXIF orientation."""

    format: str
    width: int
    height: int
    orientation: int = 1
    frame_offset: int = 0  # JPEG: where the frame header starts (the scan data follows it)
    scans: int = 0  # JPEG: start-of-scan segments after the frame header

    @property
    def oriented_size(self) -> tuple[int, int]:
        """(width, height) of the image as displayed, after EXIF orientation."""
        if self.orientation in _TRANSPOSING_ORIENTATIONS:
            return self.height, self.width
        return self.width, self.height


def sniff_format(data: bytes) -> str:
    """Name the format from its magic bytes, or raise `UnsupportedFormatError`."""
    if not data:
        raise EmptyImageError("image is empty (0 bytes)")
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "gif"
    if data.startswith(b"BM"):
        return "bmp"
    if data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return "webp"
    if data.startswith((b"II*\x00", b"MM\x00*")):
        return "tiff"
    raise UnsupportedFormatError(f"unsupported image format (starts with {data[:8]!r})")


def probe(data: bytes) -> ImageHeader:
    """Parse the header of an encoded image. Raises an `ImageError` subclass when it can't, and
    `ImageTooComplexError` for a JPEG of more than `MAX_JPEG_SCANS` scans."""
    fmt = sniff_format(data)
    try:
        width, height, orientation, offset = _PARSERS[fmt](data)
    except (struct.error, IndexError) as exc:
        raise CorruptImageError(f"truncated or malformed {fmt} header") from exc
    if width <= 0 or height <= 0:
        raise CorruptImageError(f"{fmt} header declares an empty image ({width}x{height})")
    scans = _jpeg_scans(data, offset) if fmt == "jpeg" else 0
    return ImageHeader(
        fmt, width, height, orientation if 1 <= orientation <= 8 else 1, offset, scans
    )


def _jpeg(data: bytes) -> tuple[int, int, int, int]:
    pos, orientation = 2, 1
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            raise CorruptImageError(f"bad JPEG marker at byte {pos}")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        if marker in _STANDALONE_MARKERS:
            pos += 2
            continue
        (length,) = struct.unpack_from(">H", data, pos + 2)
        if length < 2:
            raise CorruptImageError("JPEG segment with a length below 2")
        segment = data[pos + 4 : pos + 2 + length]
        if marker == 0xE1 and segment.startswith(b"Exif\x00\x00"):
            orientation = _exif_orientation(segment[6:])
        elif marker in _SOF_MARKERS:
            height, width = struct.unpack_from(">HH", segment, 1)
            return width, height, orientation, pos
        elif marker == 0xDA:  # start of scan before any frame header
            break
        pos += 2 + length
    raise CorruptImageError("JPEG has no frame header (truncated?)")


def _jpeg_scans(data: bytes, pos: int) -> int:
    """Count the scans from the frame header at `pos` to the end of the image, walking the
    markers the way libjpeg does (segments by their length, scan data up to the next marker),
    so that a stray end-of-image inside a segment cannot hide the scans after it. Whatever the
    walk cannot follow is searched past, which can only count more scans, never fewer."""
    scans = 0
    while found := _NEXT_MARKER.search(data, pos):
        start, marker = found.start(), data[found.start() + 1]
        if marker == _EOI:
            break
        pos = start + 2
        if marker in _STANDALONE_MARKERS or len(data) < start + 4:
            continue
        (length,) = struct.unpack_from(">H", data, start + 2)
        pos += length
        if marker == _SOS:
            scans += 1
            if scans > MAX_JPEG_SCANS:
                raise ImageTooComplexError(f"JPEG has over {MAX_JPEG_SCANS} scans")
    return scans


def _exif_orientation(tiff: bytes) -> int:
    """Orientation tag of IFD0 in an EXIF block; 1 when absent or malformed (EXIF is advisory)."""
    try:
        order = _tiff_byte_order(tiff)
        for tag, _, value in _tiff_ifd0(tiff, order):
            if tag == _EXIF_ORIENTATION_TAG:
                return value
    except (struct.error, IndexError, CorruptImageError):
        pass
    return 1


def _tiff_byte_order(tiff: bytes) -> str:
    if tiff[:2] == b"II":
        return "<"
    if tiff[:2] == b"MM":
        return ">"
    raise CorruptImageError("bad TIFF byte order")


def _tiff_ifd0(tiff: bytes, order: str) -> list[tuple[int, int, int]]:
    """(tag, type, value) of the SHORT and LONG entries of the first IFD."""
    (offset,) = struct.unpack_from(order + "I", tiff, 4)
    (count,) = struct.unpack_from(order + "H", tiff, offset)
    entries = []
    for i in range(count):
        tag, kind = struct.unpack_from(order + "HH", tiff, offset + 2 + 12 * i)
        if kind == 3:  # SHORT: the value sits in the first two bytes of the value field
            (value,) = struct.unpack_from(order + "H", tiff, offset + 2 + 12 * i + 8)
        elif kind == 4:  # LONG
            (value,) = struct.unpack_from(order + "I", tiff, offset + 2 + 12 * i + 8)
        else:
            continue
        entries.append((tag, kind, value))
    return entries


def _tiff(data: bytes) -> tuple[int, int, int, int]:
    order = _tiff_byte_order(data)
    found = {tag: value for tag, _, value in _tiff_ifd0(data, order)}
    if _TIFF_WIDTH_TAG not in found or _TIFF_HEIGHT_TAG not in found:
        raise CorruptImageError("TIFF has no ImageWidth/ImageLength")
    return found[_TIFF_WIDTH_TAG], found[_TIFF_HEIGHT_TAG], 1, 0


def _png(data: bytes) -> tuple[int, int, int, int]:
    if data[12:16] != b"IHDR":
        raise CorruptImageError("PNG does not start with an IHDR chunk")
    width, height = struct.unpack_from(">II", data, 16)
    _png_chunks_fit(data)
    return width, height, 1, 0


def _png_chunks_fit(data: bytes) -> None:
    """Every chunk up to IEND must end inside the file. OpenCV 5.0's PNG reader allocates a
    chunk's declared length before reading it: a 74-byte file declaring a 4 GB IDAT costs 4 GB
    and 7 s (found by fuzz/fuzz_decode.py)."""
    pos = 8
    while pos + 8 <= len(data):
        (length,) = struct.unpack_from(">I", data, pos)
        kind = data[pos + 4 : pos + 8]
        pos += 12 + length  # length, type, data, CRC
        if pos > len(data):
            raise CorruptImageError(
                f"PNG {kind!r} chunk of {length} bytes runs past the end of the file (truncated?)"
            )
        if kind == b"IEND":
            return


def _gif(data: bytes) -> tuple[int, int, int, int]:
    width, height = struct.unpack_from("<HH", data, 6)
    return width, height, 1, 0


def _bmp(data: bytes) -> tuple[int, int, int, int]:
    (dib_size,) = struct.unpack_from("<I", data, 14)
    if dib_size == 12:  # OS/2 BITMAPCOREHEADER
        width, height = struct.unpack_from("<HH", data, 18)
    else:
        width, height = struct.unpack_from("<ii", data, 18)
    return width, abs(height), 1, 0  # negative height means top-down rows


def _webp(data: bytes) -> tuple[int, int, int, int]:
    chunk = data[12:16]
    if chunk == b"VP8 ":
        if data[23:26] != b"\x9d\x01\x2a":
            raise CorruptImageError("bad VP8 frame start code")
        width, height = struct.unpack_from("<HH", data, 26)
        return width & 0x3FFF, height & 0x3FFF, 1, 0
    if chunk == b"VP8L":
        (bits,) = struct.unpack_from("<I", data, 21)
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1, 1, 0
    if chunk == b"VP8X":
        width = int.from_bytes(data[24:27], "little") + 1
        height = int.from_bytes(data[27:30], "little") + 1
        if len(data) < 30:
            raise CorruptImageError("truncated VP8X header")
        return width, height, 1, 0
    raise CorruptImageError(f"unknown WebP chunk {chunk!r}")


_PARSERS = {"jpeg": _jpeg, "png": _png, "gif": _gif, "bmp": _bmp, "webp": _webp, "tiff": _tiff}

"""Hostile and odd images at the library level: each rejection has its own error class, each
odd-but-valid image decodes the right way up."""

from __future__ import annotations

import time

import numpy as np
import pytest
from PIL import Image

from cropworker import decode, errors
from cropworker.decode import DecodeLimits, decode_image
from cropworker.probe import MAX_JPEG_SCANS, probe
from tests.hardening import corpus
from tests.images import encode

LONG_SIDE = 256
REJECTED = corpus.rejected_images()
ACCEPTED = corpus.accepted_images()


@pytest.mark.parametrize("case", REJECTED, ids=[c.name for c in REJECTED])
def test_hostile_images_get_their_typed_error(case: corpus.Case) -> None:
    assert case.error is not None
    with pytest.raises(errors.ImageError) as raised:
        decode_image(case.data, LONG_SIDE)
    assert type(raised.value) is case.error, raised.value
    assert raised.value.code == case.error.code


@pytest.mark.parametrize("case", ACCEPTED, ids=[c.name for c in ACCEPTED])
def test_odd_images_decode(case: corpus.Case) -> None:
    decoded = decode_image(case.data, LONG_SIDE)
    assert decoded.rgb.dtype == np.uint8 and decoded.rgb.shape[2] == 3
    assert max(decoded.rgb.shape[:2]) == LONG_SIDE
    assert (decoded.width > decoded.height) == (decoded.rgb.shape[1] > decoded.rgb.shape[0])


def test_extreme_aspect_images_keep_their_size_and_shape() -> None:
    wide = decode_image(encode(Image.new("RGB", (100_000, 1), (90, 90, 90)), "PNG"), LONG_SIDE)
    tall = decode_image(encode(Image.new("L", (1, 100_000), 90), "PNG"), LONG_SIDE)
    assert (wide.width, wide.height, wide.rgb.shape) == (100_000, 1, (64, 256, 3))
    assert (tall.width, tall.height, tall.rgb.shape) == (1, 100_000, (256, 64, 3))


def test_nan_in_a_float_tiff_becomes_black_without_a_warning() -> None:
    # filterwarnings=error: numpy's "invalid value encountered in cast" would fail this test.
    nan_float = np.full((20, 30), np.nan, np.float32)
    nan_float[:, :15] = 1.0  # values within [0, 1] are fractions of full scale
    decoded = decode_image(encode(Image.fromarray(nan_float, "F"), "TIFF"), LONG_SIDE)
    assert decoded.rgb[:, :100].min() == 255
    assert decoded.rgb[:, -100:].max() == 0


@pytest.mark.parametrize(
    "name", ["png-chunk-length-4gb", "jpeg-too-many-scans", "png-bomb-header", "jpeg-bomb-header"]
)
def test_bombs_are_refused_before_the_decoder_sees_them(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The errors alone cannot tell: OpenCV also ends in an error on the 4 GB PNG chunk, after
    allocating 4 GB. These must be refused by arithmetic on the header, with no decoder call."""

    def no_decoder(*args: object) -> None:
        raise AssertionError("the decoder was called")

    monkeypatch.setattr(decode.cv2, "imdecode", no_decoder)
    case = next(c for c in REJECTED if c.name == name)
    assert case.error is not None
    with pytest.raises(case.error):
        decode_image(case.data, LONG_SIDE)


def test_bytes_over_the_limit_are_refused_before_the_header_is_read() -> None:
    data = corpus.jpeg()
    limits = DecodeLimits(max_bytes=len(data) - 1)
    with pytest.raises(errors.ImageTooLargeError, match="bytes"):
        decode_image(data, LONG_SIDE, limits)
    with pytest.raises(errors.ImageTooLargeError, match="bytes"):  # even if it is no image
        decode_image(b"<html>" + bytes(len(data)), LONG_SIDE, limits)
    assert decode_image(data, LONG_SIDE, DecodeLimits(max_bytes=len(data))).width == 64


def test_pixel_limit_is_checked_from_the_header() -> None:
    limits = DecodeLimits(max_pixels=100 * 100)
    with pytest.raises(errors.ImageTooLargeError, match="pixels"):  # one column over
        decode_image(corpus.png_header(101, 100), LONG_SIDE, limits)
    # At the limit the header passes, and the decoder then finds no pixel data.
    with pytest.raises(errors.CorruptImageError):
        decode_image(corpus.png_header(100, 100), LONG_SIDE, limits)
    assert decode_image(corpus.png(100, 100), LONG_SIDE, limits).width == 100


def test_png_bytes_named_jpg_decode_by_their_content() -> None:
    """The format comes from the magic bytes, never from a file name or a content type."""
    decoded = decode_image(corpus.png(90, 60), LONG_SIDE)
    assert (decoded.format, decoded.width, decoded.height) == ("png", 90, 60)


# Scans: a JPEG time bomb --------------------------------------------------------------------


def test_scans_are_counted_up_to_the_limit() -> None:
    assert probe(corpus.jpeg()).scans == 1
    assert probe(corpus.jpeg(progressive=True)).scans == 10
    assert probe(corpus.progressive_jpeg(MAX_JPEG_SCANS)).scans == MAX_JPEG_SCANS
    with pytest.raises(errors.ImageTooComplexError):
        probe(corpus.progressive_jpeg(MAX_JPEG_SCANS + 1))


def test_an_end_of_image_marker_inside_a_segment_does_not_hide_scans() -> None:
    data = corpus.progressive_jpeg(MAX_JPEG_SCANS + 1, hide_eoi=True)
    assert data.find(b"\xff\xd9") < data.find(b"\xff\xda")  # a byte search would stop early
    with pytest.raises(errors.ImageTooComplexError):
        probe(data)


def test_a_trailer_after_the_image_is_not_counted() -> None:
    """Motion photos append a video after the end-of-image marker: its bytes may hold 0xFFDA."""
    data = corpus.jpeg(progressive=True) + b"\xff\xda\x00\x08" * (2 * MAX_JPEG_SCANS)
    assert probe(data).scans == 10
    assert decode_image(data, LONG_SIDE).width == 64


def test_a_scan_bomb_is_refused_in_well_under_the_time_it_would_take() -> None:
    # 5000 repeated scans of a flat 1000x1000 image in 66 kB: libjpeg-turbo takes 4 s on it.
    data = corpus.progressive_jpeg(5000, side=1000)
    start = time.perf_counter()
    with pytest.raises(errors.ImageTooComplexError):
        decode_image(data, LONG_SIDE)
    assert time.perf_counter() - start < 0.5


# EXIF orientation ----------------------------------------------------------------------------

# Where the stored top-left (red) and top-right (green) corners are displayed, per orientation.
CORNERS = {
    1: ("top-left", "top-right"),
    2: ("top-right", "top-left"),
    3: ("bottom-right", "bottom-left"),
    4: ("bottom-left", "bottom-right"),
    5: ("top-left", "bottom-left"),
    6: ("top-right", "bottom-right"),
    7: ("bottom-right", "top-right"),
    8: ("bottom-left", "top-left"),
}


def corner(rgb: np.ndarray, where: str) -> np.ndarray:
    """Mean colour of a small patch well inside the named corner."""
    h, w = rgb.shape[:2]
    rows = slice(2, h // 10) if where.startswith("top") else slice(h - h // 10, h - 2)
    cols = slice(2, w // 10) if where.endswith("left") else slice(w - w // 10, w - 2)
    patch: np.ndarray = rgb[rows, cols].reshape(-1, 3).mean(axis=0)
    return patch


def colour_at(rgb: np.ndarray) -> dict[str, str]:
    names = {}
    for where in ("top-left", "top-right", "bottom-left", "bottom-right"):
        r, g, b = corner(rgb, where)
        if max(r, g, b) < 60:
            names[where] = "black"
        elif r > 200 and max(g, b) < 60:
            names[where] = "red"
        elif g > 200 and max(r, b) < 60:
            names[where] = "green"
        else:
            names[where] = f"mixed {r:.0f},{g:.0f},{b:.0f}"
    return names


def oriented(orientation: int, tiff: bytes | None = None) -> bytes:
    base = encode(Image.fromarray(corpus.marked()), "JPEG", quality=95)
    entries = [(corpus.ORIENTATION, corpus.SHORT, 1, orientation)]
    return corpus.with_exif(base, tiff or corpus.exif_block(entries))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_puts_the_marked_corners_where_they_are_displayed(
    orientation: int,
) -> None:
    decoded = decode_image(oriented(orientation), LONG_SIDE)
    red, green = CORNERS[orientation]
    expected = dict.fromkeys(("top-left", "top-right", "bottom-left", "bottom-right"), "black")
    expected.update({red: "red", green: "green"})
    assert colour_at(decoded.rgb) == expected
    assert (decoded.width, decoded.height) == ((80, 120) if orientation >= 5 else (120, 80))


def test_orientation_survives_a_bad_entry_elsewhere_in_the_exif_block() -> None:
    """OpenCV's EXIF reader drops the whole block over one entry with a 4-gigabyte count; the
    orientation entry beside it is intact and viewers apply it, so the crops must too."""
    tiff = corpus.exif_block(
        [(0x010F, corpus.ASCII, 0xFFFFFFFF, 8), (corpus.ORIENTATION, corpus.SHORT, 1, 6)]
    )
    decoded = decode_image(oriented(6, tiff), LONG_SIDE)
    assert (decoded.width, decoded.height) == (80, 120)
    assert colour_at(decoded.rgb)["top-right"] == "red"


@pytest.mark.parametrize(
    "tiff",
    [
        corpus.exif_block([], ifd_offset=100_000),  # IFD0 past the end
        corpus.exif_block([], ifd_offset=0xFFFFFFF0),  # offset that wraps a 32-bit pointer
        b"II*\x00\x08\x00\x00\x00\xff\xff",  # 65535 entries announced, none there
        corpus.exif_block([(corpus.ORIENTATION, corpus.SHORT, 1, 9)]),  # no such orientation
        corpus.exif_block([(corpus.ORIENTATION, corpus.SHORT, 1, 0)]),
        b"XX" + corpus.exif_block([(corpus.ORIENTATION, corpus.SHORT, 1, 6)])[2:],
        b"",
    ],
    ids=[
        "ifd-past-end",
        "ifd-wraps",
        "count-past-end",
        "orientation-9",
        "orientation-0",
        "bad-byte-order",
        "empty",
    ],
)
def test_malformed_exif_leaves_the_image_as_stored(tiff: bytes) -> None:
    decoded = decode_image(oriented(1, tiff), LONG_SIDE)
    assert probe(oriented(1, tiff)).orientation == 1
    assert (decoded.width, decoded.height) == (120, 80)
    assert colour_at(decoded.rgb)["top-left"] == "red"


def test_exif_loops_are_not_followed() -> None:
    """IFD0's next-IFD pointer and an EXIF sub-IFD pointer both point back at IFD0."""
    orientation = (corpus.ORIENTATION, corpus.SHORT, 1, 6)
    loops = [
        corpus.exif_block([orientation])[:-4] + b"\x08\x00\x00\x00",
        corpus.exif_block([(0x8769, corpus.LONG, 1, 8), orientation]),
        corpus.exif_block([(0x8825, corpus.LONG, 1, 8), orientation]),  # GPS sub-IFD
    ]
    for tiff in loops:
        start = time.perf_counter()
        decoded = decode_image(oriented(6, tiff), LONG_SIDE)
        assert time.perf_counter() - start < 1.0
        assert colour_at(decoded.rgb)["top-right"] == "red"

"""Encoded image bytes to an RGB array at the model's input size.

JPEGs are decoded in the DCT domain at 1/2, 1/4 or 1/8 scale (libjpeg-turbo through OpenCV's
IMREAD_REDUCED_COLOR_*) when that still gives at least the input size: a 4000x3000 photo decodes
about 3x faster that way (docs/notes.md#reduced-jpeg-decoding), and the saliency network needs
only ~256 px. EXIF orientation is applied, so every coordinate this project reports is in the
frame of the image as displayed. Limits on bytes and pixels are checked from the header before
decoding.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from .errors import CorruptImageError, ImageTooLargeError
from .probe import ImageHeader, probe

# Input sides are multiples of the network's total stride, so feature maps tile the image exactly.
NETWORK_STRIDE = 32
MIN_INPUT_SIDE = 64
# Transparent pixels are composited on mid-grey: neither black nor white invents an edge.
NEUTRAL_BACKGROUND = 128.0
_REDUCED_FLAGS = {
    8: cv2.IMREAD_REDUCED_COLOR_8,
    4: cv2.IMREAD_REDUCED_COLOR_4,
    2: cv2.IMREAD_REDUCED_COLOR_2,
    1: cv2.IMREAD_COLOR,
}


@dataclass(frozen=True)
class DecodeLimits:
    """Admission limits, checked before any pixel is decoded. JPEGs are decoded in the DCT
    domain at up to 1/8 scale (about 0.3 bytes of memory per declared pixel); every other format
    is decoded whole (6 bytes per pixel for RGB, 11.5 with alpha), hence its lower limit."""

    max_bytes: int = 50 * 1024 * 1024
    max_pixels: int = 100_000_000
    max_full_pixels: int = 16_000_000  # PNG, WebP, GIF, BMP, TIFF


@dataclass(frozen=True)
class DecodedImage:
    """`rgb` is (h, w, 3) uint8 at the model input size; `width`/`height` are the oriented
    original size, the frame every crop box is reported in."""

    rgb: np.ndarray
    width: int
    height: int
    format: str


def model_input_size(width: int, height: int, long_side: int) -> tuple[int, int]:
    """(w, h) of the network input for an image: the long side is `long_side`, the short side
    keeps the aspect ratio, rounded to a multiple of the network stride."""
    scale = long_side / max(width, height)
    short = math.floor(min(width, height) * scale / NETWORK_STRIDE + 0.5) * NETWORK_STRIDE
    short = min(max(short, MIN_INPUT_SIDE), long_side)
    return (long_side, short) if width >= height else (short, long_side)


def jpeg_reduction(width: int, height: int, target: tuple[int, int]) -> int:
    """Largest DCT scale-down factor (8, 4, 2 or 1) that still yields at least `target`."""
    for factor in (8, 4, 2):
        if math.ceil(width / factor) >= target[0] and math.ceil(height / factor) >= target[1]:
            return factor
    return 1


def decode_image(
    data: bytes, long_side: int, limits: DecodeLimits = DecodeLimits()
) -> DecodedImage:
    """Decode `data` to RGB at `model_input_size`. Raises an `ImageError` subclass on rejection."""
    return _decode(data, limits, lambda w, h: model_input_size(w, h, long_side))


def decode_preview(
    data: bytes, max_side: int, limits: DecodeLimits = DecodeLimits()
) -> DecodedImage:
    """Decode `data` to RGB fitting in `max_side` with its aspect ratio kept (for drawing)."""

    def fit(w: int, h: int) -> tuple[int, int]:
        scale = min(1.0, max_side / max(w, h))
        return max(1, round(w * scale)), max(1, round(h * scale))

    return _decode(data, limits, fit)


def _decode(
    data: bytes, limits: DecodeLimits, size_for: Callable[[int, int], tuple[int, int]]
) -> DecodedImage:
    if len(data) > limits.max_bytes:
        raise ImageTooLargeError(f"image is {len(data)} bytes, limit {limits.max_bytes}")
    header = probe(data)
    if header.width * header.height > limits.max_pixels:
        raise ImageTooLargeError(
            f"image declares {header.width}x{header.height} pixels, limit {limits.max_pixels}"
        )
    if header.format != "jpeg" and header.width * header.height > limits.max_full_pixels:
        raise ImageTooLargeError(
            f"{header.format} declares {header.width}x{header.height} pixels, limit "
            f"{limits.max_full_pixels} for formats decoded at full size"
        )
    buffer = np.frombuffer(data, np.uint8)
    if header.format == "jpeg":
        bgr, width, height = _decode_jpeg(data, buffer, header, size_for(*header.oriented_size))
    else:
        bgr = _to_bgr8(_imdecode(buffer, cv2.IMREAD_UNCHANGED, header.format))
        height, width = bgr.shape[:2]  # trust the decoder over the header for the first frame
    target = size_for(width, height)
    interpolation = cv2.INTER_AREA if target[0] <= bgr.shape[1] else cv2.INTER_LINEAR
    resized = cv2.resize(bgr, target, interpolation=interpolation)
    return DecodedImage(cv2.cvtColor(resized, cv2.COLOR_BGR2RGB), width, height, header.format)


def _imdecode(buffer: np.ndarray, flags: int, fmt: str) -> np.ndarray:
    try:
        image = cv2.imdecode(buffer, flags)
    except cv2.error as exc:
        raise CorruptImageError(f"{fmt} data cannot be decoded: {exc.err}") from exc
    if image is None or image.size == 0:
        raise CorruptImageError(f"{fmt} data cannot be decoded (corrupt or truncated)")
    return image


def _decode_jpeg(
    data: bytes, buffer: np.ndarray, header: ImageHeader, target: tuple[int, int]
) -> tuple[np.ndarray, int, int]:
    # libjpeg fills a truncated scan with grey and only warns. The end-of-image marker cannot
    # occur inside entropy-coded data (0xFF is stuffed there), so its absence after the frame
    # header is the reliable sign of truncation; trailers after it (motion photos) are fine.
    if data.find(b"\xff\xd9", header.frame_offset) < 0:
        raise CorruptImageError("JPEG is truncated (no end-of-image marker)")
    width, height = header.oriented_size
    factor = jpeg_reduction(width, height, target)
    # The orientation is applied here, from the probe's reading, not by OpenCV: its EXIF parser
    # drops the whole block over one bad entry elsewhere in it (a huge count, a bad offset),
    # while viewers still turn the image, and the crops must be in the frame they show.
    flags = _REDUCED_FLAGS[factor] | cv2.IMREAD_IGNORE_ORIENTATION
    bgr = _imdecode(buffer, flags, "jpeg")
    stored = (math.ceil(header.width / factor), math.ceil(header.height / factor))
    if (bgr.shape[1], bgr.shape[0]) != stored:
        raise CorruptImageError(
            f"JPEG decoded to {bgr.shape[1]}x{bgr.shape[0]}, "
            f"header says {header.width}x{header.height} / {factor}"
        )
    return _orient(bgr, header.orientation), width, height


def _orient(image: np.ndarray, orientation: int) -> np.ndarray:
    """The stored pixels turned the way EXIF `orientation` (1-8) says they are displayed."""
    if orientation == 2:
        return cv2.flip(image, 1)  # mirrored left to right
    if orientation == 3:
        return cv2.rotate(image, cv2.ROTATE_180)
    if orientation == 4:
        return cv2.flip(image, 0)  # mirrored top to bottom
    if orientation == 5:
        return cv2.transpose(image)
    if orientation == 6:
        return cv2.rotate(image, cv2.ROTATE_90_CLOCKWISE)
    if orientation == 7:
        return cv2.rotate(cv2.transpose(image), cv2.ROTATE_180)
    if orientation == 8:
        return cv2.rotate(image, cv2.ROTATE_90_COUNTERCLOCKWISE)
    return image


def _to_bgr8(image: np.ndarray) -> np.ndarray:
    """Any depth and channel count from IMREAD_UNCHANGED to 8-bit BGR."""
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    elif image.dtype != np.uint8:
        # Float and 32-bit TIFFs: NaN and infinities carry no brightness (and would make the
        # cast undefined); values that all lie in [0, 1] are fractions of full scale.
        finite = np.clip(np.nan_to_num(image, nan=0, posinf=0, neginf=0), 0, 255)
        scale = 255.0 if finite.max() <= 1 else 1.0
        image = (finite.astype(np.float32) * scale).astype(np.uint8)
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    channels = image.shape[2]
    if channels == 1:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if channels == 2:  # grey + alpha
        grey = cv2.cvtColor(image[:, :, :1], cv2.COLOR_GRAY2BGR)
        return _composite(grey, image[:, :, 1])
    if channels == 4:
        return _composite(image[:, :, :3], image[:, :, 3])
    return image[:, :, :3]


COMPOSITE_CHUNK_PIXELS = 1 << 20


def _composite(bgr: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Blend on the neutral background, a band of rows at a time: the float arithmetic takes
    about 36 bytes per pixel, which over a whole 100-megapixel image would be 3.6 GB from a
    small PNG; in bands of about a megapixel the extra memory stays near 36 MB."""
    out = np.empty((*bgr.shape[:2], 3), np.uint8)
    rows = max(1, COMPOSITE_CHUNK_PIXELS // max(1, bgr.shape[1]))
    for top in range(0, bgr.shape[0], rows):
        band = slice(top, top + rows)
        a = alpha[band].astype(np.float32)[:, :, None] / 255.0
        blended = bgr[band].astype(np.float32) * a + NEUTRAL_BACKGROUND * (1.0 - a)
        out[band] = np.rint(blended)
    return out

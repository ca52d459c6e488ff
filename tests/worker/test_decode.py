from __future__ import annotations

import struct
import zlib

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from cropworker import decode as decode_module
from cropworker import errors
from cropworker.decode import (
    DecodeLimits,
    decode_image,
    decode_preview,
    jpeg_reduction,
    model_input_size,
)
from cropworker.probe import probe
from tests.images import encode, gradient, jpeg_with_orientation, photo

LONG_SIDE = 256


def test_real_photo_decodes_to_model_input_size() -> None:
    decoded = decode_image(photo("coffee.jpg"), LONG_SIDE)
    assert (decoded.width, decoded.height) == (600, 400)
    assert decoded.rgb.shape == (160, 256, 3)  # 600x400 -> 256 x 170.7, rounded to 32
    assert decoded.rgb.dtype == np.uint8
    assert decoded.format == "jpeg"


def test_portrait_photo_keeps_portrait_input() -> None:
    decoded = decode_image(photo("nus_258.jpg"), LONG_SIDE)
    assert (decoded.width, decoded.height) == (480, 640)
    assert decoded.rgb.shape[0] == LONG_SIDE and decoded.rgb.shape[1] < LONG_SIDE


@pytest.mark.parametrize(
    ("width", "height", "expected"),
    [
        (4000, 3000, (256, 192)),
        (3000, 4000, (192, 256)),
        (1000, 1000, (256, 256)),
        (1920, 1080, (256, 160)),
        (100000, 1, (256, 64)),
        (1, 1, (256, 256)),
    ],
)
def test_model_input_size(width: int, height: int, expected: tuple[int, int]) -> None:
    assert model_input_size(width, height, LONG_SIDE) == expected


@given(st.integers(1, 20000), st.integers(1, 20000))
def test_model_input_size_is_stride_aligned_and_bounded(width: int, height: int) -> None:
    w, h = model_input_size(width, height, LONG_SIDE)
    assert w % 32 == 0 and h % 32 == 0
    assert max(w, h) == LONG_SIDE and min(w, h) >= 64
    assert w == h or (w > h) == (width > height)  # nearly square images may become square


def test_jpeg_reduction_picks_largest_factor_that_keeps_the_input_size() -> None:
    assert jpeg_reduction(4000, 3000, (256, 192)) == 8  # 500x375
    assert jpeg_reduction(1200, 900, (256, 192)) == 4  # 300x225; /8 would be 150x113
    assert jpeg_reduction(600, 400, (256, 160)) == 2
    assert jpeg_reduction(300, 200, (256, 160)) == 1


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied(orientation: int) -> None:
    # Stored 120x80; orientations 5-8 display it as 80x120.
    data = jpeg_with_orientation(120, 80, orientation)
    decoded = decode_image(data, LONG_SIDE)
    transposed = orientation >= 5
    assert (decoded.width, decoded.height) == ((80, 120) if transposed else (120, 80))
    # The displayed image must match what Pillow's exif_transpose shows.
    import io

    from PIL import ImageOps

    expected = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))
    resized = cv2.resize(expected, decoded.rgb.shape[1::-1], interpolation=cv2.INTER_AREA)
    assert np.abs(resized.astype(int) - decoded.rgb.astype(int)).mean() < 6


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "GIF", "BMP", "TIFF"])
def test_other_formats(fmt: str) -> None:
    image = Image.fromarray(gradient(90, 60))
    decoded = decode_image(encode(image, fmt), LONG_SIDE)
    assert (decoded.width, decoded.height) == (90, 60)
    # colour encodes position: red must grow left to right, green top to bottom
    assert decoded.rgb[:, -1, 0].mean() > decoded.rgb[:, 0, 0].mean() + 100
    assert decoded.rgb[-1, :, 1].mean() > decoded.rgb[0, :, 1].mean() + 100


def test_grayscale_16bit_png() -> None:
    ramp = (np.linspace(0, 65535, 80)[None, :].repeat(40, 0)).astype(np.uint16)
    _, png = cv2.imencode(".png", ramp)
    decoded = decode_image(png.tobytes(), LONG_SIDE)
    assert decoded.rgb.shape[2] == 3
    assert decoded.rgb[:, -1].mean() > 240 and decoded.rgb[:, 0].mean() < 15


def test_alpha_is_composited_on_neutral_grey() -> None:
    rgba = np.zeros((50, 50, 4), np.uint8)
    rgba[:, :25] = (255, 0, 0, 255)  # opaque red on the left, fully transparent black on the right
    decoded = decode_image(encode(Image.fromarray(rgba, "RGBA"), "PNG"), LONG_SIDE)
    right = decoded.rgb[:, -20:].reshape(-1, 3).mean(axis=0)
    left = decoded.rgb[:, :20].reshape(-1, 3).mean(axis=0)
    assert np.allclose(right, 128, atol=2)
    assert left[0] > 240 and left[1] < 15


def test_compositing_a_large_transparent_image_needs_little_extra_memory() -> None:
    """Blending in float over the whole image took about 36 bytes per pixel (3.6 GB for a
    100-megapixel PNG of under a megabyte); in bands it takes the output and one band."""
    import tracemalloc

    rgba = np.full((2000, 4000, 4), 200, np.uint8)
    rgba[..., 3] = np.arange(4000, dtype=np.uint8)[None, :]
    tracemalloc.start()
    try:
        out = decode_module._composite(rgba[..., :3], rgba[..., 3])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 3 * rgba[..., 0].size + 48 * decode_module.COMPOSITE_CHUNK_PIXELS
    a = rgba[0, :, 3].astype(np.float64) / 255
    assert np.array_equal(out[0, :, 0], np.rint(200 * a + 128 * (1 - a)).astype(np.uint8))
    assert np.array_equal(out[-1], out[0])


def test_cmyk_jpeg() -> None:
    rgb = gradient(64, 48)
    decoded = decode_image(
        encode(Image.fromarray(rgb).convert("CMYK"), "JPEG", quality=95), LONG_SIDE
    )
    expected = cv2.resize(rgb, decoded.rgb.shape[1::-1], interpolation=cv2.INTER_AREA)
    assert np.abs(expected.astype(int) - decoded.rgb.astype(int)).mean() < 8


def test_animated_gif_uses_first_frame() -> None:
    frames = [Image.new("RGB", (40, 30), c) for c in ((255, 0, 0), (0, 0, 255))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)
    decoded = decode_image(data, LONG_SIDE)
    assert decoded.rgb[..., 0].mean() > 200 and decoded.rgb[..., 2].mean() < 50


def test_empty() -> None:
    with pytest.raises(errors.EmptyImageError):
        decode_image(b"", LONG_SIDE)


@pytest.mark.parametrize(
    "data",
    [
        b"<html><body>hi</body></html>",
        b"PK\x03\x04zipfile",
        b"<svg xmlns='http://www.w3.org/2000/svg'/>",
        b"\x00" * 100,
    ],
)
def test_unsupported(data: bytes) -> None:
    with pytest.raises(errors.UnsupportedFormatError):
        decode_image(data, LONG_SIDE)


@pytest.mark.parametrize("name", ["coffee.jpg", "camera.png"])
def test_truncated(name: str) -> None:
    data = photo(name)
    with pytest.raises(errors.CorruptImageError):
        decode_image(data[: len(data) // 2], LONG_SIDE)


def test_header_only_jpeg_is_corrupt() -> None:
    with pytest.raises(errors.CorruptImageError):
        decode_image(photo("coffee.jpg")[:300], LONG_SIDE)


def test_byte_limit() -> None:
    with pytest.raises(errors.ImageTooLargeError):
        decode_image(photo("coffee.jpg"), LONG_SIDE, DecodeLimits(max_bytes=1000))


def _png_header_only(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr
    return b"\x89PNG\r\n\x1a\n" + chunk + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))


def test_decompression_bomb_rejected_from_header() -> None:
    # 100000 x 100000 declared in 33 bytes: refused by arithmetic, nothing is allocated.
    data = _png_header_only(100_000, 100_000)
    assert probe(data).width == 100_000
    with pytest.raises(errors.ImageTooLargeError):
        decode_image(data, LONG_SIDE)


def test_formats_decoded_whole_have_their_own_pixel_limit() -> None:
    """A 5000x4000 PNG is refused by the full-size limit (its decode would need 120-230 MB); a
    JPEG of the same size is decoded at 1/8 scale and passes."""
    with pytest.raises(errors.ImageTooLargeError, match="decoded at full size"):
        decode_image(_png_header_only(5000, 4000), LONG_SIDE)
    rgb = np.full((4000, 5000, 3), 90, np.uint8)
    jpeg = cv2.imencode(".jpg", rgb)[1].tobytes()
    assert decode_image(jpeg, LONG_SIDE).width == 5000
    png = cv2.imencode(".png", rgb[:40, :50])[1].tobytes()
    with pytest.raises(errors.ImageTooLargeError):
        decode_image(png, LONG_SIDE, DecodeLimits(max_full_pixels=1999))
    assert decode_image(png, LONG_SIDE, DecodeLimits(max_full_pixels=2000)).width == 50


def test_extreme_aspect_image() -> None:
    decoded = decode_image(encode(Image.fromarray(gradient(5000, 2)), "PNG"), LONG_SIDE)
    assert (decoded.width, decoded.height) == (5000, 2)
    assert decoded.rgb.shape == (64, 256, 3)


def test_one_pixel_image() -> None:
    decoded = decode_image(encode(Image.new("RGB", (1, 1), (10, 200, 30)), "PNG"), LONG_SIDE)
    assert (decoded.width, decoded.height) == (1, 1)
    assert tuple(decoded.rgb[0, 0]) == (10, 200, 30)


def test_preview_keeps_aspect() -> None:
    preview = decode_preview(photo("coffee.jpg"), 300)
    assert preview.rgb.shape == (200, 300, 3)


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=2000), st.sampled_from(["coffee.jpg", "camera.png"]))
def test_mutated_files_never_crash(noise: bytes, name: str) -> None:
    """Corrupting a real file anywhere gives a decoded image or an ImageError, nothing else."""
    data = bytearray(photo(name)[:4000])
    for i, b in enumerate(noise[:64]):
        data[(i * 977 + b * 31) % len(data)] = b
    try:
        decoded = decode_image(bytes(data), LONG_SIDE)
    except errors.ImageError:
        return
    assert decoded.rgb.ndim == 3

"""Test images: the real sample photos, and images generated in every format the decoder takes."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "samples"
# A miniature data folder, laid out as `--data` takes it (cropworker_models.data): fixations/
# holds three held-out photos with their fixations, in the eye-tracking sets' format (README there)
DATA = ROOT / "tests" / "data"


def photo(name: str = "coffee.jpg") -> bytes:
    return (SAMPLES / name).read_bytes()


def gradient(width: int, height: int) -> np.ndarray:
    """An RGB image whose colour encodes position: red grows to the right, green downwards."""
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :].repeat(height, 0)
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None].repeat(width, 1)
    return np.stack([x, y, np.full_like(x, 64)], axis=2).astype(np.uint8)


def encode(image: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def jpeg_with_orientation(width: int, height: int, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(Image.fromarray(gradient(width, height)), "JPEG", exif=exif.tobytes(), quality=95)

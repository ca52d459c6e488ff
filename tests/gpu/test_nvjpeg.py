"""The nvImageCodec decoder, run for real through its CPU backend (libjpeg-turbo) where no GPU
exists: the same calls as on a GPU, only the backend differs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from cropworker.decode import DecodeLimits, decode_image
from cropworker.errors import CorruptImageError, GpuUnavailableError, ImageTooLargeError
from cropworker.gpu.nvjpeg import NvJpegDecoder

from .fakes import FakeCudart, cudaError_t

SAMPLES = Path("samples")


@pytest.fixture(scope="module")
def decoder() -> NvJpegDecoder:
    codec = pytest.importorskip("nvidia.nvimgcodec")
    return NvJpegDecoder(256, backends=("CPU_ONLY",), nvimgcodec=codec)


@pytest.mark.parametrize("name", ["chelsea.jpg", "coffee.jpg", "rocket.jpg", "rocket_exif6.jpg"])
def test_matches_the_cpu_decoder(decoder: NvJpegDecoder, name: str) -> None:
    data = (SAMPLES / name).read_bytes()
    want, got = decode_image(data, 256), decoder(data)
    assert (got.width, got.height, got.format) == (want.width, want.height, "jpeg")
    assert got.rgb.shape == want.rgb.shape and got.rgb.dtype == np.uint8
    # OpenCV decodes in the DCT domain at a reduced scale, nvImageCodec at full size: the
    # resized pictures differ by rounding, not by orientation or colour order.
    assert np.abs(got.rgb.astype(int) - want.rgb.astype(int)).mean() < 4


def test_other_formats_go_to_the_cpu_decoder(decoder: NvJpegDecoder) -> None:
    data = (SAMPLES / "camera.png").read_bytes()
    np.testing.assert_array_equal(decoder(data).rgb, decode_image(data, 256).rgb)


def test_grey_jpeg_becomes_rgb(decoder: NvJpegDecoder) -> None:
    grey = np.tile(np.arange(0, 256, 2, dtype=np.uint8), (96, 1))
    ok, data = cv2.imencode(".jpg", grey)
    assert ok
    got = decoder(data.tobytes())
    assert got.rgb.shape == (192, 256, 3) and (got.width, got.height) == (128, 96)
    assert np.array_equal(got.rgb[..., 0], got.rgb[..., 2])


def test_truncated_jpeg_is_corrupt(decoder: NvJpegDecoder) -> None:
    data = (SAMPLES / "chelsea.jpg").read_bytes()
    with pytest.raises(CorruptImageError, match="truncated"):
        decoder(data[: len(data) // 2])


class CountingCodec:
    """Just enough nvImageCodec for the paths that must not, or cannot, decode."""

    NVIMGCODEC_DEVICE_CPU_ONLY = -99

    class BackendKind:
        CPU_ONLY = "CPU_ONLY"

    class ColorSpec:
        SRGB = 1

    class SampleFormat:
        I_RGB = 10

    def __init__(self) -> None:
        self.decodes = 0

    def Backend(self, kind: str) -> str:
        return kind

    def DecodeParams(self, **params: Any) -> dict[str, Any]:
        return params

    def Decoder(self, **options: Any) -> Any:
        codec = self

        class Decoder:
            def decode(self, data: bytes, params: Any) -> None:
                codec.decodes += 1
                return None

        return Decoder()


def test_limits_are_checked_before_decoding() -> None:
    codec = CountingCodec()
    decoder = NvJpegDecoder(
        256, DecodeLimits(max_pixels=1000), backends=("CPU_ONLY",), nvimgcodec=codec
    )
    with pytest.raises(ImageTooLargeError, match="limit 1000"):
        decoder((SAMPLES / "chelsea.jpg").read_bytes())
    assert codec.decodes == 0


def test_undecodable_is_corrupt() -> None:
    codec = CountingCodec()
    decoder = NvJpegDecoder(256, backends=("CPU_ONLY",), nvimgcodec=codec)
    with pytest.raises(CorruptImageError, match="cannot be decoded"):
        decoder((SAMPLES / "chelsea.jpg").read_bytes())
    assert codec.decodes == 1


def test_gpu_decoding_needs_a_gpu() -> None:
    cudart = FakeCudart(count_error=cudaError_t.cudaErrorInsufficientDriver)
    with pytest.raises(GpuUnavailableError, match="InsufficientDriver"):
        NvJpegDecoder(256, nvimgcodec=CountingCodec(), cudart=cudart)

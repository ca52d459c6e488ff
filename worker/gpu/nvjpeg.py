"""JPEG decoding on the GPU (nvJPEG, through nvidia-nvimgcodec) behind the decode interface.

`NvJpegDecoder(long_side)(data)` returns the same `DecodedImage` as `decode_image(data,
long_side)`: admission limits checked from the header first, EXIF orientation applied, RGB at
the network input size. JPEGs are decoded by nvImageCodec (the hardware JPEG engine where the
GPU has one, else CUDA nvJPEG; libjpeg-turbo on the CPU for what neither supports); every other
format goes to the CPU decoder. The full-resolution image is copied back to the host and resized
there: what the GPU saves is the Huffman decoding, which bounds CPU decoding time on large
photos (docs/notes.md#reduced-jpeg-decoding). Whether that wins over OpenCV's DCT-domain reduced
decode is measured by benchmarks/gpu_check.sh, so this decoder is off by default
(CROPWORKER_GPU_DECODE).

Each thread gets its own nvImageCodec decoder (the worker decodes in a thread pool).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from ..decode import DecodedImage, DecodeLimits, decode_image, model_input_size
from ..errors import CorruptImageError, GpuUnavailableError, ImageTooLargeError
from ..probe import probe
from .probe import require_gpu


def load_nvimgcodec() -> Any:
    try:
        from nvidia import nvimgcodec
    except ImportError as exc:
        raise GpuUnavailableError(
            "nvidia-nvimgcodec is not installed (pip install 'cropworker[gpu]')"
        ) from exc
    return nvimgcodec


class NvJpegDecoder:
    """A `Callable[[bytes], DecodedImage]` for `Cropper(decoder=...)`. `backends` restricts
    nvImageCodec's backends by `BackendKind` name (("CPU_ONLY",) runs the same code on machines
    without a GPU, for tests); None allows all, GPU first, after checking a GPU is there."""

    def __init__(
        self,
        long_side: int,
        limits: DecodeLimits | None = None,
        *,
        device: int = 0,
        backends: Sequence[str] | None = None,
        nvimgcodec: Any | None = None,
        cudart: Any | None = None,
    ) -> None:
        cpu_only = backends is not None and set(backends) == {"CPU_ONLY"}
        if not cpu_only:
            require_gpu(cudart)  # nvImageCodec would otherwise fall back to the CPU silently
        self.long_side = long_side
        self.limits = limits or DecodeLimits()
        self._codec = nvimgcodec if nvimgcodec is not None else load_nvimgcodec()
        codec = self._codec
        self._device = codec.NVIMGCODEC_DEVICE_CPU_ONLY if cpu_only else device
        self._backends = (
            None
            if backends is None
            else [codec.Backend(getattr(codec.BackendKind, b)) for b in backends]
        )
        self._params = codec.DecodeParams(
            apply_exif_orientation=True,
            color_spec=codec.ColorSpec.SRGB,
            sample_format=codec.SampleFormat.I_RGB,
        )
        self._local = threading.local()

    def _decoder(self) -> Any:
        decoder = getattr(self._local, "decoder", None)
        if decoder is None:
            decoder = self._codec.Decoder(device_id=self._device, backends=self._backends)
            self._local.decoder = decoder
        return decoder

    def __call__(self, data: bytes) -> DecodedImage:
        # The same admission as decode.decode_image, before any pixel is decoded.
        if len(data) > self.limits.max_bytes:
            raise ImageTooLargeError(f"image is {len(data)} bytes, limit {self.limits.max_bytes}")
        header = probe(data)
        if header.format != "jpeg":
            return decode_image(data, self.long_side, self.limits)
        if header.width * header.height > self.limits.max_pixels:
            raise ImageTooLargeError(
                f"image declares {header.width}x{header.height} pixels, "
                f"limit {self.limits.max_pixels}"
            )
        if data.find(b"\xff\xd9", header.frame_offset) < 0:  # see decode._decode_jpeg
            raise CorruptImageError("JPEG is truncated (no end-of-image marker)")
        try:
            image = self._decoder().decode(data, params=self._params)
            host = None if image is None else image.cpu()
        except Exception as exc:  # nvImageCodec raises its own unrelated exception types
            raise CorruptImageError(f"jpeg data cannot be decoded: {exc}") from exc
        if host is None:
            raise CorruptImageError("jpeg data cannot be decoded (corrupt or unsupported)")
        rgb = _rgb(np.asarray(host))
        height, width = rgb.shape[:2]
        target = model_input_size(width, height, self.long_side)
        interpolation = cv2.INTER_AREA if target[0] <= width else cv2.INTER_LINEAR
        resized = cv2.resize(rgb, target, interpolation=interpolation)
        return DecodedImage(np.ascontiguousarray(resized), width, height, "jpeg")


def _rgb(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 from whatever layout the decoder returned (grey, 1 or 3 channels)."""
    if image.ndim == 2 or image.shape[2] == 1:
        return cv2.cvtColor(image.reshape(image.shape[:2]), cv2.COLOR_GRAY2RGB)
    return image[:, :, :3]

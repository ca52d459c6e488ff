"""Image bytes in, saliency and crop boxes out: decode, batch by input shape, infer, crop."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import crop
from .backend import Backend
from .decode import DecodedImage, DecodeLimits, decode_image


@dataclass(frozen=True)
class CropResult:
    width: int
    height: int
    saliency: np.ndarray = field(repr=False)  # (h, w) float32 probabilities summing to 1
    crops: dict[str, crop.Box]
    salient_points: list[tuple[int, int, float]]
    model: str

    def to_json(self, image: str) -> dict[str, Any]:
        return {
            "image": image,
            "width": self.width,
            "height": self.height,
            "salient_points": [list(p) for p in self.salient_points],
            "crops": {name: list(box) for name, box in self.crops.items()},
            "model": self.model,
        }


class Cropper:
    """Turns encoded images into `CropResult`s with one backend and one set of aspects."""

    def __init__(
        self,
        backend: Backend,
        aspects: Sequence[str] = crop.DEFAULT_ASPECTS,
        limits: DecodeLimits | None = None,
        max_batch: int = 8,
        decoder: Callable[[bytes], DecodedImage] | None = None,
    ) -> None:
        self.backend = backend
        self.aspects = {name: crop.parse_aspect(name) for name in aspects}
        self.limits = limits or DecodeLimits()
        self.max_batch = max_batch
        self.decoder = decoder  # None: decode_image on the CPU (else e.g. gpu.nvjpeg)

    def decode(self, data: bytes) -> DecodedImage:
        if self.decoder is not None:
            return self.decoder(data)
        return decode_image(data, self.backend.info.long_side, self.limits)

    def crop(self, data: bytes) -> CropResult:
        return self.crop_decoded([self.decode(data)])[0]

    def crop_decoded(self, images: Sequence[DecodedImage]) -> list[CropResult]:
        """Run the network on images grouped by input shape (at most `max_batch` at a time)."""
        by_shape: dict[tuple[int, ...], list[int]] = defaultdict(list)
        for i, image in enumerate(images):
            by_shape[image.rgb.shape].append(i)
        maps: dict[int, np.ndarray] = {}
        for indices in by_shape.values():
            for start in range(0, len(indices), self.max_batch):
                chunk = indices[start : start + self.max_batch]
                logp = self.backend.infer(np.stack([images[i].rgb for i in chunk]))
                for i, m in zip(chunk, logp, strict=True):
                    maps[i] = m
        return [self._result(image, maps[i]) for i, image in enumerate(images)]

    def _result(self, image: DecodedImage, log_density: np.ndarray) -> CropResult:
        saliency = np.exp(log_density.astype(np.float64))
        saliency = (saliency / saliency.sum()).astype(np.float32)
        return CropResult(
            width=image.width,
            height=image.height,
            saliency=saliency,
            crops=crop.crops(saliency, image.width, image.height, self.aspects),
            salient_points=crop.salient_points(saliency, image.width, image.height),
            model=self.backend.info.tag,
        )

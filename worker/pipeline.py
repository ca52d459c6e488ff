"""Image bytes in, saliency and crop boxes out: decode, batch by input shape, infer, crop."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from . import crop
from .backend import Backend
from .decode import DecodedImage, DecodeLimits, decode_image

KeepStatus = Literal["all", "partial"]  # the crop holds every keep-region whole, or not


@dataclass(frozen=True)
class CropResult:
    width: int
    height: int
    saliency: np.ndarray = field(repr=False)  # (h, w) float32 probabilities summing to 1
    crops: dict[str, crop.Box]
    salient_points: list[tuple[int, int, float]]
    model: str
    keep: dict[str, KeepStatus] | None = None  # per aspect; None when no keep-regions were asked

    def to_json(self, image: str) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "image": image,
            "width": self.width,
            "height": self.height,
            "salient_points": [list(p) for p in self.salient_points],
            "crops": {name: list(box) for name, box in self.crops.items()},
            "model": self.model,
        }
        if self.keep is not None:
            doc["keep"] = self.keep
        return doc


@dataclass(frozen=True)
class CropRequest:
    """What one image's crops are asked for beyond the cropper's own settings."""

    aspects: tuple[str, ...] | None = None  # None: the cropper's aspects
    keep: tuple[crop.Box, ...] = ()  # regions the crops must keep (crop.keep_region, inside)


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

    def crop_decoded(
        self, images: Sequence[DecodedImage], requests: Sequence[CropRequest] | None = None
    ) -> list[CropResult]:
        """Run the network on images grouped by input shape (at most `max_batch` at a time), and
        crop each as its request (if any) asks. Keep-regions must lie inside their image
        (`crop.check_keep`, done once it is decoded)."""
        requests = requests or [CropRequest()] * len(images)
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
        return [
            self._result(image, maps[i], request)
            for i, (image, request) in enumerate(zip(images, requests, strict=True))
        ]

    def _result(
        self, image: DecodedImage, log_density: np.ndarray, request: CropRequest
    ) -> CropResult:
        saliency = np.exp(log_density.astype(np.float64))
        saliency = (saliency / saliency.sum()).astype(np.float32)
        aspects = self.aspects
        if request.aspects is not None:
            aspects = {name: crop.parse_aspect(name) for name in request.aspects}
        boxes = crop.crops(saliency, image.width, image.height, aspects, request.keep)
        keep: dict[str, KeepStatus] | None = None
        if request.keep:
            keep = {
                name: "all" if all(crop.contains(box, r) for r in request.keep) else "partial"
                for name, box in boxes.items()
            }
        return CropResult(
            width=image.width,
            height=image.height,
            saliency=saliency,
            crops=boxes,
            salient_points=crop.salient_points(saliency, image.width, image.height),
            model=self.backend.info.tag,
            keep=keep,
        )

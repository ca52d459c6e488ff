"""The same photo submitted at 4000, 2000, 1000 and 500 px long side: how far its crops move.

Each sample photo is enlarged to 4000 px (cubic), shrunk from there to 2000, 1000 and 500 px
(area) and encoded as JPEG at quality 90, as a service receives one picture exported at several
sizes. Boxes are compared as fractions of the image side (x / width, y / height, right and
bottom edges alike); a box's spread is the largest difference of any edge across the four sizes.

Measured (2026-12-04, fast@5 and default@2, 8 sample photos x 4 aspects = 32 boxes each):

- The geometry alone is scale-invariant: fed the very same network input and told each size,
  the boxes agree within 0.23% of the side, integer rounding at 500 px
  (`test_same_network_input_gives_the_same_crops`).
- The network input is always about 192 px, but it is not the same picture at every size: the
  decoder reduces in the DCT domain (4000 px by 8 to 500 px; 2000 by 8, 1000 by 4 and 500 by 2
  to 250 px) and shrinks that to the input, and each size is its own JPEG. The inputs differ
  from the 4000 px one by 1 to 4 grey levels on average, the saliency maps by 4-13% of their
  mass (total variation). With PNGs (no JPEG loss, no DCT reduction) 91% of the boxes agree within
  1% of the side; JPEGs decoded in full 88% (fast) and 94% (default); through the decoder as
  shipped 81% (fast) and 78% (default).
- The median box moves by 0.1% of the side; 26 of 32 (fast) and 25 of 32 (default) move by at
  most 1%. The others move by one cell of the saliency grid (48 cells along the long side:
  2.1-3.1% of the side), or by 15-19% of the side where two windows hold almost the same saliency
  (rocket 4:5 for both models, nus_258 16:9 for default): on the 4000 px map, the box chosen at
  another size keeps at most 2.0% less of the saliency mass (fast; default 1.5%).

So "the same crop at every output size" holds within 1% for about four crops in five; the test
asserts what was measured: at least 75% within 1%, none beyond 20% of the side, and at most 2.5%
of the saliency mass given up by the box of any size.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from cropworker import crop
from cropworker.backend import OnnxBackend
from cropworker.decode import DecodedImage, decode_image
from cropworker.pipeline import Cropper, CropResult
from tests.images import SAMPLES

SIDES = (4000, 2000, 1000, 500)
# every sample photo but rocket_exif6.jpg (rocket.jpg turned; re-encoding drops its EXIF)
PHOTOS = (
    "astronaut.jpg",
    "camera.png",
    "chelsea.jpg",
    "coffee.jpg",
    "eyecrowd_003.jpg",
    "eyecrowd_036.jpg",
    "nus_258.jpg",
    "rocket.jpg",
)
MODELS = ("fast", "default")
JPEG_QUALITY = 90
# Integer offsets and rounded box sizes: up to 1 px per edge and 1 px of size at 500 px.
ROUNDING = 2 / min(SIDES)
# The measured bounds (module docstring), with a little room.
AGREE = 0.01  # the users' ask: within 1% of the image side
SHARE_AGREEING = 0.75  # measured 0.81 (fast), 0.78 (default)
MAX_SPREAD = 0.20  # measured 0.154 (fast), 0.188 (default)
MAX_MASS_LOST = 0.025  # measured 0.020 (fast), 0.015 (default)


def at_every_size(name: str) -> dict[int, bytes]:
    source = cv2.imread(str(SAMPLES / name), cv2.IMREAD_COLOR)
    height, width = source.shape[:2]
    scale = SIDES[0] / max(width, height)
    master = cv2.resize(
        source, (round(width * scale), round(height * scale)), interpolation=cv2.INTER_CUBIC
    )
    out = {}
    for side in SIDES:
        f = side / SIDES[0]
        size = (round(master.shape[1] * f), round(master.shape[0] * f))
        image = (
            master if side == SIDES[0] else cv2.resize(master, size, interpolation=cv2.INTER_AREA)
        )
        ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        assert ok
        out[side] = encoded.tobytes()
    return out


def spread(results: list[CropResult], aspect: str) -> float:
    """Largest difference, across the sizes, of any box edge as a fraction of the image side."""
    edges = np.array(
        [
            [x / r.width, y / r.height, (x + w) / r.width, (y + h) / r.height]
            for r in results
            for x, y, w, h in [r.crops[aspect]]
        ]
    )
    return float((edges.max(axis=0) - edges.min(axis=0)).max())


def mass(result: CropResult, box: crop.Box) -> float:
    """Saliency mass of `result`'s map inside `box`, the map read as a piecewise-constant density
    over the image (as `crop.best_offset` reads it); `box` spans one axis whole."""
    x, y, w, h = box
    horizontal = h == result.height
    marginal = result.saliency.sum(axis=0 if horizontal else 1)
    extent, start, size = (result.width, x, w) if horizontal else (result.height, y, h)
    edges = np.linspace(0.0, extent, len(marginal) + 1)
    cdf = np.concatenate([[0.0], np.cumsum(marginal, dtype=np.float64)])
    return float(np.interp(start + size, edges, cdf) - np.interp(start, edges, cdf))


@pytest.fixture(scope="module")
def photos() -> dict[str, dict[int, bytes]]:
    return {name: at_every_size(name) for name in PHOTOS}


@pytest.mark.parametrize("model", MODELS)
def test_same_network_input_gives_the_same_crops(
    model: str, photos: dict[str, dict[int, bytes]]
) -> None:
    cropper = Cropper(OnnxBackend(model))
    for name, sizes in photos.items():
        decoded = {
            side: decode_image(data, cropper.backend.info.long_side) for side, data in sizes.items()
        }
        same_input = [
            DecodedImage(decoded[SIDES[0]].rgb, d.width, d.height, d.format)
            for d in decoded.values()
        ]
        results = cropper.crop_decoded(same_input)
        for aspect in cropper.aspects:
            assert spread(results, aspect) <= ROUNDING, (name, aspect)


@pytest.mark.parametrize("model", MODELS)
def test_crops_agree_across_sizes_as_measured(
    model: str, photos: dict[str, dict[int, bytes]]
) -> None:
    cropper = Cropper(OnnxBackend(model))
    spreads, lost = [], []
    for sizes in photos.values():
        results = [cropper.crop(data) for data in sizes.values()]
        largest = results[0]
        for aspect in cropper.aspects:
            spreads.append(spread(results, aspect))
            # each smaller size's box moved onto the 4000 px frame and map
            kept = mass(largest, largest.crops[aspect])
            _, _, w, h = largest.crops[aspect]
            for r in results[1:]:
                x, y, _, _ = r.crops[aspect]
                moved = (
                    round(x * largest.width / r.width),
                    round(y * largest.height / r.height),
                    w,
                    h,
                )
                lost.append(kept - mass(largest, moved))
    assert np.median(spreads) <= AGREE
    assert np.mean(np.array(spreads) <= AGREE) >= SHARE_AGREEING
    assert max(spreads) <= MAX_SPREAD
    assert max(lost) <= MAX_MASS_LOST

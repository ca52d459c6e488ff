"""Crop geometry: saliency map in, boxes and salient points out. Pure NumPy, no I/O.

For an aspect ratio the crop is the largest box of that aspect inside the image, so it spans the
full width or the full height and slides along one axis only. It is placed where it keeps the most
saliency mass, not centred on the single most salient point: Twitter's argmax rule amplified small
saliency differences into systematic bias and cut off second subjects (arXiv:2105.08667). The
saliency map is read as a piecewise-constant density over the image, so the window sum at every
integer pixel offset is exact, whatever the map's resolution. Offsets whose mass ties with the
best (within `TIE_TOLERANCE` of the total) resolve to the one nearest the centre, so a flat map
gives a centre crop and results are deterministic.

Keep-regions (boxes or points a caller says must stay in the picture) come first: the box is
placed where it holds the most of their area, summed region by region, and only among those
places by saliency (same tie rule). A place holds all of that area exactly when it holds every
region whole, so wherever some place can, the crop contains them all; where none can (a region
longer than the box along its sliding axis, or regions too far apart), the crop holds as much
of them as a box can, and `contains` tells the caller which it cut. A point is the one pixel it
falls in and weighs one pixel of area: among points alone that is a count, beside boxes little
more than a tie-break.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np

from .errors import AspectError, KeepError

Box = tuple[int, int, int, int]  # x, y, width, height in pixels of the oriented image

TIE_TOLERANCE = 1e-6
DEFAULT_ASPECTS = ("16:9", "1:1", "4:5", "9:16")
_ASPECT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*:\s*(\d+(?:\.\d+)?)\s*$")


def parse_aspect(text: str) -> float:
    """ "16:9" -> 16/9. Raises `AspectError` for anything but two positive numbers whose ratio
    is finite and positive (400 nines on each side overflow to inf:inf)."""
    match = _ASPECT.match(text)
    ratio = float(match[1]) / float(match[2]) if match and float(match[2]) > 0 else math.nan
    if not match or not math.isfinite(ratio) or ratio <= 0:
        raise AspectError(f"aspect ratio must look like W:H with positive numbers, got {text!r}")
    return ratio


def box_size(width: int, height: int, aspect: float) -> tuple[int, int]:
    """(w, h) of the largest box of `aspect` (w / h) inside a width x height image."""
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    if width >= height * aspect:
        return min(width, max(1, round(height * aspect))), height
    return width, min(height, max(1, round(width / aspect)))


def keep_region(numbers: Sequence[float]) -> Box:
    """A keep-region as given, a box [x, y, w, h] or a point [x, y] in pixels of the image as
    displayed (fractions allowed), as the whole pixels it touches: a box grows out to pixel
    edges, a point becomes the pixel it falls in. Raises `KeepError` for another length, a
    number that is not finite, a negative x or y, or a width or height that is not positive."""
    if len(numbers) not in (2, 4):
        raise KeepError(f"a keep-region is [x, y, w, h] or [x, y], got {len(numbers)} numbers")
    try:
        values = [float(v) for v in numbers]
    except OverflowError as exc:  # an integer beyond float range
        raise KeepError("keep-region numbers must be finite") from exc
    if not all(math.isfinite(v) for v in values):
        raise KeepError("keep-region numbers must be finite")
    x, y = values[:2]
    if x < 0 or y < 0:
        raise KeepError(f"keep-region {_show(values)} is outside the image: x and y must be >= 0")
    x0, y0 = math.floor(x), math.floor(y)
    if len(values) == 2:
        return x0, y0, 1, 1
    w, h = values[2:]
    if w <= 0 or h <= 0:
        raise KeepError(f"keep-region {_show(values)} must have a positive width and height")
    # max(): a width far below x's precision (x + w == x) still covers the pixel it starts in
    x1, y1 = max(x0 + 1, math.ceil(x + w)), max(y0 + 1, math.ceil(y + h))
    return x0, y0, x1 - x0, y1 - y0


def _show(values: list[float]) -> str:
    return "[" + ", ".join(f"{v:g}" for v in values) + "]"


def check_keep(keep: Sequence[Box], width: int, height: int) -> None:
    """Raise `KeepError` unless every region (from `keep_region`) lies inside the width x height
    image. Only the decoded image knows its size as displayed (after EXIF orientation)."""
    for i, (x, y, w, h) in enumerate(keep):
        if x + w > width or y + h > height:
            raise KeepError(
                f"keep[{i}] (pixels x {x}..{x + w}, y {y}..{y + h}) is outside the "
                f"{width}x{height} image as displayed (EXIF orientation applied)"
            )


def contains(box: Box, region: Box) -> bool:
    x, y, w, h = box
    rx, ry, rw, rh = region
    return x <= rx and y <= ry and rx + rw <= x + w and ry + rh <= y + h


def best_offset(
    marginal: np.ndarray, extent: int, size: int, keep_area: np.ndarray | None = None
) -> int:
    """Integer offset in [0, extent - size] of the window of length `size` holding the most mass
    of `marginal`, a density sampled in len(marginal) equal cells covering [0, extent).

    With `keep_area` (keep-region area in each of the `extent` pixels, integers), only the
    windows holding the most of it compete on mass."""
    if size >= extent:
        return 0
    edges = np.linspace(0.0, extent, len(marginal) + 1)
    cdf = np.concatenate([[0.0], np.cumsum(marginal, dtype=np.float64)])
    starts = np.arange(extent - size + 1, dtype=np.float64)
    mass = np.interp(starts + size, edges, cdf) - np.interp(starts, edges, cdf)
    offsets = np.arange(extent - size + 1)
    if keep_area is not None:
        area = np.concatenate([[0], np.cumsum(keep_area)])
        kept = area[size:] - area[: extent - size + 1]  # integers: equal means equal
        offsets = np.flatnonzero(kept == kept.max())
    best = mass[offsets].max()
    ties = offsets[mass[offsets] >= best - TIE_TOLERANCE * max(cdf[-1], 1e-30)]
    centre = (extent - size) / 2
    return int(ties[np.argmin(np.abs(ties - centre))])


def best_crop(
    saliency: np.ndarray, width: int, height: int, aspect: float, keep: Sequence[Box] = ()
) -> Box:
    """The largest `aspect` box in a width x height image keeping the most saliency, among the
    places that keep the most of the `keep` regions (whole-pixel boxes inside the image, from
    `keep_region`): all of them whole wherever that is possible.

    `saliency` is a non-negative (h, w) map covering the whole image (any resolution)."""
    bw, bh = box_size(width, height, aspect)
    if bh == height:
        area = _area_along([(x, w, h) for x, _, w, h in keep], width)
        return best_offset(saliency.sum(axis=0), width, bw, area), 0, bw, bh
    area = _area_along([(y, h, w) for _, y, w, h in keep], height)
    return 0, best_offset(saliency.sum(axis=1), height, bh, area), bw, bh


def _area_along(spans: list[tuple[int, int, int]], extent: int) -> np.ndarray | None:
    """Keep-region area in each pixel along the axis the box slides on: a region `length`
    pixels long from `start` adds its `depth` across (the box always spans that axis whole,
    so a region is kept whole exactly when its span along this axis is). None: no regions."""
    if not spans:
        return None
    steps = np.zeros(extent + 1, np.int64)
    for start, length, depth in spans:
        steps[start] += depth
        steps[start + length] -= depth
    return np.cumsum(steps[:-1])


def centre_crop(width: int, height: int, aspect: float) -> Box:
    bw, bh = box_size(width, height, aspect)
    return (width - bw) // 2, (height - bh) // 2, bw, bh


def crops(
    saliency: np.ndarray,
    width: int,
    height: int,
    aspects: dict[str, float],
    keep: Sequence[Box] = (),
) -> dict[str, Box]:
    return {name: best_crop(saliency, width, height, a, keep) for name, a in aspects.items()}


def salient_points(
    saliency: np.ndarray, width: int, height: int, k: int = 5, min_score: float = 0.05
) -> list[tuple[int, int, float]]:
    """Up to `k` local maxima (3x3 neighbourhood) of the map as (x, y, score) in image pixels,
    strongest first; score is the peak's value relative to the strongest peak (1.0)."""
    h, w = saliency.shape
    padded = np.pad(saliency, 1, mode="constant", constant_values=-np.inf)
    neighbourhood = np.stack(
        [padded[dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3)]
    )
    is_peak = saliency >= neighbourhood.max(axis=0)
    top = float(saliency.max())
    if top <= 0:
        return []
    # `> 0` too: for a subnormal top, min_score * top rounds to 0 in float32
    rows, cols = np.nonzero(is_peak & (saliency >= min_score * top) & (saliency > 0))
    order = np.argsort(-saliency[rows, cols], kind="stable")[:k]
    return [
        (
            min(width - 1, int((cols[i] + 0.5) * width / w)),
            min(height - 1, int((rows[i] + 0.5) * height / h)),
            round(float(saliency[rows[i], cols[i]]) / top, 4),
        )
        for i in order
    ]

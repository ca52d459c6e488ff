"""Crop geometry: saliency map in, boxes and salient points out. Pure NumPy, no I/O.

For an aspect ratio the crop is the largest box of that aspect inside the image, so it spans the
full width or the full height and slides along one axis only. It is placed where it keeps the most
saliency mass, not centred on the single most salient point: Twitter's argmax rule amplified small
saliency differences into systematic bias and cut off second subjects (arXiv:2105.08667). The
saliency map is read as a piecewise-constant density over the image, so the window sum at every
integer pixel offset is exact, whatever the map's resolution. Offsets whose mass ties with the
best (within `TIE_TOLERANCE` of the total) resolve to the one nearest the centre, so a flat map
gives a centre crop and results are deterministic.
"""

from __future__ import annotations

import math
import re

import numpy as np

from .errors import AspectError

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


def best_offset(marginal: np.ndarray, extent: int, size: int) -> int:
    """Integer offset in [0, extent - size] of the window of length `size` holding the most mass
    of `marginal`, a density sampled in len(marginal) equal cells covering [0, extent)."""
    if size >= extent:
        return 0
    edges = np.linspace(0.0, extent, len(marginal) + 1)
    cdf = np.concatenate([[0.0], np.cumsum(marginal, dtype=np.float64)])
    starts = np.arange(extent - size + 1, dtype=np.float64)
    mass = np.interp(starts + size, edges, cdf) - np.interp(starts, edges, cdf)
    ties = np.flatnonzero(mass >= mass.max() - TIE_TOLERANCE * max(cdf[-1], 1e-30))
    centre = (extent - size) / 2
    return int(ties[np.argmin(np.abs(ties - centre))])


def best_crop(saliency: np.ndarray, width: int, height: int, aspect: float) -> Box:
    """The largest `aspect` box in a width x height image keeping the most saliency.

    `saliency` is a non-negative (h, w) map covering the whole image (any resolution)."""
    bw, bh = box_size(width, height, aspect)
    if bh == height:
        return best_offset(saliency.sum(axis=0), width, bw), 0, bw, bh
    return 0, best_offset(saliency.sum(axis=1), height, bh), bw, bh


def centre_crop(width: int, height: int, aspect: float) -> Box:
    bw, bh = box_size(width, height, aspect)
    return (width - bw) // 2, (height - bh) // 2, bw, bh


def crops(
    saliency: np.ndarray, width: int, height: int, aspects: dict[str, float]
) -> dict[str, Box]:
    return {name: best_crop(saliency, width, height, a) for name, a in aspects.items()}


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

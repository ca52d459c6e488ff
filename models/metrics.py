"""Saliency and crop metrics against human fixations. Pure NumPy (+ OpenCV for one blur).

Maps are (H, W) arrays at the image's own resolution; fixations are (N, 2) float x, y in the same
pixel frame, (0, 0) being the top-left corner of the top-left pixel. Definitions follow the MIT
saliency benchmark (Bylinskii et al. 2019) and Kümmerer et al. 2015 for information gain.
"""

from __future__ import annotations

import cv2
import numpy as np

from cropworker import crop

# Fixation maps for CC are blurred by about one degree of visual angle; in the fixation sets here
# (images ~640 px wide viewed at ~25 degrees) that is ~3.5% of the long side.
CC_SIGMA_FRACTION = 0.035


def _pixels(fixations: np.ndarray, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    h, w = shape[:2]
    cols = np.clip(fixations[:, 0].astype(np.int64), 0, w - 1)
    rows = np.clip(fixations[:, 1].astype(np.int64), 0, h - 1)
    return rows, cols


def nss(saliency: np.ndarray, fixations: np.ndarray) -> float:
    """Normalised scanpath saliency: mean of the standardised map at the fixations."""
    s = saliency.astype(np.float64)
    std = s.std()
    if std == 0:
        return 0.0
    rows, cols = _pixels(fixations, s.shape)
    return float(((s[rows, cols] - s.mean()) / std).mean())


def auc_judd(saliency: np.ndarray, fixations: np.ndarray) -> float:
    """Area under the ROC of fixated pixels against all pixels, thresholds at fixated values."""
    s = saliency.astype(np.float64).ravel()
    rows, cols = _pixels(fixations, saliency.shape)
    at_fix = np.sort(saliency[rows, cols].astype(np.float64))[::-1]
    n_fix, n_pix = len(at_fix), s.size
    if n_fix == 0 or n_pix <= n_fix:
        return 0.5
    sorted_all = np.sort(s)
    above = n_pix - np.searchsorted(sorted_all, at_fix, side="left")  # pixels >= threshold
    tp = np.arange(1, n_fix + 1) / n_fix
    fp = np.clip((above - np.arange(1, n_fix + 1)) / (n_pix - n_fix), 0, 1)
    tp = np.concatenate([[0.0], tp, [1.0]])
    fp = np.concatenate([[0.0], fp, [1.0]])
    return float(np.sum((fp[1:] - fp[:-1]) * (tp[1:] + tp[:-1]) / 2))


def fixation_density(fixations: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Fixation counts per pixel blurred by `CC_SIGMA_FRACTION` of the long side."""
    counts = np.zeros(shape, np.float32)
    rows, cols = _pixels(fixations, shape)
    np.add.at(counts, (rows, cols), 1.0)
    sigma = CC_SIGMA_FRACTION * max(shape)
    return cv2.GaussianBlur(counts, (0, 0), sigma, borderType=cv2.BORDER_CONSTANT)


def cc(saliency: np.ndarray, fixations: np.ndarray) -> float:
    """Pearson correlation between the map and the blurred fixation map."""
    a = saliency.astype(np.float64).ravel()
    b = fixation_density(fixations, saliency.shape[:2]).astype(np.float64).ravel()
    if a.std() == 0 or b.std() == 0:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def log_likelihood_bits(density: np.ndarray, fixations: np.ndarray) -> float:
    """Mean log2-likelihood of the fixations in bits per fixation over a uniform map.

    `density` is a probability per pixel (it is renormalised here)."""
    p = density.astype(np.float64) / density.sum()
    rows, cols = _pixels(fixations, p.shape)
    return float(np.mean(np.log2(np.maximum(p[rows, cols], 1e-300) * p.size)))


def fixation_share(box: crop.Box, fixations: np.ndarray) -> float:
    """Share of fixations inside box (x, y, w, h), pixel cells [x, x + w) x [y, y + h)."""
    if len(fixations) == 0:
        return 0.0
    x, y, w, h = box
    fx, fy = np.floor(fixations[:, 0]), np.floor(fixations[:, 1])
    return float(np.mean((fx >= x) & (fx < x + w) & (fy >= y) & (fy < y + h)))


def best_fixation_crop(fixations: np.ndarray, width: int, height: int, aspect: float) -> crop.Box:
    """The position of the largest `aspect` box that keeps the most fixations (the oracle)."""
    counts = np.zeros((height, width), np.float64)
    rows, cols = _pixels(fixations, (height, width))
    np.add.at(counts, (rows, cols), 1.0)
    return crop.best_crop(counts, width, height, aspect)


def paired_interval(
    diff: np.ndarray, weights: np.ndarray | None = None, resamples: int = 2000, seed: int = 0
) -> tuple[float, float, float] | None:
    """The mean of per-image differences between two methods scored on the same images (with
    `weights`, per-image sums over `weights` items: the ratio of the sums) and its 95% bootstrap
    interval, resampling the images. None when the weights sum to zero."""
    weights = np.ones(len(diff)) if weights is None else weights
    if weights.sum() == 0:
        return None
    draws = np.random.default_rng(seed).integers(0, len(diff), (resamples, len(diff)))
    boot = diff[draws].sum(axis=1) / np.maximum(weights[draws].sum(axis=1), 1e-12)
    low, high = np.percentile(boot, [2.5, 97.5])
    return float(diff.sum() / weights.sum()), float(low), float(high)

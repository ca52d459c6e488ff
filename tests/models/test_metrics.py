from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from cropworker import crop
from cropworker_models import metrics

small_maps = arrays(
    np.float64, st.tuples(st.integers(2, 12), st.integers(2, 12)), elements=st.floats(0, 1)
)


def fixations_in(shape: tuple[int, int], points: list[tuple[int, int]]) -> np.ndarray:
    """Fixations at the centre of the given (row, col) pixels."""
    return np.array([(c + 0.5, r + 0.5) for r, c in points], np.float32)


def auc_judd_brute_force(saliency: np.ndarray, fixations: np.ndarray) -> float:
    """The ROC by explicit thresholding at every fixated value: a second implementation."""
    rows = fixations[:, 1].astype(int)
    cols = fixations[:, 0].astype(int)
    at_fix = saliency[rows, cols]
    thresholds = sorted(set(at_fix.tolist()), reverse=True)
    tps, fps = [0.0], [0.0]
    n_fix, n_pix = len(at_fix), saliency.size
    for t in thresholds:
        tp = (at_fix >= t).sum()
        fps.append(((saliency >= t).sum() - tp) / (n_pix - n_fix))
        tps.append(tp / n_fix)
    tps.append(1.0)
    fps.append(1.0)
    return float(np.trapezoid(tps, fps))


@settings(max_examples=200)
@given(small_maps, st.data())
def test_auc_judd_agrees_with_brute_force(saliency: np.ndarray, data: st.DataObject) -> None:
    h, w = saliency.shape
    # distinct fixated pixels: with repeated pixels the two ROC constructions legitimately differ
    cells = data.draw(
        st.lists(
            st.tuples(st.integers(0, h - 1), st.integers(0, w - 1)),
            min_size=1,
            max_size=h * w - 1,
            unique=True,
        )
    )
    # distinct values: Judd's curve steps one fixation at a time, ties make it ambiguous
    saliency = saliency + np.arange(saliency.size).reshape(saliency.shape) * 1e-9
    fix = fixations_in((h, w), cells)
    assert metrics.auc_judd(saliency, fix) == pytest.approx(
        auc_judd_brute_force(saliency, fix), abs=1e-9
    )


def test_auc_judd_extremes() -> None:
    saliency = np.zeros((10, 10))
    saliency[2, 3] = 1.0
    assert metrics.auc_judd(saliency, fixations_in((10, 10), [(2, 3)])) == pytest.approx(1.0)
    # Judd's ROC only thresholds at fixated values: a fixation on the weakest pixel gives the
    # diagonal, and one at the median value gives 1 - 0.5 / 2.
    assert metrics.auc_judd(1 - saliency, fixations_in((10, 10), [(2, 3)])) == pytest.approx(0.5)
    ramp = np.arange(100, dtype=np.float64).reshape(10, 10)
    assert metrics.auc_judd(ramp, fixations_in((10, 10), [(5, 0)])) == pytest.approx(0.75, abs=0.01)


def test_nss() -> None:
    saliency = np.zeros((10, 10))
    saliency[5, 5] = 1.0
    # standardised value at the peak: (1 - 0.01) / std, std = sqrt(0.01 * 0.99)
    assert metrics.nss(saliency, fixations_in((10, 10), [(5, 5)])) == pytest.approx(
        0.99 / np.sqrt(0.0099)
    )
    assert metrics.nss(np.ones((4, 4)), fixations_in((4, 4), [(1, 1)])) == 0.0


def test_cc_prefers_the_map_that_matches() -> None:
    fix = fixations_in((40, 40), [(10, 10)] * 5)
    near = np.zeros((40, 40))
    near[8:13, 8:13] = 1
    far = np.zeros((40, 40))
    far[30:35, 30:35] = 1
    assert metrics.cc(near, fix) > 0.5 > metrics.cc(far, fix)


def test_log_likelihood_of_uniform_is_zero_bits() -> None:
    fix = fixations_in((8, 8), [(1, 2), (7, 7)])
    assert metrics.log_likelihood_bits(np.ones((8, 8)), fix) == pytest.approx(0.0)
    peaked = np.ones((8, 8))
    peaked[1, 2] = peaked[7, 7] = 63.0  # each fixated pixel gets 63/188 of the mass
    assert metrics.log_likelihood_bits(peaked, fix) == pytest.approx(np.log2(63 / 188 * 64))


def test_fixation_share() -> None:
    fix = np.array([[0.5, 0.5], [9.9, 9.9], [10.0, 5.0]], np.float32)
    assert metrics.fixation_share((0, 0, 10, 10), fix) == pytest.approx(2 / 3)
    assert metrics.fixation_share((0, 0, 11, 11), fix) == 1.0


@given(
    st.lists(st.tuples(st.floats(0, 199.99), st.floats(0, 99.99)), min_size=1, max_size=40),
    st.sampled_from(["1:1", "9:16", "16:9", "4:5"]),
)
def test_best_fixation_crop_is_the_best_position(
    points: list[tuple[float, float]], aspect_text: str
) -> None:
    fix = np.array(points, np.float32)
    aspect = crop.parse_aspect(aspect_text)
    best = metrics.best_fixation_crop(fix, 200, 100, aspect)
    bw, bh = crop.box_size(200, 100, aspect)
    others = [
        metrics.fixation_share((x, y, bw, bh), fix)
        for x in range(200 - bw + 1)
        for y in range(100 - bh + 1)
    ]
    assert metrics.fixation_share(best, fix) == pytest.approx(max(others))


def test_paired_interval_is_the_mean_difference_and_its_bootstrap_spread() -> None:
    same = metrics.paired_interval(np.full(50, 1.5))
    assert same == pytest.approx((1.5, 1.5, 1.5))  # the same gap on every image: no spread
    mean, low, high = metrics.paired_interval(np.array([-4.0, 0.0, 1.0, 3.0]), resamples=4000)
    assert mean == pytest.approx(0.0) and -4.0 <= low < mean < high <= 3.0
    # weighted: each image's summed differences over its count of items (the ratio of the sums)
    weighted = metrics.paired_interval(np.array([-6.0, 3.0]), np.array([2.0, 1.0]))
    assert weighted is not None and weighted[0] == pytest.approx(-1.0)
    assert metrics.paired_interval(np.array([0.0, 0.0]), np.zeros(2)) is None

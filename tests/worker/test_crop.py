from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from cropworker import crop
from cropworker.errors import AspectError

sizes = st.integers(1, 5000)
aspects = st.sampled_from(["16:9", "1:1", "4:5", "9:16", "3:1", "1:3", "2.39:1"])
maps = arrays(
    np.float32,
    st.tuples(st.integers(1, 24), st.integers(1, 24)),
    elements=st.floats(0, 1, width=32),
)


@pytest.mark.parametrize(
    ("text", "value"), [("16:9", 16 / 9), ("1:1", 1.0), (" 4 : 5 ", 0.8), ("2.39:1", 2.39)]
)
def test_parse_aspect(text: str, value: float) -> None:
    assert crop.parse_aspect(text) == pytest.approx(value)


@pytest.mark.parametrize(
    "text",
    ["", "16x9", "0:1", "1:0", "-1:2", "a:b", "1:2:3", "16/9", "9" * 400 + ":" + "9" * 400],
)
def test_parse_aspect_rejects(text: str) -> None:
    with pytest.raises(AspectError):
        crop.parse_aspect(text)


@given(maps, sizes, sizes, aspects)
def test_box_is_inside_maximal_and_of_the_right_aspect(
    saliency: np.ndarray, width: int, height: int, aspect_text: str
) -> None:
    aspect = crop.parse_aspect(aspect_text)
    x, y, w, h = crop.best_crop(saliency, width, height, aspect)
    assert x >= 0 and y >= 0 and x + w <= width and y + h <= height
    assert w >= 1 and h >= 1
    assert w == width or h == height  # maximal: it touches both sides of one axis
    # The aspect is exact up to rounding to whole pixels (and the 1-pixel floor).
    if w == width and h > 1:
        assert abs(h - width / aspect) <= 0.5 + 1e-9 or h == height
    if h == height and w > 1:
        assert abs(w - height * aspect) <= 0.5 + 1e-9 or w == width


@given(maps, sizes, sizes, aspects)
def test_deterministic(saliency: np.ndarray, width: int, height: int, aspect_text: str) -> None:
    aspect = crop.parse_aspect(aspect_text)
    assert crop.best_crop(saliency, width, height, aspect) == crop.best_crop(
        saliency.copy(), width, height, aspect
    )


@given(sizes, sizes, aspects)
def test_flat_map_gives_centre_crop(width: int, height: int, aspect_text: str) -> None:
    aspect = crop.parse_aspect(aspect_text)
    box = crop.best_crop(np.ones((12, 16), np.float32), width, height, aspect)
    centre = crop.centre_crop(width, height, aspect)
    assert abs(box[0] - centre[0]) <= 1 and abs(box[1] - centre[1]) <= 1


def pixel_masses(marginal: np.ndarray, extent: int) -> np.ndarray:
    """Mass of each pixel [i, i + 1) when cell c spreads marginal[c] evenly over its span."""
    cell = extent / len(marginal)
    lo, hi = np.arange(extent)[:, None], np.arange(extent)[:, None] + 1.0
    c_lo, c_hi = np.arange(len(marginal)) * cell, (np.arange(len(marginal)) + 1) * cell
    overlap = np.clip(np.minimum(hi, c_hi) - np.maximum(lo, c_lo), 0, None)  # (extent, cells)
    return (overlap * (marginal / cell)).sum(axis=1)


@given(maps, st.integers(20, 3000), st.integers(20, 3000), aspects)
def test_window_holds_at_least_as_much_as_any_other_position(
    saliency: np.ndarray, width: int, height: int, aspect_text: str
) -> None:
    """Brute force: the sum over every integer window position of exact per-pixel masses."""
    aspect = crop.parse_aspect(aspect_text)
    x, y, w, h = crop.best_crop(saliency, width, height, aspect)
    if h == height and w < width:
        sums = np.convolve(pixel_masses(saliency.sum(axis=0), width), np.ones(w), mode="valid")
        assert sums[x] >= sums.max() - 1e-5 * max(saliency.sum(), 1.0)
    elif w == width and h < height:
        sums = np.convolve(pixel_masses(saliency.sum(axis=1), height), np.ones(h), mode="valid")
        assert sums[y] >= sums.max() - 1e-5 * max(saliency.sum(), 1.0)


def test_subject_on_the_right_is_kept() -> None:
    saliency = np.zeros((30, 40), np.float32)
    saliency[10:20, 33:37] = 1.0  # a subject near the right edge
    x, y, w, h = crop.best_crop(saliency, 1600, 1200, 9 / 16)
    assert (y, h) == (0, 1200) and w == 675
    assert x <= 33 / 40 * 1600 and x + w >= 37 / 40 * 1600


def test_two_subjects_are_kept_together_rather_than_centring_on_the_peak() -> None:
    """The argmax rule centres on the strongest point and cuts off the second subject; the
    window sum keeps both when they fit."""
    saliency = np.zeros((10, 100), np.float32)
    saliency[:, 20] = 1.0  # strongest subject
    saliency[:, 62] = 0.9  # second subject, 42 % of the width away
    x, _, w, _ = crop.best_crop(saliency, 1000, 500, 1.0)  # 500 px wide window
    assert x <= 200 and x + w >= 630


def test_salient_points() -> None:
    saliency = np.zeros((20, 20), np.float32)
    saliency[5, 15] = 1.0
    saliency[14, 4] = 0.5
    saliency[14, 5] = 0.01  # a shoulder of the second peak, not a peak of its own
    points = crop.salient_points(saliency, 200, 100)
    assert [(x, y) for x, y, _ in points] == [(155, 27), (45, 72)]
    assert [s for _, _, s in points] == [1.0, 0.5]


def test_salient_points_of_an_empty_map() -> None:
    assert crop.salient_points(np.zeros((4, 4), np.float32), 10, 10) == []


@given(maps, sizes, sizes)
def test_salient_points_are_inside_the_image(saliency: np.ndarray, width: int, height: int) -> None:
    for x, y, score in crop.salient_points(saliency, width, height, k=7):
        assert 0 <= x < width and 0 <= y < height and 0 < score <= 1


def test_tiny_image() -> None:
    assert crop.best_crop(np.ones((1, 1), np.float32), 1, 1, 16 / 9) == (0, 0, 1, 1)
    assert crop.best_crop(np.ones((3, 3), np.float32), 2, 1, 9 / 16) == (0, 0, 1, 1)

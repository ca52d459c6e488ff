"""Keep-regions: the geometry (against brute force over every window), the regions' parsing and
bounds, and `cropworker crop --keep`."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from cropworker import crop
from cropworker.backend import ModelInfo, OnnxBackend
from cropworker.cli import main
from cropworker.decode import DecodedImage
from cropworker.errors import EventError, KeepError
from cropworker.pipeline import Cropper, CropRequest
from tests.images import SAMPLES, photo

ASPECTS = ["16:9", "1:1", "4:5", "9:16", "3:1", "1:3"]


class FixedBackend:
    """A backend whose every image gets the same log-density map."""

    info = ModelInfo("fixed", "1", 64, 8)

    def __init__(self, log_density: np.ndarray) -> None:
        self.log_density = log_density

    def infer(self, images: np.ndarray) -> np.ndarray:
        return np.stack([self.log_density] * len(images))


def decoded(width: int, height: int) -> DecodedImage:
    return DecodedImage(np.zeros((8, 8, 3), np.uint8), width, height, "jpeg")


@st.composite
def regions(draw: st.DrawFn, width: int, height: int) -> crop.Box:
    x, y = draw(st.integers(0, width - 1)), draw(st.integers(0, height - 1))
    if draw(st.booleans()):
        return x, y, 1, 1  # a point
    return x, y, draw(st.integers(1, width - x)), draw(st.integers(1, height - y))


@st.composite
def scenes(draw: st.DrawFn) -> tuple[int, int, np.ndarray, tuple[crop.Box, ...], str]:
    width, height = draw(st.integers(1, 40)), draw(st.integers(1, 40))
    shape = st.tuples(st.integers(1, 8), st.integers(1, 8))
    log_density = draw(arrays(np.float32, shape, elements=st.floats(-6, 6, width=32)))
    keep = draw(st.lists(regions(width, height), min_size=1, max_size=4))
    return width, height, log_density, tuple(keep), draw(st.sampled_from(ASPECTS))


# Brute force, written apart from the implementation: pixel masses of the map read as a
# piecewise-constant density, 2-D box intersections, every integer window position.


def overlaps(extent: int, cells: int) -> np.ndarray:
    """(extent, cells): how much of pixel [i, i + 1) each cell of the map covers."""
    size = extent / cells
    lo, hi = np.arange(extent)[:, None], np.arange(extent)[:, None] + 1.0
    c_lo, c_hi = np.arange(cells) * size, (np.arange(cells) + 1) * size
    return np.clip(np.minimum(hi, c_hi) - np.maximum(lo, c_lo), 0, None)


def pixel_mass(saliency: np.ndarray, width: int, height: int) -> np.ndarray:
    rows, cols = saliency.shape
    density = saliency.astype(np.float64) / ((height / rows) * (width / cols))
    return overlaps(height, rows) @ density @ overlaps(width, cols).T  # (height, width)


def windows(width: int, height: int, bw: int, bh: int) -> list[crop.Box]:
    return [(x, y, bw, bh) for x in range(width - bw + 1) for y in range(height - bh + 1)]


def intersection(a: crop.Box, b: crop.Box) -> int:
    w = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    h = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    return max(w, 0) * max(h, 0)


def holds(box: crop.Box, region: crop.Box) -> bool:
    return intersection(box, region) == region[2] * region[3]


@given(scenes())
def test_crops_keep_every_region_where_a_box_can_and_else_the_most_of_them(
    scene: tuple[int, int, np.ndarray, tuple[crop.Box, ...], str],
) -> None:
    width, height, log_density, keep, name = scene
    cropper = Cropper(FixedBackend(log_density), aspects=[name])
    result = cropper.crop_decoded([decoded(width, height)], [CropRequest(keep=keep)])[0]
    box = result.crops[name]
    bw, bh = crop.box_size(width, height, crop.parse_aspect(name))
    assert box[2:] == (bw, bh) and (bw == width or bh == height)  # the usual, maximal size
    candidates = windows(width, height, bw, bh)
    assert box in candidates
    feasible = any(all(holds(w, r) for r in keep) for w in candidates)
    assert result.keep == {name: "all" if feasible else "partial"}
    assert all(holds(box, r) for r in keep) == feasible
    kept = {w: sum(intersection(w, r) for r in keep) for w in candidates}
    assert kept[box] == max(kept.values())
    mass = pixel_mass(result.saliency, width, height)

    def attention(w: crop.Box) -> float:
        return float(mass[w[1] : w[1] + w[3], w[0] : w[0] + w[2]].sum())

    best = max(attention(w) for w in candidates if kept[w] == kept[box])
    assert attention(box) >= best - 1e-5


@given(
    arrays(
        np.float32,
        st.tuples(st.integers(1, 24), st.integers(1, 24)),
        elements=st.floats(0, 1, width=32),
    ),
    st.integers(1, 400),
    st.integers(1, 400),
    st.sampled_from(ASPECTS),
)
def test_a_region_every_window_holds_changes_nothing(
    saliency: np.ndarray, width: int, height: int, name: str
) -> None:
    """The pixels shared by every position of the box (its slide is shorter than the box) bind
    nothing: attention and the tie rule alone place the box, as without keep-regions."""
    aspect = crop.parse_aspect(name)
    bw, bh = crop.box_size(width, height, aspect)
    shared_x, shared_y = 2 * bw - width, 2 * bh - height
    if shared_x <= 0 or shared_y <= 0:
        return
    region = (width - bw, height - bh, shared_x, shared_y)
    assert crop.best_crop(saliency, width, height, aspect, [region]) == crop.best_crop(
        saliency, width, height, aspect
    )


def test_two_subjects_too_far_apart_keep_the_bigger_whole() -> None:
    saliency = np.ones((10, 10), np.float32)
    keep = [(0, 40, 30, 20), (150, 40, 40, 20)]  # 30 and 40 px wide, 190 px apart in all
    x, _, w, _ = crop.best_crop(saliency, 200, 100, 1.0, keep)  # a 100 px wide box
    assert (x, w) == (90, 100)  # all of the right one; none of the left one fits beside it


def test_without_a_request_nothing_says_keep() -> None:
    cropper = Cropper(FixedBackend(np.zeros((4, 4), np.float32)))
    plain = cropper.crop_decoded([decoded(300, 200)])[0]
    assert plain.keep is None and "keep" not in plain.to_json("x")
    asked = cropper.crop_decoded([decoded(300, 200)], [CropRequest(("2:1",), ((0, 0, 1, 1),))])
    assert asked[0].keep == {"2:1": "all"} and list(asked[0].crops) == ["2:1"]


@pytest.mark.parametrize(
    ("given_", "box"),
    [
        ([10, 20, 30, 40], (10, 20, 30, 40)),
        ([1.5, 2.2, 3.1, 4], (1, 2, 4, 5)),  # grown out to the pixels it touches
        ([3.7, 0], (3, 0, 1, 1)),  # a point: the pixel it falls in
        ([5, 5, 1e-30, 1e-30], (5, 5, 1, 1)),
    ],
)
def test_keep_region_rounds_out_to_whole_pixels(given_: list[float], box: crop.Box) -> None:
    assert crop.keep_region(given_) == box


@pytest.mark.parametrize(
    ("given_", "says"),
    [
        ([], "got 0 numbers"),
        ([1, 2, 3], "got 3 numbers"),
        ([1, 2, 3, 4, 5], "got 5 numbers"),
        ([-1, 0], "x and y must be >= 0"),
        ([0, -0.5, 4, 4], "x and y must be >= 0"),
        ([0, 0, 0, 5], "positive width and height"),
        ([0, 0, 5, -2], "positive width and height"),
        ([math.nan, 0], "finite"),
        ([0, 0, math.inf, 1], "finite"),
        ([10**400, 0], "finite"),
    ],
)
def test_keep_region_rejects(given_: list[float], says: str) -> None:
    with pytest.raises(KeepError, match=says) as info:
        crop.keep_region(given_)
    assert isinstance(info.value, EventError) and info.value.code == "bad_event"


def test_regions_must_lie_inside_the_image() -> None:
    crop.check_keep([(0, 0, 10, 8), (9, 7, 1, 1)], 10, 8)
    for region in [(0, 0, 11, 1), (10, 0, 1, 1), (0, 5, 2, 4)]:
        with pytest.raises(KeepError, match="outside the 10x8 image"):
            crop.check_keep([(0, 0, 1, 1), region], 10, 8)


def test_regions_are_in_the_frame_as_displayed(backend: OnnxBackend) -> None:
    """rocket_exif6.jpg is stored 427x640 and shown 640x427 (EXIF orientation 6)."""
    image = Cropper(backend).decode(photo("rocket_exif6.jpg"))
    region = crop.keep_region([600, 10, 35, 30])  # beyond x 427: only in the displayed frame
    crop.check_keep([region], image.width, image.height)
    with pytest.raises(KeepError):
        crop.check_keep([crop.keep_region([10, 600])], image.width, image.height)
    result = Cropper(backend).crop_decoded([image], [CropRequest(keep=(region,))])[0]
    assert result.keep == dict.fromkeys(crop.DEFAULT_ASPECTS, "all")
    assert all(crop.contains(box, region) for box in result.crops.values())


# The command line ----------------------------------------------------------------------------

CHELSEA = str(SAMPLES / "chelsea.jpg")  # 451x300


def test_crop_keeps_a_region_at_the_edge(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["crop", "--json", CHELSEA, "--keep", "420,100,30,40"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["keep"] == dict.fromkeys(crop.DEFAULT_ASPECTS, "all")
    for x, y, w, h in doc["crops"].values():
        assert x <= 420 and y <= 100 and x + w >= 450 and y + h >= 140


def test_crop_says_partial_where_the_regions_do_not_fit(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = main(["crop", CHELSEA, "--aspect", "1:1,2:1", "--keep", "440,10", "--keep", "5,10"])
    out = capsys.readouterr().out
    assert code == 0
    assert out.rstrip().endswith("keep 1:1 partial  keep 2:1 all")


def test_crop_with_a_region_outside_the_image_is_that_images_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["crop", "--json", CHELSEA, "--keep", "448,0,5,5"]) == 1
    error = json.loads(capsys.readouterr().out)["error"]
    assert error["type"] == "bad_event"
    assert "outside the 451x300 image" in error["message"]


def test_drawn_picture_marks_the_keep_regions(tmp_path: Path) -> None:
    def magenta(picture: np.ndarray) -> np.ndarray:  # BGR pixels drawn in the keep colour
        b, g, r = (picture[..., i].astype(int) for i in range(3))
        return (b > 200) & (r > 200) & (g < 80)

    pictures = []
    for name, keep in (("plain", []), ("kept", ["--keep", "300,60,100,80", "--keep", "40,250"])):
        assert main(["crop", CHELSEA, "--draw", str(tmp_path / name), *keep]) == 0
        pictures.append(cv2.imread(str(tmp_path / name / "chelsea.jpg")))
    plain, kept = (magenta(p) for p in pictures)
    assert plain.sum() < 20  # nothing of the sort in the photo and heat map alone
    edge = kept[58:63, 300:400]  # the box's top edge (JPEG blurs it by a pixel or two)
    assert edge.any(axis=0).mean() > 0.9
    assert kept[240:260, 30:50].sum() > 10  # the point's cross
    assert not kept[:, :250].any(axis=0)[60:230].any()  # nothing drawn elsewhere


@pytest.mark.parametrize("text", ["1,2,3", "a,b", "10,10,0,5", "-1,4", ""])
def test_bad_keep_is_a_usage_error(text: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["crop", CHELSEA, f"--keep={text}"])
    assert exit_info.value.code == 2
    assert "--keep takes X,Y,W,H or X,Y" in capsys.readouterr().err


def test_crop_help_explains_keep(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["crop", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--keep X,Y[,W,H]" in text and "as displayed" in text and "partial" in text

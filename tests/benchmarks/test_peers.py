"""The peers of the benchmarks: one interface, the same box sizes as cropworker, positions that
follow each method's own rule; and the crop-quality scoring against models/metrics."""

from __future__ import annotations

import io
from typing import Any

import cv2
import numpy as np
import pytest
from PIL import Image

from cropworker import crop
from cropworker.probe import probe
from cropworker_models import data, metrics
from tests.images import DATA, photo

from .conftest import load

peers = load("peers")
crop_quality = load("crop_quality")

ASPECTS = crop.DEFAULT_ASPECTS


def make(name: str) -> Any:
    """The peer called `name`, or a skip saying what to install."""
    if name == "cropworker":
        return peers.Cropworker("vanilla")
    try:
        return peers.PEERS[name]()
    except peers.Unavailable as exc:
        pytest.skip(str(exc))


def jpeg(rgb: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


def subject_on_the_right(width: int = 480, height: int = 270) -> np.ndarray:
    """A flat grey scene with one textured, saturated, skin-toned patch near the right edge."""
    rgb = np.full((height, width, 3), 128, np.uint8)
    rng = np.random.default_rng(0)
    patch = rng.integers(0, 60, (80, 60, 3)).astype(np.int16) + np.array([190, 140, 110])
    rgb[95:175, 390:450] = np.clip(patch, 0, 255).astype(np.uint8)
    return rgb


@pytest.mark.parametrize("name", ["cropworker", *peers.PEERS])
@pytest.mark.parametrize("sample", ["coffee.jpg", "rocket_exif6.jpg", "nus_258.jpg"])
def test_every_peer_returns_the_largest_box_inside_the_oriented_image(
    name: str, sample: str
) -> None:
    data_ = photo(sample)
    width, height = probe(data_).oriented_size
    boxes = make(name).crops(data_, ASPECTS)
    assert list(boxes) == list(ASPECTS)
    for aspect, box in boxes.items():
        peers.check_box(box, width, height, crop.parse_aspect(aspect))


def test_check_box_rejects_wrong_size_and_outside() -> None:
    with pytest.raises(ValueError, match="largest"):
        peers.check_box((0, 0, 100, 100), 200, 100, 16 / 9)
    with pytest.raises(ValueError, match="inside"):
        peers.check_box((101, 0, 100, 100), 200, 100, 1.0)


@pytest.mark.parametrize(("cx", "expected_x"), [(-50, 0), (100, 50), (150, 100), (999, 100)])
def test_place_centres_and_clamps(cx: float, expected_x: int) -> None:
    assert peers.place(cx, 50, 200, 100, 1.0) == (expected_x, 0, 100, 100)


@pytest.mark.parametrize("name", ["libvips-attention", "libvips-entropy", "smartcrop.py"])
def test_peer_moves_to_the_subject(name: str) -> None:
    width, height = 480, 270
    boxes = make(name).crops(jpeg(subject_on_the_right(width, height)), ["9:16"])
    x, _, w, _ = boxes["9:16"]
    assert x > (width - w) // 2  # right of the centre crop
    assert x <= 390 and x + w >= 450  # the whole patch is kept


def test_spectral_residual_moves_to_the_subject() -> None:
    width, height = 480, 270
    x, _, w, _ = peers.SpectralResidual().crops(
        jpeg(subject_on_the_right(width, height)), ["9:16"]
    )["9:16"]
    assert x <= 390 and x + w >= 450


def test_libvips_offset_is_the_crop_position() -> None:
    peer = make("libvips-attention")
    data_ = photo("coffee.jpg")
    x, y, w, h = peer.crops(data_, ["9:16"])["9:16"]
    image = peer.pyvips.Image.new_from_buffer(data_, "").autorot()
    out = image.smartcrop(w, h, interesting="attention")
    pixels = np.frombuffer(image.write_to_memory(), np.uint8).reshape(image.height, image.width, 3)
    cropped = np.frombuffer(out.write_to_memory(), np.uint8).reshape(h, w, 3)
    assert np.array_equal(pixels[y : y + h, x : x + w], cropped)


def test_centre_peer_is_the_centre_crop() -> None:
    boxes = make("centre").crops(photo("coffee.jpg"), ASPECTS)
    assert boxes == {a: crop.centre_crop(600, 400, crop.parse_aspect(a)) for a in ASPECTS}


def test_haar_centres_on_the_face_and_falls_back_to_the_centre() -> None:
    peer = make("haar-faces")
    x, _, w, _ = peer.crops(photo("astronaut.jpg"), ["9:16"])["9:16"]
    grey = cv2.imdecode(np.frombuffer(photo("astronaut.jpg"), np.uint8), cv2.IMREAD_GRAYSCALE)
    (fx, _, fw, _), *_ = peer.faces(grey)
    assert x != crop.centre_crop(512, 512, 9 / 16)[0]
    assert abs(x + w / 2 - (fx + fw / 2)) <= 1
    assert peer.crops(photo("coffee.jpg"), ["9:16"])["9:16"] == crop.centre_crop(600, 400, 9 / 16)
    assert (peer.with_faces, peer.images) == (1, 2)


@pytest.mark.skipif(not hasattr(cv2, "saliency"), reason="needs OpenCV contrib's cv2.saliency")
@pytest.mark.parametrize("sample", ["coffee.jpg", "astronaut.jpg", "eyecrowd_036.jpg"])
def test_spectral_residual_matches_opencv_contrib(sample: str) -> None:
    bgr = cv2.imdecode(np.frombuffer(photo(sample), np.uint8), cv2.IMREAD_COLOR)
    ok, reference = cv2.saliency.StaticSaliencySpectralResidual_create().computeSaliency(bgr)
    assert ok
    grey = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    ours = cv2.resize(peers.spectral_residual(grey), (bgr.shape[1], bgr.shape[0]))
    assert np.abs(ours - reference).max() < 0.01


def test_spectral_residual_is_a_normalised_map() -> None:
    grey = cv2.cvtColor(subject_on_the_right(), cv2.COLOR_RGB2GRAY)
    saliency = peers.spectral_residual(grey)
    assert saliency.shape == (peers.SR_SIDE, peers.SR_SIDE)
    assert saliency.max() == pytest.approx(1.0)
    assert saliency.min() >= 0


def synthetic(subjects: list[int], points: list[tuple[float, float]]) -> Any:
    return data.FixationImage(
        "s", "a.jpg", DATA / "a.jpg", 400, 100, np.array(points, np.float32), np.array(subjects)
    )


def test_inter_observer_agreement_and_disagreement() -> None:
    agree = synthetic([0, 1, 2, 3], [(350, 50), (350, 52), (350, 60), (350, 40)])
    assert crop_quality.inter_observer(agree, 1.0) == crop_quality.Score(1.0, 1.0, 0.0)
    # subjects 0 and 2 look left, 1 and 3 right: each half's best box misses the other's
    disagree = synthetic([0, 1, 2, 3], [(20, 50), (380, 50), (21, 50), (381, 50)])
    result = crop_quality.inter_observer(disagree, 1.0)
    assert result is not None and result.share == 0.0 and result.bad == 1.0


def test_halves_need_two_known_viewers() -> None:
    assert crop_quality.halves(np.array([-1, -1, 3, 3])) is None
    first, second = crop_quality.halves(np.array([5, 7, 9, -1, 5]))
    assert first.tolist() == [True, False, True, False, True]
    assert second.tolist() == [False, True, False, False, False]


def result(key: str, scores: dict[str, tuple[float, ...]]) -> Any:
    """An ImageResult whose methods keep the given vs-best share at each aspect."""
    out = crop_quality.ImageResult(key, "test", 100, 100, {})
    out.scores = {
        m: {a: crop_quality.Score(0.5, v, 0.0) for a, v in zip(ASPECTS, values, strict=True)}
        for m, values in scores.items()
    }
    return out


def test_paired_differences_are_points_against_the_reference_on_the_same_images() -> None:
    # "a" is 1 point ahead of "ref" at 16:9 on every image and level elsewhere; the centre crop
    # keeps under 0.8 of the best only at 9:16 of the second image, where "a" is 4 points behind
    results = [
        result("1", {"ref": (0.9, 0.9, 0.9, 0.9), "a": (0.91, 0.9, 0.9, 0.9), "centre": (1,) * 4}),
        result(
            "2",
            {"ref": (0.9, 0.9, 0.9, 0.9), "a": (0.91, 0.9, 0.9, 0.86), "centre": (1, 1, 1, 0.5)},
        ),
    ]
    pairs = crop_quality.paired(results, ASPECTS, "ref")
    assert set(pairs) == {"a", "centre"}
    a = pairs["a"]
    assert a["16:9"]["points"] == pytest.approx(1.0)
    assert a["16:9"]["interval"] == pytest.approx([1.0, 1.0])  # the same gap on every image
    assert a["1:1"]["points"] == pytest.approx(0.0)
    assert a["9:16"]["points"] == pytest.approx(-2.0)
    assert a["all_aspects"]["points"] == pytest.approx((0.25 + 0.25 - 1.0) / 2)
    assert a["off_centre"]["points"] == pytest.approx(-4.0)  # that one crop, not the others
    low, high = a["9:16"]["interval"]  # -4 on one image, 0 on the other: the interval spans both
    assert low == pytest.approx(-4.0) and high == pytest.approx(0.0)
    text = crop_quality.format_paired(pairs, ASPECTS, "ref")
    assert "paired against ref" in text and "-4.00" in text


def test_paired_off_centre_is_the_mean_over_crops_whatever_image_they_come_from() -> None:
    # two off-centre crops in the first image (-2 and -4 points), one in the second (+3)
    results = [
        result("1", {"ref": (0.9,) * 4, "a": (0.9, 0.9, 0.88, 0.86), "centre": (1, 1, 0.5, 0.5)}),
        result("2", {"ref": (0.9,) * 4, "a": (0.9, 0.9, 0.9, 0.93), "centre": (1, 1, 1, 0.5)}),
    ]
    off = crop_quality.paired(results, ASPECTS, "ref")["a"]["off_centre"]
    assert off["points"] == pytest.approx((-2 - 4 + 3) / 3)


def test_paired_has_no_off_centre_figure_without_off_centre_crops() -> None:
    results = [result("1", {"ref": (0.9,) * 4, "a": (0.8,) * 4, "centre": (1,) * 4})]
    off = crop_quality.paired(results, ASPECTS, "ref")["a"]["off_centre"]
    assert off == {"points": None, "interval": None}


def best_share_brute_force(fixations: np.ndarray, width: int, height: int, aspect: float) -> float:
    """Every offset of the largest box, fixations counted by their pixel: a second oracle."""
    bw, bh = crop.box_size(width, height, aspect)
    px, py = np.floor(fixations[:, 0]), np.floor(fixations[:, 1])
    shares = [
        np.mean((px >= x) & (px < x + bw) & (py >= y) & (py < y + bh))
        for x in range(width - bw + 1)
        for y in range(height - bh + 1)
    ]
    return float(max(shares))


@pytest.mark.slow
def test_quality_on_three_held_out_images_agrees_with_models_metrics() -> None:
    _, val = data.split(data.load_fixation_sets(DATA))
    images = crop_quality.subset(val, 3)
    cropworker = peers.Cropworker("vanilla")
    for image in images:
        assert data.is_validation(image.key)
        result = crop_quality.evaluate_image(image, [cropworker, peers.Centre()], ASPECTS)
        ours = cropworker.crops(image.path.read_bytes(), ASPECTS)
        for aspect in ASPECTS:
            ratio = crop.parse_aspect(aspect)
            best = best_share_brute_force(image.fixations, image.width, image.height, ratio)
            assert metrics.fixation_share(result.best[aspect], image.fixations) == best
            share = metrics.fixation_share(ours[aspect], image.fixations)
            got = result.scores[cropworker.name][aspect]
            assert got.share == share
            assert got.vs_best == pytest.approx(share / best)
            assert got.bad == float(share < 0.5 * best)
            centre = crop.centre_crop(image.width, image.height, ratio)
            assert result.scores["centre"][aspect].share == metrics.fixation_share(
                centre, image.fixations
            )
            bar = result.scores[crop_quality.INTER_OBSERVER][aspect]
            assert 0 < bar.vs_best <= 1

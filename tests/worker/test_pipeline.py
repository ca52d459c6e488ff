from __future__ import annotations

import numpy as np
import pytest

from cropworker.backend import OnnxBackend
from cropworker.errors import CorruptImageError
from cropworker.pipeline import Cropper
from tests.images import photo


@pytest.fixture(scope="module")
def cropper(backend: OnnxBackend) -> Cropper:
    return Cropper(backend)


def test_real_photo(cropper: Cropper) -> None:
    result = cropper.crop(photo("eyecrowd_003.jpg"))
    assert (result.width, result.height) == (640, 480)
    assert set(result.crops) == {"16:9", "1:1", "4:5", "9:16"}
    for x, y, w, h in result.crops.values():
        assert x >= 0 and y >= 0 and x + w <= 640 and y + h <= 480
    assert result.crops["1:1"][2:] == (480, 480)
    assert result.crops["16:9"][2:] == (640, 360)
    assert abs(result.saliency.sum() - 1) < 1e-4
    assert 1 <= len(result.salient_points) <= 5
    assert result.model.startswith("vanilla@")


def test_people_on_the_left_are_kept(cropper: Cropper) -> None:
    """eyecrowd_003: four men stand in the left two thirds and one is cut by the right edge; a
    portrait crop has to land on the group, not on the empty field or the centre."""
    x, _, w, _ = cropper.crop(photo("eyecrowd_003.jpg")).crops["9:16"]
    assert x + w / 2 < 320  # left of the image centre


def test_exif_rotated_file_gives_the_same_crops(cropper: Cropper) -> None:
    upright = cropper.crop(photo("rocket.jpg"))
    rotated = cropper.crop(photo("rocket_exif6.jpg"))  # stored sideways, EXIF says turn it
    assert (rotated.width, rotated.height) == (upright.width, upright.height)
    for name, box in upright.crops.items():
        assert np.abs(np.subtract(rotated.crops[name], box)).max() <= 8, name


def test_batches_of_mixed_shapes_keep_their_order(cropper: Cropper) -> None:
    names = ["coffee.jpg", "nus_258.jpg", "camera.png", "coffee.jpg"]
    decoded = [cropper.decode(photo(n)) for n in names]
    together = cropper.crop_decoded(decoded)
    alone = [cropper.crop_decoded([d])[0] for d in decoded]
    assert [(r.width, r.height) for r in together] == [
        (600, 400),
        (480, 640),
        (512, 512),
        (600, 400),
    ]
    for a, b in zip(together, alone, strict=True):
        assert a.crops == b.crops
        np.testing.assert_allclose(a.saliency, b.saliency, atol=1e-5)


def test_custom_aspects(backend: OnnxBackend) -> None:
    result = Cropper(backend, aspects=["3:1", "1:2"]).crop(photo("coffee.jpg"))
    assert result.crops["3:1"][2:] == (600, 200)
    assert result.crops["1:2"][2:] == (200, 400)


def test_bad_bytes_raise_a_typed_error(cropper: Cropper) -> None:
    with pytest.raises(CorruptImageError):
        cropper.crop(photo("coffee.jpg")[:2000])

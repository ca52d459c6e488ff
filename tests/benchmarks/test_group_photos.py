"""The group-photo benchmark: its labelled set, and its figures on cases worked out by hand."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from cropworker import crop
from cropworker.backend import OnnxBackend
from cropworker.pipeline import Cropper
from cropworker_models import data

from .conftest import load

group_photos = load("group_photos")
peers = load("peers")

# In a 640x480 photo the largest 16:9 box (640x360) slides over y in [0, 120], 1:1 (480x480) over
# x in [0, 160] and 4:5 (384x480) over x in [0, 256]: every position covers y in [120, 360) and
# x in [256, 384), so this face is inside whatever a method chooses. The 9:16 box (270x480)
# covers it only from x = 30 to 260; the centre crop's x is 185.
FACE_IN_EVERY_BOX = [260, 200, 40, 40]
WHOLE_IMAGE = [0, 0, 640, 480]  # inside no box smaller than the image


def test_inside_counts_faces_that_touch_the_edges() -> None:
    faces = np.array([[10, 10, 100, 50], [10, 10, 101, 50], [9, 10, 20, 20], [50, 40, 20, 20]])
    assert group_photos.inside((10, 10, 100, 50), faces).tolist() == [True, False, False, True]


def test_best_box_keeps_the_most_faces_any_position_can() -> None:
    # 9:16 in 640x480 is 270 px wide: x = 370 holds the faces at 400 and 600; none holds all three
    faces = np.array([[0, 200, 40, 40], [400, 200, 40, 40], [600, 200, 40, 40]])
    photo = group_photos.GroupPhoto("three", Path(), 640, 480, faces)
    box = group_photos.best_box(photo, crop.parse_aspect("9:16"))
    assert box == (370, 0, 270, 480)
    assert group_photos.inside(box, faces).sum() == 2


def test_figures_on_faces_placed_by_construction(tmp_path: Path) -> None:
    """Two real photos with constructed labels: A holds FACE_IN_EVERY_BOX and WHOLE_IMAGE, B only
    FACE_IN_EVERY_BOX. Wherever the face is kept: 2 of 3 faces, 1 of 2 photos all inside."""
    names = ("eyecrowd_019.jpg", "eyecrowd_213.jpg")
    for name in names:
        shutil.copy(group_photos.DATA / name, tmp_path / name)
    labels = {names[0]: [FACE_IN_EVERY_BOX, WHOLE_IMAGE], names[1]: [FACE_IN_EVERY_BOX]}
    (tmp_path / group_photos.LABELS).write_text(json.dumps(labels))
    args = [
        "--data",
        str(tmp_path),
        "--models",
        "fast",
        "--peers",
        "centre",
        "--out",
        str(tmp_path),
    ]
    group_photos.main(args)
    methods = json.loads((tmp_path / "group_photos.json").read_text())["methods"]

    cropworker = f"cropworker {OnnxBackend('fast').info.tag}"
    assert list(methods) == [group_photos.BEST, cropworker, "centre"]
    for method, rows in methods.items():
        aspects = ("16:9", "1:1", "4:5", "9:16") if method != cropworker else ("16:9", "1:1", "4:5")
        for aspect in aspects:
            assert rows[aspect]["faces_inside"] == pytest.approx(2 / 3), (method, aspect)
            assert rows[aspect]["photos_all_inside"] == pytest.approx(1 / 2), (method, aspect)
    # cropworker's 9:16 box keeps the face when its x is in [30, 260]
    cropper = Cropper(OnnxBackend("fast"), ["9:16"])
    kept = [30 <= cropper.crop((tmp_path / n).read_bytes()).crops["9:16"][0] <= 260 for n in names]
    assert methods[cropworker]["9:16"] == {
        "faces_inside": pytest.approx(sum(kept) / 3),
        "photos_all_inside": pytest.approx(kept[1] / 2),
    }
    shares = [methods[cropworker][a]["faces_inside"] for a in crop.DEFAULT_ASPECTS]
    assert methods[cropworker]["all aspects"]["faces_inside"] == pytest.approx(np.mean(shares))


def test_no_method_keeps_more_faces_than_the_best_box(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    group_photos.main(
        ["--limit", "3", "--models", "fast", "--peers", "centre", "--out", str(tmp_path)]
    )
    report = json.loads((tmp_path / "group_photos.json").read_text())
    assert len(report["photos"]) == 3
    best = report["methods"][group_photos.BEST]
    for rows in report["methods"].values():
        for aspect, row in rows.items():
            assert 0 <= row["faces_inside"] <= best[aspect]["faces_inside"]
    assert "share of the" in capsys.readouterr().out


def test_labelled_set_is_held_out_and_every_face_lies_in_its_photo() -> None:
    photos = group_photos.load_set()
    assert len(photos) >= 12
    for photo in photos:
        assert data.is_validation(f"eyecrowd/{photo.name.removeprefix('eyecrowd_')}"), photo.name
        x, y, w, h = photo.faces.T
        assert len(photo.faces) >= 2 and (w > 0).all() and (h > 0).all(), photo.name
        assert (x >= 0).all() and (y >= 0).all(), photo.name
        assert (x + w <= photo.width).all() and (y + h <= photo.height).all(), photo.name
    size = sum(f.stat().st_size for f in group_photos.DATA.iterdir())
    assert size < 1_600_000

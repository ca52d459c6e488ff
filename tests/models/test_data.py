"""The data folder: one `--data ROOT` for every recipe and benchmark, the fixation sets under it."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from cropworker_models import data
from tests.images import DATA


def parsed(argv: list[str]) -> Path:
    parser = argparse.ArgumentParser()
    data.add_data_argument(parser)
    root: Path = parser.parse_args(argv).data
    return root


def test_data_comes_from_the_flag_else_the_environment_else_beside_the_repository(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(data.DATA_ENV, raising=False)
    assert parsed([]) == data.data_root() == Path("../shared/data")
    monkeypatch.setenv(data.DATA_ENV, "/srv/gaze")
    assert parsed([]) == data.data_root() == Path("/srv/gaze")
    assert parsed(["--data", "elsewhere"]) == Path("elsewhere")


def test_the_fixation_sets_are_read_from_the_data_folders_fixations() -> None:
    images = data.load_fixation_sets(DATA)
    on_disk = sorted(p.relative_to(DATA / "fixations") for p in DATA.glob("fixations/*/images/*"))
    assert sorted(Path(im.dataset, "images", im.name) for im in images) == on_disk
    assert {im.dataset for im in images} == set(data.TRAINING_SETS)
    for image in images:
        assert image.path.is_file() and image.path.is_relative_to(DATA / "fixations")
        assert len(image.fixations) > 100

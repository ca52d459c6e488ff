"""Eye-tracking datasets: images with human fixations, and a stable split held out by image.

One data folder (`--data ROOT`; ../shared/data/README.md describes it) holds `fixations/`, one
folder per set (`images.csv`: image,width,height,...; `fixations.csv`: image,subject,x,y,
duration_ms, x and y continuous pixel coordinates in the stored image), and `photos/`, unlabelled
photos for distillation. Every recipe and benchmark finds it the same way: `add_data_argument`.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# The sets whose licences (MIT) allow training and redistribution of what we train.
TRAINING_SETS = ("osie", "eyecrowd", "nus_scene500")
VALIDATION_FRACTION = 0.15
# Training images set aside for choices made while training (which pruned model to ship).
DEV_FRACTION = 0.1
# Where the data folder is unless `--data` says: this variable, else beside the repository (the
# recipes run from its root, as their cache/ paths do).
DATA_ENV = "CROPWORKER_DATA"
DEFAULT_DATA = Path("../shared/data")


def data_root() -> Path:
    """The data folder: $CROPWORKER_DATA, else ../shared/data."""
    return Path(os.environ.get(DATA_ENV) or DEFAULT_DATA)


def add_data_argument(parser: argparse.ArgumentParser) -> None:
    """`--data ROOT`, the data folder (fixations/ and photos/ under it), the same everywhere."""
    parser.add_argument(
        "--data",
        type=Path,
        default=data_root(),
        metavar="ROOT",
        help=f"the data folder, holding fixations/ and photos/ (default: ${DATA_ENV}, "
        f"else {DEFAULT_DATA})",
    )


@dataclass(frozen=True)
class FixationImage:
    dataset: str
    name: str
    path: Path
    width: int
    height: int
    fixations: np.ndarray  # (N, 2) float32 x, y in stored-image pixels
    subjects: np.ndarray | None = None  # (N,) int32 viewer of each fixation, -1 unknown

    @property
    def key(self) -> str:
        return f"{self.dataset}/{self.name}"


def load_dataset(root: Path, dataset: str) -> list[FixationImage]:
    """One fixation set, `root/fixations/dataset`."""
    folder = root / "fixations" / dataset
    points: dict[str, list[tuple[float, float]]] = defaultdict(list)
    viewers: dict[str, list[int]] = defaultdict(list)
    with open(folder / "fixations.csv", newline="") as f:
        for row in csv.DictReader(f):
            points[row["image"]].append((float(row["x"]), float(row["y"])))
            viewers[row["image"]].append(int(row["subject"]))
    images = []
    with open(folder / "images.csv", newline="") as f:
        for row in csv.DictReader(f):
            name = row["image"]
            width, height = int(row["width"]), int(row["height"])
            fix = np.asarray(points.get(name, []), np.float32).reshape(-1, 2)
            subjects = np.asarray(viewers.get(name, []), np.int32)
            inside = (
                (fix[:, 0] >= 0) & (fix[:, 0] < width) & (fix[:, 1] >= 0) & (fix[:, 1] < height)
            )
            if inside.any():
                images.append(
                    FixationImage(
                        dataset,
                        name,
                        folder / "images" / name,
                        width,
                        height,
                        fix[inside],
                        subjects[inside],
                    )
                )
    return images


def load_fixation_sets(
    root: Path, datasets: tuple[str, ...] = TRAINING_SETS
) -> list[FixationImage]:
    """The fixation sets of the data folder `root`."""
    return [image for name in datasets for image in load_dataset(Path(root), name)]


def is_validation(key: str, fraction: float = VALIDATION_FRACTION) -> bool:
    """A fixed function of the image's name: the split never changes as sets are added."""
    digest = hashlib.sha256(key.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def is_dev(key: str, fraction: float = DEV_FRACTION) -> bool:
    """Among training images, the dev subset: a differently salted hash, so it is independent of
    the validation split."""
    return is_validation(f"dev:{key}", fraction)


def split(images: list[FixationImage]) -> tuple[list[FixationImage], list[FixationImage]]:
    """(train, validation), held out by image."""
    train = [im for im in images if not is_validation(im.key)]
    val = [im for im in images if is_validation(im.key)]
    return train, val

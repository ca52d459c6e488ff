"""Choose between candidate models on the dev split, on what users see: the crops.

Every candidate is one or more ONNX members, each run at its own input size; a candidate with
several members is scored on the mean of their log-densities (renormalised), as an ensemble graph
would compute it, or on a weighted mean (`model*weight`: weights relative to each other). The dev
split is training images that distillation and the teacher's targets never used (`data.is_dev`);
the held-out images are never read here.

For each candidate: NSS and log-likelihood, and per aspect the share of fixations its crop keeps
relative to the best box, overall and on the off-centre crops (where the centre crop keeps less
than `OFF_CENTRE` of the best). Differences against the first candidate come with a paired
bootstrap interval.

    python -m cropworker_models.choose fast fast@256=worker/zoo/fast.onnx:256 \
        "fast+vanilla=fast,vanilla" "fast.4+vanilla.6=fast*0.4,vanilla*0.6"
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cropworker import crop
from cropworker.backend import OnnxBackend
from cropworker.decode import decode_image

from . import data, evaluate, metrics

OFF_CENTRE = 0.8  # as benchmarks/crop_quality.py: the centre keeps less than this of the best
BOOTSTRAP = 2000
ASPECTS = {a: crop.parse_aspect(a) for a in crop.DEFAULT_ASPECTS}


@dataclass(frozen=True)
class Member:
    model: str  # shipped name or .onnx path
    long_side: int | None = None  # None: the model's own
    weight: float = 1.0  # of its log-density in the candidate's mean


def parse(spec: str) -> tuple[str, list[Member]]:
    """`label=model[:long_side][*weight],...` or a bare model name."""
    label, _, rest = spec.rpartition("=")
    members = []
    for part in (rest or spec).split(","):
        part, _, weight = part.partition("*")
        model, _, side = part.partition(":")
        members.append(Member(model, int(side) if side else None, float(weight or 1)))
        if members[-1].weight <= 0:
            raise ValueError(f"{spec}: a member's weight must be positive")
    return label or spec, members


def log_density(backends: dict[Member, OnnxBackend], member: Member, raw: bytes) -> np.ndarray:
    backend = backends[member]
    rgb = decode_image(raw, member.long_side or backend.info.long_side).rgb
    out: np.ndarray = backend.infer(rgb[None])[0]
    return out


def score_images(members: list[Member], images: list[data.FixationImage]) -> list[dict[str, float]]:
    """Per image: NSS, bits, and per aspect the crop's share relative to the best box and the
    centre crop's."""
    backends = {m: OnnxBackend(m.model, threads=1) for m in members}
    rows = []
    for im in images:
        raw = im.path.read_bytes()
        logs = [
            np.log(evaluate.to_pixels(np.exp(log_density(backends, m, raw)), im.width, im.height))
            for m in members
        ]
        mean = np.average(logs, axis=0, weights=[m.weight for m in members])
        density = np.exp(mean - mean.max())
        density /= density.sum()
        row = {
            "nss": metrics.nss(density, im.fixations),
            "bits": metrics.log_likelihood_bits(density, im.fixations),
        }
        for name, aspect in ASPECTS.items():
            best = metrics.fixation_share(
                metrics.best_fixation_crop(im.fixations, im.width, im.height, aspect), im.fixations
            )
            ours = metrics.fixation_share(
                crop.best_crop(density, im.width, im.height, aspect), im.fixations
            )
            centre = metrics.fixation_share(
                crop.centre_crop(im.width, im.height, aspect), im.fixations
            )
            row[name] = ours / best if best > 0 else 1.0
            row[f"{name}_centre"] = centre / best if best > 0 else 1.0
        rows.append(row)
    return rows


def summary(rows: list[dict[str, float]], reference: list[dict[str, float]]) -> dict[str, Any]:
    aspects = list(ASPECTS)
    out: dict[str, Any] = {k: float(np.mean([r[k] for r in rows])) for k in ("nss", "bits")}
    for a in aspects:
        out[a] = float(np.mean([r[a] for r in rows]))
    per_image_mean = np.array([np.mean([r[a] for a in aspects]) for r in rows])
    ref_mean = np.array([np.mean([r[a] for a in aspects]) for r in reference])
    out["mean"] = float(per_image_mean.mean())
    off = [(i, a) for i, r in enumerate(rows) for a in aspects if r[f"{a}_centre"] < OFF_CENTRE]
    out["off_centre"] = float(np.mean([rows[i][a] for i, a in off])) if off else float("nan")
    out["off_centre_crops"] = len(off)
    found = metrics.paired_interval(per_image_mean - ref_mean, resamples=BOOTSTRAP)
    assert found is not None  # every image weighs 1
    out["mean_vs_first"], *interval = found
    out["mean_vs_first_95"] = interval
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("candidates", nargs="+", help="label=model[:long_side],... (see above)")
    data.add_data_argument(parser)
    parser.add_argument("--out", type=Path, help="write the figures here as JSON")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    train_set, _ = data.split(data.load_fixation_sets(args.data))
    dev = [im for im in train_set if data.is_dev(im.key)]
    results: dict[str, Any] = {}
    first: list[dict[str, float]] = []
    for spec in args.candidates:
        label, members = parse(spec)
        rows = score_images(members, dev)
        first = first or rows
        results[label] = summary(rows, first)
        r = results[label]
        print(
            f"{label:32s} NSS {r['nss']:.3f} bits {r['bits']:.3f} | "
            + " ".join(f"{a} {r[a]:.3f}" for a in ASPECTS)
            + f" | mean {r['mean']:.4f} off-centre {r['off_centre']:.3f} ({r['off_centre_crops']})"
            + f" | vs first {100 * r['mean_vs_first']:+.2f} pts "
            + "[{:+.2f}, {:+.2f}]".format(*(100 * x for x in r["mean_vs_first_95"])),
            flush=True,
        )
    if args.out:
        args.out.write_text(json.dumps({"dev_images": len(dev), "candidates": results}, indent=2))


if __name__ == "__main__":
    main()

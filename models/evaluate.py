"""Evaluate a shipped ONNX model on the held-out fixation images and write its model card.

The model runs through the runtime's own pipeline (decode, ONNX Runtime, crop geometry), so the
card measures what users get. Crop quality is the share of human fixations inside each crop, next
to the best position of the same box (computed from the fixations) and the centre crop.

    python -m cropworker_models.evaluate worker/zoo/vanilla.onnx --data ../shared/data
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from cropworker import crop
from cropworker.backend import OnnxBackend, resolve_model
from cropworker.pipeline import Cropper

from . import data, metrics

log = logging.getLogger(__name__)

PRIOR_BINS = 48
BAD_CROP_SHARE = 0.5  # a crop keeping less than half of what the best box keeps is a bad crop


def centre_bias(images: list[data.FixationImage]) -> np.ndarray:
    """Fixation density over normalised coordinates, pooled over `images` (the baseline model
    for information gain: it knows where people look on average, nothing about the image)."""
    hist = np.zeros((PRIOR_BINS, PRIOR_BINS), np.float64)
    for im in images:
        xs = np.clip(im.fixations[:, 0] / im.width * PRIOR_BINS, 0, PRIOR_BINS - 1).astype(int)
        ys = np.clip(im.fixations[:, 1] / im.height * PRIOR_BINS, 0, PRIOR_BINS - 1).astype(int)
        np.add.at(hist, (ys, xs), 1.0 / len(im.fixations))
    blurred: np.ndarray = cv2.GaussianBlur(hist, (0, 0), 2.0)
    blurred /= blurred.sum()
    # never zero: one unexpected fixation must not cost infinitely many bits
    return 0.99 * blurred + 0.01 / blurred.size


def to_pixels(density: np.ndarray, width: int, height: int) -> np.ndarray:
    up = cv2.resize(density.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
    up = np.maximum(up, 0)
    out: np.ndarray = up / up.sum()
    return out


def saliency_scores(density: np.ndarray, fixations: np.ndarray) -> dict[str, float]:
    return {
        "nss": metrics.nss(density, fixations),
        "auc_judd": metrics.auc_judd(density, fixations),
        "cc": metrics.cc(density, fixations),
        "bits": metrics.log_likelihood_bits(density, fixations),
    }


def evaluate(model: str, data_root: Path) -> dict[str, Any]:
    train_set, val_set = data.split(data.load_fixation_sets(data_root))
    prior = centre_bias(train_set)
    cropper = Cropper(OnnxBackend(model, threads=1), aspects=crop.DEFAULT_ASPECTS)
    scores: dict[str, list[dict[str, float]]] = {"model": [], "centre_bias": []}
    shares: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for im in val_set:
        result = cropper.crop(im.path.read_bytes())
        assert (result.width, result.height) == (im.width, im.height), im.key
        scores["model"].append(
            saliency_scores(to_pixels(result.saliency, im.width, im.height), im.fixations)
        )
        scores["centre_bias"].append(
            saliency_scores(to_pixels(prior, im.width, im.height), im.fixations)
        )
        for name, aspect in cropper.aspects.items():
            best = metrics.fixation_share(
                metrics.best_fixation_crop(im.fixations, im.width, im.height, aspect), im.fixations
            )
            ours = metrics.fixation_share(result.crops[name], im.fixations)
            centre = metrics.fixation_share(
                crop.centre_crop(im.width, im.height, aspect), im.fixations
            )
            s = shares[name]
            s["model"].append(ours)
            s["centre"].append(centre)
            s["best"].append(best)
            s["model_vs_best"].append(ours / best if best > 0 else 1.0)
            s["centre_vs_best"].append(centre / best if best > 0 else 1.0)
            s["model_bad"].append(float(ours < BAD_CROP_SHARE * best))
            s["centre_bad"].append(float(centre < BAD_CROP_SHARE * best))
    summary = {
        who: {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
        for who, rows in scores.items()
    }
    summary["model"]["info_gain_bits"] = summary["model"]["bits"] - summary["centre_bias"]["bits"]
    return {
        "model": cropper.backend.info.tag,
        "validation_images": len(val_set),
        "validation_fixations": int(sum(len(im.fixations) for im in val_set)),
        "training_images": len(train_set),
        "saliency": summary,
        "crops": {name: {k: float(np.mean(v)) for k, v in s.items()} for name, s in shares.items()},
        "cost": cost(model),
    }


def cost(model: str, runs: int = 40) -> dict[str, Any]:
    """MACs and ONNX Runtime time per image (1 thread) at batch 1 and 8, at the model's input
    for a 4:3 landscape photo."""
    backend = OnnxBackend(model, threads=1)
    meta = backend.session.get_modelmeta().custom_metadata_map
    width, height = (int(v) for v in meta["macs_input"].split("x"))
    rng = np.random.default_rng(0)
    out: dict[str, Any] = {"macs": int(meta["macs"]), "input": meta["macs_input"]}
    for batch in (1, 8):
        x = rng.integers(0, 256, (batch, height, width, 3), dtype=np.uint8)
        backend.warm_up([(width, height)], batch)
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            backend.infer(x)
            times.append(time.perf_counter() - start)
        out[f"ms_per_image_batch{batch}"] = 1000 * statistics.median(times) / batch
    out["file_mb"] = resolve_model(model).stat().st_size / 1e6
    return out


VANILLA_RECIPE = "\n".join(
    [
        "python -m cropworker_models.train --data ../shared/data --out cache/vanilla.pt",
        "python -m cropworker_models.export cache/vanilla.pt worker/zoo/vanilla.onnx",
        "python -m cropworker_models.evaluate vanilla --data ../shared/data",
    ]
)


def frozen_backbone_architecture(config: dict[str, str]) -> str:
    return f"""{config["backbone"]} (ImageNet weights, frozen), blocks {config["taps"]} tapped and
read out by 1x1 convolutions ({config["readout"]} hidden channels), a Gaussian blur, a learned
centre log-prior over normalised coordinates ({config["prior_grid"]} grid) and a softmax: a
log-density over a grid at 1/{config["output_stride"]} of the input. Input: uint8 RGB with the
long side {config["long_side"]} px and the short side keeping the aspect ratio (multiple of 32).
The DeepGaze II recipe (Kümmerer et al. 2017), trained with the fixation log-likelihood."""


def model_card(
    report: dict[str, Any],
    config: dict[str, str],
    recipe: str = VANILLA_RECIPE,
    history: str = "",
    architecture: str = "",
) -> str:
    """The model card in Markdown; `history` is an extra section (how the model was made)."""
    s, c, k = report["saliency"], report["crops"], report["cost"]
    rows = "\n".join(
        f"| {name} | {v['model']:.3f} | {v['centre']:.3f} | {v['best']:.3f} | "
        f"**{v['model_vs_best']:.3f}** | {v['centre_vs_best']:.3f} | "
        f"{100 * v['model_bad']:.1f}% | {100 * v['centre_bad']:.1f}% |"
        for name, v in c.items()
    )
    m, b = s["model"], s["centre_bias"]
    return f"""# Model card: {report["model"]}

A saliency network: it predicts where people look in a photo, as a probability map. cropworker
crops to keep the most of that probability.

## Architecture
{architecture or frozen_backbone_architecture(config)}

## Training data
Human eye fixations (free viewing) from OSIE, EyeCrowd and NUS scene500 (MIT licences), in
`../shared/data/fixations`. {report["training_images"]} images for training (with mirror images);
{report["validation_images"]} images ({report["validation_fixations"]} fixations) held out by
image (a fixed hash of the image name, `cropworker_models.data.is_validation`) and never used
for training or for choosing anything.

## Saliency metrics on the held-out images
The centre-bias baseline is the average fixation density of the training images: it knows where
people look on average and nothing about the image.

| | NSS | AUC-Judd | CC | log-likelihood (bits/fix over uniform) |
|---|---|---|---|---|
| this model | {m["nss"]:.3f} | {m["auc_judd"]:.3f} | {m["cc"]:.3f} | {m["bits"]:.3f} |
| centre bias | {b["nss"]:.3f} | {b["auc_judd"]:.3f} | {b["cc"]:.3f} | {b["bits"]:.3f} |

Information gain over the centre-bias baseline: **{m["info_gain_bits"]:.3f} bits per fixation**.

## Crop quality on the held-out images
Share of human fixations inside the largest crop of each aspect: this model's crop, the centre
crop, and the best position of the same box (chosen from the fixations themselves, an upper
bound). "vs best" is the per-image share relative to the best box, averaged; a bad crop keeps
less than half of what the best box keeps.

| aspect | model | centre | best | model vs best | centre vs best | model bad | centre bad |
|---|---|---|---|---|---|---|---|
{rows}

## Cost
- {k["macs"] / 1e6:.1f} M multiply-accumulates per {k["input"]} input (a 4:3 photo; convolutions).
- ONNX Runtime, 1 thread, {k["input"]}: {k["ms_per_image_batch1"]:.2f} ms per image at batch 1,
  {k["ms_per_image_batch8"]:.2f} ms per image at batch 8 (medians on the 2-core development
  machine; noisy, compare ratios measured in one run: `benchmarks/model_cost.py`).
- {k["file_mb"]:.1f} MB ONNX file.
{history}
## Reproduce
From the repository root, with the training code installed (`pip install -e . -e models`);
the data folder is `--data` (default `$CROPWORKER_DATA`, else `../shared/data`).
```
{recipe}
```

## Limitations
- Trained on ~1,450 photos, mostly 4:3 landscape scenes; portrait and panoramic photos are
  handled (the input keeps the aspect ratio and the prior is in normalised coordinates) but are
  rare in the training data.
- Features from ImageNet and ~1,450 photos' fixations only: no face or text detector, so small
  faces in wide scenes can be under-weighted.
"""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="shipped model name or .onnx path")
    data.add_data_argument(parser)
    parser.add_argument(
        "--out-dir",
        type=Path,
        default=Path("worker/zoo"),
        help="where NAME.md (the card) and NAME.json go (default worker/zoo)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    report = evaluate(args.model, args.data)
    backend = OnnxBackend(args.model)
    config = dict(backend.session.get_modelmeta().custom_metadata_map)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / f"{backend.info.name}.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out_dir / f"{backend.info.name}.md").write_text(model_card(report, config))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

"""Train the saliency head on human fixations (the "vanilla" model).

The backbone is frozen, so its tapped activations are computed once per image (and its mirror
image) and cached; training the head then takes about a minute on two cores. Images are decoded
by the runtime's own decoder (cropworker.decode) at the runtime's input size, so training and
serving see the same pixels.

    python -m cropworker_models.train --data ../shared/data --out cache/vanilla.pt
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import random
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch

from cropworker.decode import decode_image

from . import data, net

log = logging.getLogger(__name__)

T = TypeVar("T")
Taps = list[torch.Tensor]  # one image's tapped activations, (C_i, H_i, W_i) float16


def fixation_cells(image: data.FixationImage, grid: tuple[int, int], flip: bool) -> torch.Tensor:
    """Flat indices into an (h, w) grid covering the image of each fixation."""
    h, w = grid
    x, y = image.fixations[:, 0], image.fixations[:, 1]
    if flip:
        x = image.width - x
    col = np.clip((x * w / image.width).astype(np.int64), 0, w - 1)
    row = np.clip((y * h / image.height).astype(np.int64), 0, h - 1)
    return torch.from_numpy(row * w + col)


def log_likelihood_bits(logp: torch.Tensor, cells: list[torch.Tensor]) -> torch.Tensor:
    """Mean over images of the mean fixation log-likelihood, in bits over a uniform map.

    `logp` is (B, h, w) log-probability per cell; averaging per image first weighs every image
    equally, however many fixations it has."""
    b, h, w = logp.shape
    image_ids = torch.cat([torch.full((len(c),), i) for i, c in enumerate(cells)])
    ll = logp.reshape(b, -1)[image_ids, torch.cat(cells)]
    per_image = torch.zeros(b).index_add_(0, image_ids, ll) / torch.tensor([len(c) for c in cells])
    return (per_image.mean() + math.log(h * w)) / math.log(2)


def extract_taps(
    config: net.SaliencyNetConfig, images: list[data.FixationImage], cache_dir: Path
) -> dict[tuple[str, bool], Taps]:
    """Tapped activations for every image and its mirror, cached on disk by content."""
    tag = hashlib.sha256(
        repr((config.backbone, config.long_side, config.taps, [im.key for im in images])).encode()
    ).hexdigest()[:16]
    path = cache_dir / f"taps-{tag}.pt"
    if path.exists():
        log.info("loading cached features from %s", path)
        cached: dict[tuple[str, bool], Taps] = torch.load(path)
        return cached
    trunk = net.Trunk(net.build_backbone(config), config.taps).eval()
    out: dict[tuple[str, bool], Taps] = {}
    start = time.monotonic()
    with torch.no_grad():
        for n, image in enumerate(images):
            rgb = decode_image(image.path.read_bytes(), config.long_side).rgb
            x = torch.from_numpy(np.stack([rgb, rgb[:, ::-1].copy()])).permute(0, 3, 1, 2)
            x = (x.float() / 255.0 - config.mean) / config.std
            taps = trunk(x)
            for flip in (False, True):
                out[(image.key, flip)] = [t[int(flip)].half() for t in taps]
            if n % 200 == 0:
                log.info("features %d/%d (%.0f s)", n, len(images), time.monotonic() - start)
    cache_dir.mkdir(parents=True, exist_ok=True)
    torch.save(out, path)
    return out


def shape_batches(
    items: list[T], shape_of: Callable[[T], tuple[int, ...]], batch_size: int, rng: random.Random
) -> list[list[T]]:
    """Shuffled batches of items whose inputs have the same shape (aspect buckets)."""
    by_shape: dict[tuple[int, ...], list[T]] = defaultdict(list)
    for item in items:
        by_shape[shape_of(item)].append(item)
    out = []
    for group in by_shape.values():
        rng.shuffle(group)
        out += [group[i : i + batch_size] for i in range(0, len(group), batch_size)]
    rng.shuffle(out)
    return out


def batches(
    items: list[tuple[data.FixationImage, bool]],
    taps: dict[tuple[str, bool], Taps],
    batch_size: int,
    rng: random.Random,
) -> list[list[tuple[data.FixationImage, bool]]]:
    """Shuffled same-shape batches of (image, mirrored) pairs, by the shape of their features."""
    return shape_batches(
        items, lambda item: tuple(taps[(item[0].key, item[1])][0].shape), batch_size, rng
    )


def run_head(
    head: net.Head, batch: list[tuple[data.FixationImage, bool]], taps: dict[tuple[str, bool], Taps]
) -> torch.Tensor:
    """Bits/fixation over uniform of `head` on one batch."""
    stacked = [
        torch.stack([taps[(im.key, flip)][i] for im, flip in batch]).float()
        for i in range(len(taps[(batch[0][0].key, batch[0][1])]))
    ]
    logp = head(stacked)
    cells = [fixation_cells(im, tuple(logp.shape[1:]), flip) for im, flip in batch]
    return log_likelihood_bits(logp, cells)


def evaluate(
    head: net.Head, images: list[data.FixationImage], taps: dict[tuple[str, bool], Taps]
) -> float:
    head.eval()
    with torch.no_grad():
        scores = [float(run_head(head, [(im, False)], taps)) for im in images]
    return float(np.mean(scores))


def train(
    config: net.SaliencyNetConfig,
    data_root: Path,
    cache_dir: Path,
    epochs: int,
    batch_size: int = 16,
    lr: float = 3e-3,
    seed: int = 0,
) -> tuple[net.Head, dict[str, float]]:
    torch.manual_seed(seed)
    rng = random.Random(seed)
    images = data.load_fixation_sets(data_root)
    train_set, val_set = data.split(images)
    log.info("%d training images, %d held out", len(train_set), len(val_set))
    taps = extract_taps(config, train_set + val_set, cache_dir)
    head = net.Head(config, [t.shape[0] for t in taps[(train_set[0].key, False)]])
    optimiser = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=1e-4)
    items = [(im, flip) for im in train_set for flip in (False, True)]
    steps = epochs * len(batches(items, taps, batch_size, random.Random(0)))
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=lr, total_steps=steps)
    for epoch in range(epochs):
        head.train()
        losses = []
        for batch in batches(items, taps, batch_size, rng):
            loss = -run_head(head, batch, taps)
            optimiser.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            optimiser.step()
            schedule.step()
            losses.append(float(loss.detach()))
        log.info("epoch %d: train %.3f bits/fix over uniform", epoch, -np.mean(losses))
    metrics = {
        "train_bits": evaluate(head, train_set, taps),
        "val_bits": evaluate(head, val_set, taps),
    }
    log.info("final: %s", metrics)
    return head, metrics


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    data.add_data_argument(parser)
    parser.add_argument("--cache", type=Path, default=Path("cache"))
    parser.add_argument("--out", type=Path, default=Path("cache/vanilla.pt"))
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(2)
    config = net.SaliencyNetConfig()
    head, metrics = train(config, args.data, args.cache, args.epochs)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"config": config, "head": head.state_dict(), "metrics": metrics}, args.out)
    args.out.with_suffix(".json").write_text(json.dumps(metrics, indent=2))


if __name__ == "__main__":
    main()

"""Knowledge distillation: the student learns the teacher ensemble's predicted fixation density.

Targets are the teacher's densities on every image available for training: the training split of
the fixation sets and the unlabelled photos, each also mirrored, and optionally (`--crops K`) K
random windows of each, so that the same scene is also seen framed off-centre. They are computed
once through
the exported teacher (ONNX Runtime) at the teacher's input size and resampled to the student's
output grid. The loss is the cross-entropy to the teacher's distribution (KL divergence plus a
constant), plus the fixation log-likelihood where human fixations exist. A dev split of the
training images is kept out of distillation for choosing the pruned model (prune.py); the
validation split is never touched here.

    python -m cropworker_models.distill --teacher cache/teacher.onnx --out cache/student.pt
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import math
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
import torch

from cropworker.decode import decode_image, model_input_size

from . import data, student, train

log = logging.getLogger(__name__)

PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png"}
FIXATION_WEIGHT = 1.0  # weight of the human-fixation term next to the distillation term
CHECKPOINT_EVERY = 100  # steps between resumable checkpoints (~1 minute of training)
CROP_SIDES = (0.55, 1.0)  # a random window's width and height, as shares of the image's
CROP_DECODE = 640  # long side the windows are cut from (above every model's input)


@dataclass
class Example:
    """One training image for the student: its input, the teacher's density over the student's
    output grid, and, for labelled images, the fixation cells on that grid."""

    image: np.ndarray  # (H, W, 3) uint8 at the student's input size
    target: torch.Tensor  # (h, w) float16 probabilities
    cells: torch.Tensor | None


def photos(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in PHOTO_SUFFIXES)


def crop_windows(
    width: int, height: int, count: int, rng: random.Random
) -> list[tuple[int, int, int, int]]:
    """`count` random windows (x, y, w, h), each side a random share in CROP_SIDES of the image's,
    anywhere in it: the same scene framed again, its subject moved off the centre."""
    out: list[tuple[int, int, int, int]] = []
    for _ in range(count):
        w = max(1, round(width * rng.uniform(*CROP_SIDES)))
        h = max(1, round(height * rng.uniform(*CROP_SIDES)))
        out.append((rng.randrange(width - w + 1), rng.randrange(height - h + 1), w, h))
    return out


def views(
    raw: bytes, sides: tuple[int, int], crops: int, rng: random.Random
) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """(suffix, student input, teacher input) for the whole image and `crops` random windows."""
    yield "", decode_image(raw, sides[0]).rgb, decode_image(raw, sides[1]).rgb
    if crops:
        big = decode_image(raw, CROP_DECODE).rgb
        for n, (x, y, w, h) in enumerate(crop_windows(big.shape[1], big.shape[0], crops, rng)):
            window = big[y : y + h, x : x + w]
            small, large = (
                cv2.resize(window, model_input_size(w, h, side), interpolation=cv2.INTER_AREA)
                for side in sides
            )
            yield f"#crop{n}", small, large


def teacher_targets(
    teacher: Path,
    sources: list[tuple[str, bytes]],
    long_side: int,
    stride: int,
    cache: Path,
    crops: int = 0,
) -> dict[tuple[str, bool], Example]:
    """Teacher densities for every source image and its mirror (and `crops` random windows of
    each, keyed `name#cropN`), cached on disk."""
    identity = (
        teacher.stat().st_size,
        teacher.stat().st_mtime_ns,
        long_side,
        [k for k, _ in sources],
    )
    tag = hashlib.sha256(repr((*identity, crops) if crops else identity).encode()).hexdigest()[:16]
    path = cache / f"distill-{tag}.pt"
    if path.exists():  # stored as plain tuples: loadable whichever module is __main__
        stored = torch.load(path, weights_only=False)
        return {key: Example(image, target, None) for key, (image, target) in stored.items()}
    from cropworker.backend import OnnxBackend

    backend = OnnxBackend(str(teacher), threads=2)
    rng = random.Random(0)
    out: dict[tuple[str, bool], Example] = {}
    start = time.monotonic()
    for n, (key, raw) in enumerate(sources):
        for suffix, small, big in views(raw, (long_side, backend.info.long_side), crops, rng):
            logp = backend.infer(np.stack([big, big[:, ::-1]]))
            h, w = small.shape[0] // stride, small.shape[1] // stride
            for flip in (False, True):
                p = cv2.resize(np.exp(logp[int(flip)]), (w, h), interpolation=cv2.INTER_AREA)
                image = small[:, ::-1].copy() if flip else small
                out[(key + suffix, flip)] = Example(
                    image, torch.from_numpy(p / p.sum()).half(), None
                )
        if n % 250 == 0:
            log.info("teacher targets %d/%d (%.0f s)", n, len(sources), time.monotonic() - start)
    cache.mkdir(parents=True, exist_ok=True)
    torch.save({key: (ex.image, ex.target) for key, ex in out.items()}, path)
    return out


def training_set(
    teacher: Path,
    data_root: Path,
    long_side: int,
    stride: int,
    cache: Path,
    crops: int = 0,
) -> list[Example]:
    train_set, _ = data.split(data.load_fixation_sets(data_root))
    labelled = [im for im in train_set if not data.is_dev(im.key)]
    sources = [(im.key, im.path.read_bytes()) for im in labelled]
    sources += [(f"photos/{p.name}", p.read_bytes()) for p in photos(data_root / "photos")]
    examples = teacher_targets(teacher, sources, long_side, stride, cache, crops)
    for im in labelled:
        for flip in (False, True):
            ex = examples[(im.key, flip)]
            h, w = ex.target.shape
            ex.cells = train.fixation_cells(im, (h, w), flip)
    log.info(
        "%d distillation examples (%d labelled images, %d photos, %d windows each, mirrored)",
        len(examples),
        len(labelled),
        len(sources) - len(labelled),
        crops,
    )
    return list(examples.values())


def batches(examples: list[Example], size: int, rng: random.Random) -> list[list[Example]]:
    return train.shape_batches(examples, lambda ex: ex.image.shape, size, rng)


def loss(model: torch.nn.Module, batch: list[Example]) -> torch.Tensor:
    """Cross-entropy to the teacher (nats) + FIXATION_WEIGHT x fixation NLL (nats over uniform)."""
    logp: torch.Tensor = model(torch.from_numpy(np.stack([ex.image for ex in batch])))
    target = torch.stack([ex.target for ex in batch]).float()
    total = -(target * logp).sum(dim=(1, 2)).mean()
    labelled = [i for i, ex in enumerate(batch) if ex.cells is not None]
    if labelled:
        cells = [batch[i].cells for i in labelled]
        bits = train.log_likelihood_bits(logp[labelled], [c for c in cells if c is not None])
        total = total - FIXATION_WEIGHT * bits * math.log(2) * len(labelled) / len(batch)
    return total


def fit(
    model: torch.nn.Module,
    examples: list[Example],
    steps: int,
    lr: float,
    batch_size: int = 16,
    seed: int = 0,
    checkpoint: Path | None = None,
    every: int = CHECKPOINT_EVERY,
) -> float:
    """`steps` Adam steps with a cosine schedule; returns the mean loss of the last 50.

    With `checkpoint`, the whole training state (weights, optimiser, schedule, step, the batch
    order) is saved there every `every` steps, and a run that finds one there continues from it:
    a long distillation survives being killed and runs in pieces. The file is removed at the end.
    """
    rng = random.Random(seed)
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-5)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, steps)
    start, recent, order, used = 0, [], rng.getstate(), 0
    if checkpoint is not None and checkpoint.exists():
        state = torch.load(checkpoint, weights_only=False)
        if state["steps"] != steps:
            raise ValueError(f"{checkpoint} is for a {state['steps']}-step run, not {steps}")
        model.load_state_dict(state["model"])
        optimiser.load_state_dict(state["optimiser"])
        schedule.load_state_dict(state["schedule"])
        start, recent = state["step"], state["recent"]
        order, used = state["order"], state["used"]
        log.info("resuming at step %d/%d from %s", start, steps, checkpoint)
    # the pass under way is drawn again from the rng state it was drawn from, less what was used
    rng.setstate(order)
    queue = batches(examples, batch_size, rng)[: -used or None]
    model.train()
    for step in range(start, steps):
        if not queue:
            order, used = rng.getstate(), 0
            queue = batches(examples, batch_size, rng)
        value = loss(model, queue.pop())
        used += 1
        optimiser.zero_grad()
        value.backward()  # type: ignore[no-untyped-call]
        optimiser.step()
        schedule.step()
        recent = [*recent, float(value.detach())][-50:]
        if step % 50 == 0:
            log.info("step %d/%d loss %.4f", step, steps, np.mean(recent))
        if checkpoint is not None and (step + 1) % every == 0 and step + 1 < steps:
            state = {
                "steps": steps,
                "step": step + 1,
                "model": model.state_dict(),
                "optimiser": optimiser.state_dict(),
                "schedule": schedule.state_dict(),
                "recent": recent,
                "order": order,
                "used": used,
            }
            torch.save(state, checkpoint.with_suffix(".tmp"))
            checkpoint.with_suffix(".tmp").replace(checkpoint)  # never a half-written file
    model.eval()
    if checkpoint is not None:
        checkpoint.unlink(missing_ok=True)
    return float(np.mean(recent))


def resume_path(out: Path) -> Path:
    """Where a run writing `out` keeps its resumable state: `cache/x.pt` -> `cache/x.resume.pt`."""
    return out.with_name(f"{out.stem}.resume.pt")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--teacher", type=Path, default=Path("cache/teacher.onnx"))
    data.add_data_argument(parser)
    parser.add_argument("--cache", type=Path, default=Path("cache"))
    parser.add_argument("--out", type=Path, default=Path("cache/student.pt"))
    parser.add_argument("--init", type=Path, help="continue from a student checkpoint")
    parser.add_argument(
        "--backbone",
        default="efficientnet-lite0",
        help="the ImageNet trunk a new student starts from (without --init)",
    )
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument(
        "--long-side", type=int, default=student.CONFIG.long_side, help="student input (new only)"
    )
    parser.add_argument(
        "--widen", type=int, help="first round the --init student's widths up to this multiple"
    )
    parser.add_argument(
        "--blur", type=float, help="set the --init student's blur (cells of the stride-8 grid)"
    )
    parser.add_argument(
        "--crops", type=int, default=0, help="also learn K random windows of every image"
    )
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--seed", type=int, default=0, help="initialisation and batch order")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue from the checkpoint left beside --out by a run that was stopped "
        f"(saved every {CHECKPOINT_EVERY} steps; without --resume a new run replaces it)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    if args.init:
        model = student.load(args.init).train()
        if args.widen:
            model = student.widen(model, args.widen)
        if args.blur:
            student.reblur(model, args.blur)
    else:
        model = student.from_lite(replace(student.CONFIG, long_side=args.long_side), args.backbone)
    examples = training_set(
        args.teacher,
        args.data,
        model.config.long_side,
        model.config.output_stride,
        args.cache,
        args.crops,
    )
    checkpoint = resume_path(args.out)
    if not args.resume:
        checkpoint.unlink(missing_ok=True)
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    final = fit(model, examples, args.steps, args.lr, seed=args.seed, checkpoint=checkpoint)
    log.info("distilled: final loss %.4f", final)
    student.save(model, args.out)


if __name__ == "__main__":
    main()

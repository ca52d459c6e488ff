"""Fisher pruning of the distilled student (Theis et al. 2018, "Faster gaze prediction with
dense networks and Fisher pruning").

Removing feature map k raises the loss by about Δ_k = 1/(2N) Σ_n (Σ_hw a_nk g_nk)², with a the
map's activation and g the gradient of the loss for image n with respect to it (the Fisher
information of a multiplicative mask at 1). Each map also costs C_k multiply-accumulates. Between
short stretches of training, the maps with the smallest Δ_k - β C_k (both normalised by their
median over the maps still alive) are removed. Δ is a running average over training steps.
Whenever the cost passes a milestone the network is compacted, scored on the dev split (training
images the student never saw) and saved: that is the cost-quality curve, and the shipped point is
the smallest network within `TOLERANCE` of the teacher's dev NSS that meets the cost target.

    python -m cropworker_models.prune --student cache/student.pt --teacher cache/teacher.onnx
"""

from __future__ import annotations

import argparse
import json
import logging
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cropworker.backend import OnnxBackend, resolve_model
from cropworker.decode import decode_image, model_input_size

from . import data, distill, evaluate, flops, metrics, net, student

log = logging.getLogger(__name__)

MIN_MAPS = 4  # every block keeps a few maps, so no stage of the network disappears
EMA = 0.9  # running average of the Fisher estimate across steps
TOLERANCE = 0.03  # the shipped student may lose at most this share of the teacher's dev NSS
MILESTONES_M = (160, 120, 100, 80, 65, 55, 48, 42, 37, 33, 29, 25, 21, 18)


def served_shape(model: torch.nn.Module) -> tuple[int, int]:
    """(height, width) of the input a 4:3 landscape photo gets: the cost the target is about."""
    width, height = model_input_size(4, 3, net.config_of(model).long_side)
    return height, width


def macs(model: torch.nn.Module) -> int:
    return flops.count_macs(model, torch.zeros(1, *served_shape(model), 3, dtype=torch.uint8))


class FisherPruner:
    """Fisher estimates for every prunable map and the removal rule."""

    def __init__(
        self, model: student.Student, beta: float, multiple: int = student.WIDTH_MULTIPLE
    ) -> None:
        self.beta = beta
        self.multiple = multiple
        self.floor = max(MIN_MAPS, multiple)
        self.blocks = model.prunable_blocks()
        self.cost = student.macs_per_map(model, *served_shape(model))
        self.fisher = {i: torch.zeros(b.spec.mid) for i, b in self.blocks.items()}
        for block in self.blocks.values():
            block.record = True
            block.masked = True

    def accumulate(self, batch_size: int) -> None:
        """After backward: fold this batch's Fisher estimate into the running average."""
        for i, block in self.blocks.items():
            a = block.activation
            if a is None or a.grad is None:
                continue
            # per-image gradients of a mean loss are batch_size times the recorded ones
            s = (a.detach() * a.grad).sum(dim=(2, 3)) * batch_size  # (B, C)
            self.fisher[i] = EMA * self.fisher[i] + (1 - EMA) * 0.5 * (s**2).mean(dim=0)
            block.activation = None

    def remove(self, count: int) -> int:
        """Mask out at least `count` maps, `multiple` at a time: each time the block's group of
        maps with the smallest Σ(Δ - β C) (Δ and C normalised by their medians over the maps that
        may go). Returns the MACs saved."""
        live = {i: torch.nonzero(b.mask).flatten().tolist() for i, b in self.blocks.items()}
        # within a block every map costs the same, so its cheapest group is its smallest Δs
        queues = {
            i: [maps[j] for j in torch.argsort(self.fisher[i][maps], stable=True).tolist()]
            for i, maps in live.items()
            if len(maps) - self.multiple >= self.floor
        }
        if not queues:
            return 0
        deltas = np.concatenate([self.fisher[i][q].numpy() for i, q in queues.items()])
        delta_norm = max(float(np.median(deltas)), 1e-20)
        cost_norm = float(np.median([self.cost[i] for i, q in queues.items() for _ in q]))

        def group_score(i: int) -> float:
            delta = float(self.fisher[i][queues[i][: self.multiple]].sum())
            return delta / delta_norm - self.beta * self.multiple * self.cost[i] / cost_norm

        saved = 0
        while count > 0:
            ready = [i for i, q in queues.items() if len(q) - self.multiple >= self.floor]
            if not ready:
                break
            i = min(ready, key=group_score)
            self.blocks[i].mask[queues[i][: self.multiple]] = 0.0
            queues[i] = queues[i][self.multiple :]
            saved += self.multiple * int(self.cost[i])
            count -= self.multiple
        return saved


def removal_count(model: student.Student, maps_per_prune: int, fraction: float) -> int:
    """How many maps the next prune removes: a fixed number, or a share of those still alive."""
    if not fraction:
        return maps_per_prune
    return max(1, round(fraction * sum(int(b.mask.sum()) for b in model.prunable())))


def dev_images(data_root: Path) -> list[data.FixationImage]:
    train_set, _ = data.split(data.load_fixation_sets(data_root))
    return [im for im in train_set if data.is_dev(im.key)]


def score(predict: Any, images: list[data.FixationImage], long_side: int) -> dict[str, float]:
    """Mean NSS and fixation log-likelihood (bits over uniform) of `predict` on `images`."""
    nss, bits = [], []
    for im in images:
        rgb = decode_image(im.path.read_bytes(), long_side).rgb
        logp = predict(rgb[None])[0]
        density = evaluate.to_pixels(np.exp(logp), im.width, im.height)
        nss.append(metrics.nss(density, im.fixations))
        bits.append(metrics.log_likelihood_bits(density, im.fixations))
    return {"nss": float(np.mean(nss)), "bits": float(np.mean(bits))}


def torch_predictor(model: torch.nn.Module) -> Any:
    def predict(batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            out: np.ndarray = model(torch.from_numpy(batch)).numpy()
        return out

    return predict


def prune(
    model: student.Student,
    examples: list[distill.Example],
    dev: list[data.FixationImage],
    out_dir: Path,
    beta: float,
    maps_per_prune: int,
    steps_between: int,
    lr: float,
    floor_m: float,
    milestones_m: tuple[float, ...] = MILESTONES_M,
    fraction: float = 0.0,
    multiple: int = student.WIDTH_MULTIPLE,
) -> list[dict[str, Any]]:
    """Prune down to `floor_m` million MACs; returns the curve (one point per milestone). Each
    prune removes `maps_per_prune` maps, or with `fraction` that share of the maps still alive
    (at least one group of `multiple`): gentle on a small network, quick on a large one."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    curve: list[dict[str, Any]] = [
        {
            "macs": macs(model),
            **score(torch_predictor(model.eval()), dev, model.config.long_side),
            "checkpoint": str(student.save(model, out_dir / "student-unpruned.pt")),
        }
    ]
    log.info("unpruned: %s", curve[0])
    milestones = [m * 1e6 for m in milestones_m if m * 1e6 < curve[0]["macs"] and m >= floor_m]
    current = float(curve[0]["macs"])
    while milestones:
        pruner = FisherPruner(model, beta, multiple)
        optimiser = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-5)
        queue: list[list[distill.Example]] = []
        model.train()
        while current > milestones[0]:
            for _ in range(steps_between):
                if not queue:
                    queue = distill.batches(examples, 16, rng)
                batch = queue.pop()
                loss = distill.loss(model, batch)
                optimiser.zero_grad()
                loss.backward()  # type: ignore[no-untyped-call]
                pruner.accumulate(len(batch))
                optimiser.step()
            saved = pruner.remove(removal_count(model, maps_per_prune, fraction))
            if saved == 0:
                break
            current -= saved
        for block in pruner.blocks.values():
            block.record = False
        model = student.compact(model)
        current = macs(model)
        point: dict[str, Any] = {
            "macs": current,
            **score(torch_predictor(model.eval()), dev, model.config.long_side),
        }
        point["checkpoint"] = str(student.save(model, out_dir / f"student-{current / 1e6:.0f}M.pt"))
        point["maps"] = {i: b.spec.mid for i, b in model.prunable_blocks().items()}
        point["macs_shipped"] = macs(student.widen(model, student.WIDTH_MULTIPLE))
        curve.append(point)
        log.info(
            "pruned to %.1f M MACs: dev NSS %.3f, %.3f bits",
            current / 1e6,
            point["nss"],
            point["bits"],
        )
        milestones = [m for m in milestones if m < current]
    return curve


def pick(curve: list[dict[str, Any]], teacher_nss: float, target_macs: float) -> dict[str, Any]:
    """The cheapest point within TOLERANCE of the teacher's dev NSS and under the cost target;
    failing that, the best point under the target. The cost is as shipped: widened to
    `student.WIDTH_MULTIPLE` (`macs_shipped`) where the curve has it."""
    under = [p for p in curve if p.get("macs_shipped", p["macs"]) <= target_macs]
    good = [p for p in under if p["nss"] >= (1 - TOLERANCE) * teacher_nss]
    if good:
        return min(good, key=lambda p: p["macs"])
    return max(under or curve, key=lambda p: p["nss"])


def plot(
    curve: list[dict[str, Any]],
    teacher: dict[str, float],
    chosen: dict[str, Any],
    target_macs: float,
    path: Path,
    earlier: Sequence[tuple[str, list[dict[str, Any]]]] = (),
    chosen_label: str = "shipped",
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for label, points in earlier:  # earlier runs, for comparison
        macs = [p["macs"] / 1e6 for p in points]
        ax.plot(macs, [p["nss"] for p in points], ".-", color="0.6", label=label)
    ax.plot([p["macs"] / 1e6 for p in curve], [p["nss"] for p in curve], "o-", label="student")
    ax.axhline(teacher["nss"], color="k", ls="--", label="teacher ensemble")
    ax.axhline((1 - TOLERANCE) * teacher["nss"], color="grey", ls=":", label="teacher - 3%")
    ax.axvline(target_macs / 1e6, color="tab:red", ls=":", label="cost target")
    ax.plot([chosen["macs"] / 1e6], [chosen["nss"]], "r*", ms=14, label=chosen_label)
    ax.set_xscale("log")
    ax.set_xlabel("multiply-accumulates per 4:3 photo (millions)")
    ax.set_ylabel("NSS on dev images (never trained on)")
    ax.set_title("Fisher pruning: cost vs quality")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--student", type=Path, default=Path("cache/student.pt"))
    parser.add_argument("--teacher", type=Path, default=Path("cache/teacher.onnx"))
    parser.add_argument(
        "--vanilla-macs", type=float, help="the target is 1/10 of this (default: as shipped)"
    )
    data.add_data_argument(parser)
    parser.add_argument("--cache", type=Path, default=Path("cache"))
    parser.add_argument("--beta", type=float, default=0.5)
    parser.add_argument("--maps-per-prune", type=int, default=16)
    parser.add_argument("--steps-between", type=int, default=2)
    parser.add_argument(
        "--fraction", type=float, default=0.0, help="remove this share of live maps per prune"
    )
    parser.add_argument(
        "--multiple",
        type=int,
        default=student.WIDTH_MULTIPLE,
        help="remove maps this many at a time per block",
    )
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--floor", type=float, default=18, help="stop at this many M MACs")
    parser.add_argument(
        "--target",
        type=float,
        help="pick under this many M MACs as shipped (default 1/10 of vanilla: the fast rung)",
    )
    parser.add_argument("--report", type=Path, default=Path("models/reports"))
    parser.add_argument("--out-dir", type=Path, help="checkpoints (default CACHE/prune)")
    parser.add_argument(
        "--curve-prefix",
        type=Path,
        help="JSON list of curve points of an earlier leg that ended at --student",
    )
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument(
        "--compare", type=Path, help="an earlier run's pruning JSON, drawn in grey on the plot"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    model = student.load(args.student)
    examples = distill.training_set(
        args.teacher,
        args.data,
        model.config.long_side,
        model.config.output_stride,
        args.cache,
    )
    dev = dev_images(args.data)
    teacher_backend = OnnxBackend(str(args.teacher), threads=2)
    teacher = score(teacher_backend.infer, dev, teacher_backend.info.long_side)
    log.info("teacher on dev: %s", teacher)
    curve = prune(
        model,
        examples,
        dev,
        args.out_dir or args.cache / "prune",
        args.beta,
        args.maps_per_prune,
        args.steps_between,
        args.lr,
        args.floor,
        fraction=args.fraction,
        multiple=args.multiple,
    )
    if args.curve_prefix:  # an earlier leg, down to the point this leg started from
        curve = json.loads(args.curve_prefix.read_text())[:-1] + curve
    # the student is measured against the vanilla model as shipped (its card has its MACs)
    card = resolve_model("vanilla").with_suffix(".json")
    vanilla_macs = args.vanilla_macs or json.loads(card.read_text())["cost"]["macs"]
    target = args.target * 1e6 if args.target else vanilla_macs / 10
    chosen = pick(curve, teacher["nss"], target)
    earlier = []
    if args.compare:
        points = json.loads(args.compare.read_text())["curve"]
        earlier.append((f"earlier: {args.compare.stem}", points))
    plot(curve, teacher, chosen, target, args.report / "pruning.png", earlier)
    (args.report / "pruning.json").write_text(
        json.dumps(
            {
                "teacher_dev": teacher,
                "curve": curve,
                "chosen": chosen["checkpoint"],
                "beta": args.beta,
                "maps_per_prune": args.maps_per_prune,
                "fraction": args.fraction,
                "multiple": args.multiple,
                "steps_between": args.steps_between,
            },
            indent=2,
        )
        + "\n"
    )
    log.info("chosen: %s", chosen)


if __name__ == "__main__":
    main()

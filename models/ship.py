"""Ship a distilled, pruned student: export it to the model zoo, evaluate it on the held-out
images like every shipped model, and write its card next to the teacher's and vanilla's figures.

    python -m cropworker_models.ship cache/student-final.pt --data ../shared/data
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

from cropworker.backend import OnnxBackend

from . import data, evaluate, export, net, student

log = logging.getLogger(__name__)

# How each student rung was made (cropworker_models.distill, prune); say it again when re-run.
# (The default rung is a graph of two students: GRAPHS below.)
RECIPES = {
    "fast": """\
python -m cropworker_models.teacher --data ../shared/data
python -m cropworker_models.distill --steps 500 --out cache/student.pt
python -m cropworker_models.distill --init cache/student.pt --steps 1200 \\
    --out cache/s192/student-1700.pt
python -m cropworker_models.distill --init cache/s192/student-1700.pt --steps 3000 \\
    --out cache/s192/student-4700.pt
python -m cropworker_models.prune --student cache/s192/student-4700.pt --multiple 1 \\
    --fraction 0.01 --steps-between 24 --floor 33 --out-dir cache/prune192d
python -m cropworker_models.distill --init cache/prune192d/student-NM.pt --blur 0.6 \\
    --steps 3000 --lr 3e-4 --out cache/s192/student5-final.pt  # N: prune.py's choice
python -m cropworker_models.ship cache/s192/student5-final.pt --name fast --version 5""",
}
# the default rung as a student beside fast in one graph (models/ensemble.py)
DEFAULT_PAIR_RECIPE = """\
python -m cropworker_models.teacher --data ../shared/data
python -m cropworker_models.distill --steps 3000 --out cache/d/student-3000.pt  # --resume
python -m cropworker_models.prune --student cache/d/student-3000.pt --multiple 1 \\
    --fraction 0.015 --steps-between 12 --floor 55 --target 100 \\
    --out-dir cache/d/prune --report cache/d/report  # models/reports/pruning-default.*
python -m cropworker_models.distill --init cache/d/prune/student-NM.pt --widen 8 --steps 1500 \\
    --lr 3e-4 --out cache/d/partner-final.pt  # N: the largest point <= 100 M - fast's MACs
python -m cropworker_models.distill --init cache/d/partner-final.pt --crops 2 --steps 1500 \\
    --lr 3e-4 --out cache/d3/partner-crops.pt  # + 2 random windows of every image
python -m cropworker_models.export cache/d3/partner-crops.pt cache/d3/partner-crops.onnx
python -m cropworker_models.ensemble worker/zoo/default.onnx worker/zoo/fast.onnx \\
    cache/d3/partner-crops.onnx --name default --version 2
python -m cropworker_models.ship worker/zoo/default.onnx"""
DISTILLED = {
    "fast": "4,700 steps of 16 images in three cosine cycles of 500, 1,200 and 3,000 steps, about"
    " 16 passes, before pruning; 3,000 steps of fine-tuning, with the head's blur narrowed from"
    " 1.5 to 0.6 cells",
}


def comparison(
    student: dict[str, Any],
    teacher: dict[str, Any],
    vanilla: dict[str, Any],
    pruning: dict[str, Any],
    distilled: str,
    widened: int = 0,
    curve_png: str = "pruning.png",
) -> str:
    """The card's history section: how the student compares with what it was made from."""
    rows = []
    for name, r in (("vanilla", vanilla), ("teacher ensemble", teacher), ("student", student)):
        m = r["saliency"]["model"]
        rows.append(
            f"| {name} | {m['nss']:.3f} | {m['auc_judd']:.3f} | {m['cc']:.3f} | "
            f"{m['info_gain_bits']:.3f} | {r['cost']['macs'] / 1e6:.0f} M "
            f"({r['cost']['input']}) |"
        )
    crops = []
    for aspect, s in student["crops"].items():
        t = teacher["crops"][aspect]
        crops.append(
            f"| {aspect} | {t['model_vs_best']:.3f} | {s['model_vs_best']:.3f} | "
            f"{100 * (s['model_vs_best'] / t['model_vs_best'] - 1):+.2f}% | "
            f"{s['centre_vs_best']:.3f} |"
        )
    s_nss = student["saliency"]["model"]["nss"]
    t_nss = teacher["saliency"]["model"]["nss"]
    chosen = next(p for p in pruning["curve"] if p["checkpoint"] == pruning["chosen"])
    curve = pruning["curve"]
    # an earlier stretch ends at its last point; the last one's end is where the final run began
    ends = {
        p["leg"]: (p if "leg" in curve[i + 1] else curve[i + 1])["macs"]
        for i, p in enumerate(curve[:-1])
        if "leg" in p
    }
    legs = ""
    if ends:  # the first stretches of the curve ran with faster schedules (time budget)
        stretches = "; ".join(
            f"{leg}, 2 steps apart, down to {m / 1e6:.0f} M" for leg, m in ends.items()
        )
        legs = f"\n   Earlier stretches of the curve used faster schedules: {stretches}."
    removed = f"{pruning['maps_per_prune']} feature maps"
    if pruning.get("fraction"):
        removed = f"{100 * pruning['fraction']:g}% of the feature maps still alive"
    widen = ""
    if widened:
        widen = f"""
4. **Widths rounded up** to multiples of {widened} at export (`ship.py --widen`): new maps with
   zero output weights, so the same function, on the widths ONNX Runtime's blocked
   convolutions take; the MACs below count them."""
    return f"""
## How it was made
1. **Teacher ensemble**: saliency readouts over frozen EfficientNet-Lite0, Lite1 and Lite2
   features at 320 px (`teacher.py`), their densities averaged.
2. **Distillation** (`distill.py`): the student (EfficientNet-Lite0's blocks with ImageNet
   weights, at {student["cost"]["input"]}) trained end to end on the teacher's densities over the
   training images and 1,000 unlabelled photos, mirrored (cross-entropy to the teacher), plus the
   fixation log-likelihood where human fixations exist ({distilled}).
3. **Fisher pruning** (`prune.py`): {removed} removed after every
   {pruning["steps_between"]} training steps, those with the smallest Fisher loss estimate minus
   β = {pruning["beta"]} times their MAC cost (both median-normalised), down the curve below.{legs}
   The shipped point was picked on a dev split of the training images the student never saw
   (never on the held-out images): {chosen["macs"] / 1e6:.1f} M MACs, dev NSS
   {chosen["nss"]:.3f}; then fine-tuned by distillation. (The teacher's dev NSS,
   {pruning["teacher_dev"]["nss"]:.3f}, is inflated: its readouts were trained on those
   images.){widen}

![Cost-quality curve of Fisher pruning](../../models/reports/{curve_png})

### Against the teacher and the vanilla model (held-out images)

| model | NSS | AUC-Judd | CC | info gain (bits/fix) | MACs |
|---|---|---|---|---|---|
{chr(10).join(rows)}

Student NSS is {100 * (s_nss / t_nss - 1):+.1f}% of the teacher's.

Crop quality, fixations kept relative to the best box:

| aspect | teacher | student | student vs teacher | centre crop |
|---|---|---|---|---|
{chr(10).join(crops)}
"""


def architecture(model: object) -> str:
    assert isinstance(model, student.Student)
    stem, *blocks = (str(b.spec.mid) for b in model.prunable())
    c = model.config
    taps, readout = ",".join(map(str, c.taps)), ",".join(map(str, c.readout))
    return f"""An inverted-residual network (EfficientNet-Lite0's blocks, ImageNet-initialised,
trained end to end, then pruned). Feature maps as shipped: {stem} of the stem's 32, and
expanded widths of the blocks {", ".join(blocks)}.
The outputs of blocks {taps} (strides 8, 16, 32) are read out by 1x1 convolutions
({readout} hidden channels), blurred (Gaussian, σ = {8 * c.blur_sigma:g} px of the input), added
to a learned centre log-prior and normalised by a softmax: a log-density over a grid at
1/{c.output_stride} of the input. Input: uint8 RGB with the long side {c.long_side} px and the
short side keeping the aspect ratio (multiple of 32)."""


# Rungs that are graphs built from other graphs (models/ensemble.py): what they are, how to make
# them again.
GRAPHS = {
    "default": (
        """Two students in one graph, their log-densities averaged (the normalised geometric mean
of their densities): `fast` (student@5) and a second student distilled from the same teacher in
another run (one cosine cycle of 3,000 steps with the narrow blur from the start), pruned less (to
58 M MACs, about twice fast's cost), fine-tuned on widths rounded up to multiples of 8, then
fine-tuned again on the teacher's densities over the whole images and two random windows of each
(55-100% of each side, anywhere: the same scenes framed off-centre). Both
are EfficientNet-Lite0's inverted-residual blocks, ImageNet-initialised, trained end to end; each
reads out the ends of its stride-8, 16 and 32 stages by 1x1 convolutions, blurs (σ = 4.8 px), adds
a learned centre log-prior and normalises. Different runs make different mistakes: on the dev
split the pair keeps more of the best box than either alone (models/reports/README.md). Input:
uint8 RGB with the long side 192 px and the short side keeping the aspect ratio (multiple of
32).""",
        DEFAULT_PAIR_RECIPE,
    ),
    "large": (
        """The teacher ensemble as one graph: saliency
readouts (the vanilla recipe: 1x1 convolutions, a blur, a learned centre log-prior, a softmax)
over frozen EfficientNet-Lite0, Lite1 and Lite2 ImageNet features at a 320 px long side, each
trained on the human fixations; their densities averaged (a mixture). The readouts tap the ends of
the stride-8, stride-16 and the last two stride-32 stages. Weights are stored as float16 (half the
file; the arithmetic is float32), which moves log-densities by at most ~0.01 and no crop measured
here. Input: uint8 RGB with the long side 320 px and the short side keeping the aspect ratio
(multiple of 32).""",
        "\n".join(
            [
                "python -m cropworker_models.teacher --data ../shared/data",
                "python -m cropworker_models.ensemble worker/zoo/large.onnx cache/teacher.onnx \\",
                "    --name large --version 1 --fp16",
                "python -m cropworker_models.ship worker/zoo/large.onnx",
            ]
        ),
    ),
}


def against(report: dict[str, Any], others: dict[str, dict[str, Any]]) -> str:
    """The card's comparison with the other models: crops relative to the best box."""
    names = [report["model"], *others]
    reports = [report, *others.values()]
    head = "| aspect | " + " | ".join(names) + " |\n|---|" + "---|" * len(names)
    rows = [
        f"| {aspect} | "
        + " | ".join(f"{r['crops'][aspect]['model_vs_best']:.3f}" for r in reports)
        + " |"
        for aspect in report["crops"]
    ]
    nss = " | ".join(f"{r['saliency']['model']['nss']:.3f}" for r in reports)
    macs = " | ".join(f"{r['cost']['macs'] / 1e6:.0f} M" for r in reports)
    return f"""
## Against the other models (held-out images)
Crops: fixations kept relative to the best box.

{head}
{chr(10).join(rows)}
| NSS | {nss} |
| MACs per 4:3 photo | {macs} |
"""


def ship_graph(path: Path, args: argparse.Namespace) -> None:
    """Card and figures for a graph already in the zoo (written with its golden file by
    `cropworker_models.ensemble`)."""
    report = evaluate.evaluate(str(path), args.data)
    name = report["model"].split("@")[0]
    config = dict(OnnxBackend(str(path)).session.get_modelmeta().custom_metadata_map)
    others = {"teacher (fp32)": json.loads((args.reports / "teacher.json").read_text())["teacher"]}
    for other in ("fast", "vanilla"):
        if other != name:
            others[other] = json.loads((args.zoo / f"{other}.json").read_text())
    architecture_text, recipe = GRAPHS[name]
    history = against(report, others)
    (args.zoo / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    card = evaluate.model_card(report, config, recipe, history, architecture_text)
    (args.zoo / f"{name}.md").write_text(card)
    print(history)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", type=Path, help="a student checkpoint, or a zoo .onnx graph")
    data.add_data_argument(parser)
    parser.add_argument("--zoo", type=Path, default=Path("worker/zoo"))
    parser.add_argument("--reports", type=Path, default=Path("models/reports"))
    parser.add_argument(
        "--pruning",
        type=Path,
        default=Path("models/reports/pruning.json"),
        help="a student's pruning report (prune.py's JSON; its curve goes on the card)",
    )
    parser.add_argument(
        "--name", help="rung to ship as: fast, default, large (default: the checkpoint's)"
    )
    parser.add_argument("--version", help="version to ship as (default: the checkpoint's)")
    parser.add_argument(
        "--widen",
        type=int,
        default=student.WIDTH_MULTIPLE,
        help="round a student's widths up to this multiple (same function; 0: as trained)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.checkpoint.suffix == ".onnx":
        ship_graph(args.checkpoint, args)
        return
    model = export.load(args.checkpoint)
    if args.version or args.name:  # a new training run ships under a new version
        assert isinstance(model, student.Student)
        old = model.config
        model.config = replace(old, version=args.version or old.version, name=args.name or old.name)
    widened = 0  # what the card says the widths were rounded up to
    if isinstance(model, student.Student) and args.widen:
        model, widened = student.widen(model, args.widen).eval(), args.widen
    name = net.config_of(model).name
    path = args.zoo / f"{name}.onnx"
    export.to_onnx(model, path)
    log.info("max |onnx - torch| = %.2g", export.check_against_torch(model, path))
    export.write_golden(model, Path("samples/coffee.jpg"), path.with_suffix(".golden.npz"))
    report = evaluate.evaluate(str(path), args.data)
    teacher = json.loads((args.reports / "teacher.json").read_text())["teacher"]
    vanilla = json.loads((args.zoo / "vanilla.json").read_text())
    pruning = json.loads(args.pruning.read_text())
    config = dict(OnnxBackend(str(path)).session.get_modelmeta().custom_metadata_map)
    curve_png = args.pruning.with_suffix(".png").name
    history = comparison(
        report, teacher, vanilla, pruning, DISTILLED[name], widened=widened, curve_png=curve_png
    )
    (args.zoo / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    card = evaluate.model_card(report, config, RECIPES[name], history, architecture(model))
    (args.zoo / f"{name}.md").write_text(card)
    print(history)


if __name__ == "__main__":
    main()

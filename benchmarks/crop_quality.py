"""Crop quality against real human fixations, for cropworker and every peer, on the held-out images.

For each held-out image (`cropworker_models.data.split`: never trained on, never used to choose
anything) and each aspect, every method places the same box (the largest of that aspect) and is
scored by the share of the viewers' fixations inside it, that share relative to the best
position of the same box (chosen from the fixations themselves: `metrics.best_fixation_crop`),
and the rate of bad crops (less than half of what the best box keeps), as in the model card.

The inter-observer bar: the viewers are split in two halves (alternately by subject id); the best
box for one half is scored on the other half, relative to the best box for that other half, both
ways round. It says how well a crop can agree with people it was not chosen from; with half the
viewers on each side it slightly understates what all of them would agree on.

Writes `crop_quality.json` (the summary), `crop_quality_per_image.csv`, a contact sheet
(`crop_quality_sheet.png`: the images where the methods disagree most, each method's crop with
the fixations) and a quality-vs-speed plot (`quality_vs_speed.png`, speeds from
`crop_speed.json` when `crop_speed.py` wrote one).

    python benchmarks/crop_quality.py [--data ROOT] [--limit N]  # ROOT: the data folder
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import peers

from cropworker import crop
from cropworker.backend import DEFAULT_MODEL, shipped_models
from cropworker_models import data, metrics
from cropworker_models.evaluate import BAD_CROP_SHARE

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
INTER_OBSERVER = "inter-observer (half the viewers)"
SHEET_IMAGES = 12
# Crops where the centre keeps less than this share of the best box: the subject is off-centre,
# the case a smart crop exists for: the peers win only there, and lose on the rest
# (docs/notes.md#smart-crop-peers).
OFF_CENTRE = 0.8
SHEET_TILE = 120  # px, long side of each picture in the contact sheet
BOOTSTRAP = 4000  # resamples of the images for each paired interval


@dataclass(frozen=True)
class Score:
    share: float  # fixations inside the box
    vs_best: float  # share / share of the best position of the same box
    bad: float  # 1.0 when share < BAD_CROP_SHARE * best share


def score(box: crop.Box, fixations: np.ndarray, best_share: float) -> Score:
    share = metrics.fixation_share(box, fixations)
    return Score(
        share,
        share / best_share if best_share > 0 else 1.0,
        float(share < BAD_CROP_SHARE * best_share),
    )


def halves(subjects: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Masks of two viewer halves (ids assigned alternately), or None without two known ids."""
    ids = np.unique(subjects[subjects >= 0])
    if len(ids) < 2:
        return None
    first = np.isin(subjects, ids[::2])
    return first, np.isin(subjects, ids[1::2])


def inter_observer(image: data.FixationImage, aspect: float) -> Score | None:
    """Best box for one half of the viewers scored on the other half, averaged both ways."""
    split = None if image.subjects is None else halves(image.subjects)
    if split is None:
        return None
    scores = []
    for chosen_by, scored_on in (split, split[::-1]):
        pick, judge = image.fixations[chosen_by], image.fixations[scored_on]
        box = metrics.best_fixation_crop(pick, image.width, image.height, aspect)
        best = metrics.best_fixation_crop(judge, image.width, image.height, aspect)
        scores.append(score(box, judge, metrics.fixation_share(best, judge)))
    return Score(
        float(np.mean([s.share for s in scores])),
        float(np.mean([s.vs_best for s in scores])),
        float(np.mean([s.bad for s in scores])),
    )


@dataclass
class ImageResult:
    key: str
    dataset: str
    width: int
    height: int
    best: dict[str, crop.Box]
    boxes: dict[str, dict[str, crop.Box]] = field(default_factory=dict)  # method -> aspect -> box
    scores: dict[str, dict[str, Score]] = field(default_factory=dict)  # method -> aspect -> score
    ms: dict[str, float] = field(default_factory=dict)  # method -> time for all aspects


def evaluate_image(
    image: data.FixationImage, methods: Sequence[peers.Peer], aspects: Sequence[str]
) -> ImageResult:
    encoded = image.path.read_bytes()
    ratios = {a: crop.parse_aspect(a) for a in aspects}
    best = {
        a: metrics.best_fixation_crop(image.fixations, image.width, image.height, r)
        for a, r in ratios.items()
    }
    best_share = {a: metrics.fixation_share(box, image.fixations) for a, box in best.items()}
    result = ImageResult(image.key, image.dataset, image.width, image.height, best)
    for method in methods:
        start = time.perf_counter()
        boxes = method.crops(encoded, aspects)
        result.ms[method.name] = 1000 * (time.perf_counter() - start)
        for a, box in boxes.items():
            peers.check_box(box, image.width, image.height, ratios[a])
        result.boxes[method.name] = boxes
        result.scores[method.name] = {
            a: score(boxes[a], image.fixations, best_share[a]) for a in aspects
        }
    bar = {a: inter_observer(image, r) for a, r in ratios.items()}
    if all(s is not None for s in bar.values()):
        result.scores[INTER_OBSERVER] = {a: s for a, s in bar.items() if s is not None}
    return result


def summarise(results: list[ImageResult], aspects: Sequence[str]) -> dict[str, Any]:
    """Per method: per aspect means of share, vs_best and bad, the same over all aspects, by
    dataset and over the off-centre crops (image and aspect where the centre crop keeps less than
    `OFF_CENTRE` of the best); median ms per image."""
    methods = list(dict.fromkeys(m for r in results for m in r.scores))
    centre = peers.Centre.name
    off_centre = [
        (r, a)
        for r in results
        if centre in r.scores
        for a in aspects
        if r.scores[centre][a].vs_best < OFF_CENTRE
    ]
    out: dict[str, Any] = {}
    for method in methods:
        rows = [r for r in results if method in r.scores]
        per_aspect = {
            a: {
                k: float(np.mean([getattr(r.scores[method][a], k) for r in rows]))
                for k in ("share", "vs_best", "bad")
            }
            for a in aspects
        }
        by_dataset: dict[str, list[float]] = defaultdict(list)
        for r in rows:
            by_dataset[r.dataset].extend(r.scores[method][a].vs_best for a in aspects)
        times = [r.ms[method] for r in rows if method in r.ms]
        out[method] = {
            "images": len(rows),
            "aspects": per_aspect,
            "all_aspects": {
                k: float(np.mean([v[k] for v in per_aspect.values()]))
                for k in ("share", "vs_best", "bad")
            },
            "vs_best_by_dataset": {d: float(np.mean(v)) for d, v in sorted(by_dataset.items())},
            "off_centre": {
                "crops": len(off_centre),
                "vs_best": float(np.mean([r.scores[method][a].vs_best for r, a in off_centre]))
                if off_centre
                else None,
            },
            "ms_per_image": statistics.median(times) if times else None,
        }
    return out


def paired(
    results: list[ImageResult], aspects: Sequence[str], reference: str, seed: int = 0
) -> dict[str, Any]:
    """Per method: its vs-best minus the reference's on the same images, in points (1 point =
    0.01 of the best box), per aspect, over all aspects and on the off-centre crops, each with a
    95% interval from resampling the images (both methods move together: the noise a gap must
    beat on this set)."""
    centre = peers.Centre.name
    rows = [r for r in results if reference in r.scores]
    off = np.array(
        [
            [centre in r.scores and r.scores[centre][a].vs_best < OFF_CENTRE for a in aspects]
            for r in rows
        ]
    )
    out: dict[str, Any] = {}
    for method in dict.fromkeys(m for r in rows for m in r.scores):
        if method == reference or not all(method in r.scores for r in rows):
            continue
        diff = 100 * np.array(
            [
                [r.scores[method][a].vs_best - r.scores[reference][a].vs_best for a in aspects]
                for r in rows
            ]
        )  # (images, aspects), points

        def interval(values: np.ndarray, weights: np.ndarray | None = None) -> dict[str, Any]:
            found = metrics.paired_interval(values, weights, BOOTSTRAP, seed)
            if found is None:
                return {"points": None, "interval": None}
            return {"points": found[0], "interval": [found[1], found[2]]}

        out[method] = {
            **{a: interval(diff[:, i]) for i, a in enumerate(aspects)},
            "all_aspects": interval(diff.mean(axis=1)),
            "off_centre": interval(diff.sum(axis=1, where=off), off.sum(axis=1).astype(float)),
        }
    return out


def format_paired(pairs: dict[str, Any], aspects: Sequence[str], reference: str) -> str:
    width = max((len(n) for n in pairs), default=6) + 2
    columns = [*aspects, "all_aspects", "off_centre"]

    def cell(v: dict[str, Any]) -> str:
        if v["points"] is None:
            return f"{'':>22}"
        return f"{v['points']:+6.2f} [{v['interval'][0]:+5.2f},{v['interval'][1]:+5.2f}]".rjust(22)

    lines = [
        f"paired against {reference}: points of the best box (95% interval, images resampled)",
        f"  {'method':<{width}}" + "".join(f"{c.replace('_', ' '):>22}" for c in columns),
    ]
    lines += [f"  {n:<{width}}" + "".join(cell(v[c]) for c in columns) for n, v in pairs.items()]
    return "\n".join(lines)


def format_tables(summary: dict[str, Any], aspects: Sequence[str], reference: str) -> str:
    """Plain-text tables: vs best per aspect (with the ratio to `reference`), share, bad rate."""
    names = list(summary)
    width = max(len(n) for n in names) + 2
    ref = summary[reference]["aspects"]

    def table(title: str, key: str, fmt: str, with_ratio: bool) -> list[str]:
        lines = [title, f"  {'method':<{width}}" + "".join(f"{a:>16}" for a in aspects)]
        for name in names:
            cells = []
            for a in aspects:
                value = summary[name]["aspects"][a][key]
                cell = format(value, fmt)
                if with_ratio and name != reference and ref[a][key] > 0:
                    cell += f" ({value / ref[a][key]:.2f}x)"
                cells.append(f"{cell:>16}")
            lines.append(f"  {name:<{width}}" + "".join(cells))
        return [*lines, ""]

    lines = table(
        "share of fixations kept relative to the best position of the same box (mean per image;"
        f" x = ratio to {reference})",
        "vs_best",
        ".3f",
        True,
    )
    lines += table("share of all fixations inside the crop (mean per image)", "share", ".3f", False)
    lines += table(
        f"bad crops: keep less than {BAD_CROP_SHARE:.0%} of the best box (share of images)",
        "bad",
        ".1%",
        False,
    )
    datasets = sorted({d for v in summary.values() for d in v["vs_best_by_dataset"]})
    off = next(iter(summary.values()))["off_centre"]["crops"]
    lines.append(
        "vs best over all aspects, by dataset and on the off-centre crops (centre crop keeps "
        f"< {OFF_CENTRE:g} of the best: {off} image-aspect pairs); ms per image (median)"
    )
    lines.append(
        f"  {'method':<{width}}{'all':>8}"
        + "".join(f"{d:>14}" for d in datasets)
        + f"{'off-centre':>12}{'ms':>9}"
    )
    for name in names:
        row = summary[name]
        ms, off_vs_best = row["ms_per_image"], row["off_centre"]["vs_best"]
        lines.append(
            f"  {name:<{width}}{row['all_aspects']['vs_best']:8.3f}"
            + "".join(f"{row['vs_best_by_dataset'].get(d, float('nan')):14.3f}" for d in datasets)
            + (f"{off_vs_best:12.3f}" if off_vs_best is not None else f"{'':>12}")
            + (f"{ms:9.1f}" if ms is not None else f"{'':>9}")
        )
    return "\n".join(lines)


def sheet_choice(results: list[ImageResult], methods: Sequence[str], aspect: str) -> list[int]:
    """Indices of the images where the methods disagree most at `aspect` (largest spread of
    vs-best), the same number from each dataset."""
    per_dataset: dict[str, list[tuple[float, int]]] = defaultdict(list)
    for i, r in enumerate(results):
        spread = np.ptp([r.scores[m][aspect].vs_best for m in methods if m in r.scores])
        per_dataset[r.dataset].append((-float(spread), i))
    quota = max(1, SHEET_IMAGES // max(1, len(per_dataset)))
    chosen = [i for rows in per_dataset.values() for _, i in sorted(rows)[:quota]]
    return sorted(chosen)[:SHEET_IMAGES]


def _tile(
    rgb: np.ndarray,
    fixations: np.ndarray,
    box: crop.Box | None,
    label: str,
    colour: tuple[int, ...],
) -> np.ndarray:
    height, width = rgb.shape[:2]
    scale = SHEET_TILE / max(width, height)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    small = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
    if box is not None:
        x, y, w, h = (round(v * scale) for v in box)
        dimmed = (small * 0.35).astype(np.uint8)
        dimmed[y : y + h, x : x + w] = small[y : y + h, x : x + w]
        small = dimmed
        cv2.rectangle(small, (x, y), (x + w - 1, y + h - 1), colour, 1)
    for fx, fy in fixations * scale:
        cv2.circle(small, (int(fx), int(fy)), 1, (255, 40, 40), -1)
    cell = np.full((SHEET_TILE + 14, SHEET_TILE, 3), 24, np.uint8)
    top, left = (SHEET_TILE - size[1]) // 2, (SHEET_TILE - size[0]) // 2
    cell[top : top + size[1], left : left + size[0]] = small
    cv2.putText(cell, label, (3, SHEET_TILE + 11), cv2.FONT_HERSHEY_PLAIN, 0.8, (235, 235, 235), 1)
    return cell


def contact_sheet(
    results: list[ImageResult],
    images: dict[str, data.FixationImage],
    methods: Sequence[str],
    aspect: str,
    path: Path,
) -> None:
    """PNG: one row per chosen image; the fixations and the best box, then each method's crop
    (outside dimmed) with its share relative to the best box."""
    from PIL import Image

    header = np.full((16, SHEET_TILE * (len(methods) + 1), 3), 24, np.uint8)
    for col, name in enumerate(["best (from fixations)", *methods]):
        cv2.putText(
            header,
            name[:20],
            (col * SHEET_TILE + 3, 12),
            cv2.FONT_HERSHEY_PLAIN,
            0.75,
            (235, 235, 235),
            1,
        )
    rows = [header]
    for i in sheet_choice(results, methods, aspect):
        r = results[i]
        im = images[r.key]
        rgb = cv2.cvtColor(peers.decode_bgr(im.path.read_bytes()), cv2.COLOR_BGR2RGB)
        cells = [_tile(rgb, im.fixations, r.best[aspect], r.key[:19], (255, 255, 255))]
        for name in methods:
            s = r.scores[name][aspect]
            colour = (255, 80, 80) if s.bad else (80, 255, 120)
            cells.append(
                _tile(rgb, im.fixations, r.boxes[name][aspect], f"{s.vs_best:.2f}", colour)
            )
        rows.append(np.concatenate(cells, axis=1))
    sheet = Image.fromarray(np.concatenate(rows, axis=0))
    # a 256-colour palette keeps the file a few hundred kB
    sheet.quantize(256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)


def plot(
    summary: dict[str, Any], speed: dict[str, Any] | None, bar: float | None, path: Path
) -> None:
    """Quality (mean vs best over the aspects) against ms per image: on the held-out images as
    measured here, and on the camera-like JPEGs of `crop_speed.json`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels: list[tuple[str, dict[str, float]]] = [
        (
            "held-out images (≤640 px), this run",
            {m: v["ms_per_image"] for m, v in summary.items() if v["ms_per_image"] is not None},
        )
    ]
    for size, rows in (speed or {}).get("methods", {}).items():
        panels.append((f"{size} JPEG, crop_speed.py", {m: rows[m] for m in rows if m in summary}))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.2), squeeze=False)
    for ax, (title, times) in zip(axes[0], panels, strict=True):
        for name, ms in times.items():
            quality = summary[name]["all_aspects"]["vs_best"]
            ours = name.startswith("cropworker")
            ax.scatter(ms, quality, s=40, color="tab:red" if ours else "tab:blue", zorder=3)
            ax.annotate(name, (ms, quality), textcoords="offset points", xytext=(4, 4), fontsize=7)
        if bar is not None:
            ax.axhline(bar, color="grey", linestyle="--", linewidth=1)
            ax.annotate(
                "inter-observer", (0.01, bar), xycoords=("axes fraction", "data"), fontsize=7
            )
        ax.set_xscale("log")
        ax.set_xlabel("ms per image (decode + crop, 4 aspects)")
        ax.set_title(title, fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("fixations kept / best box (mean, 4 aspects)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


LADDER_ROWS = (
    ("all aspects", lambda v: v["all_aspects"]["vs_best"]),
    ("9:16", lambda v: v["aspects"]["9:16"]["vs_best"]),
    ("off-centre subjects", lambda v: v["off_centre"]["vs_best"]),
)


def ladder_plot(
    summary: dict[str, Any], macs: dict[str, int], ladder: Sequence[str], path: Path
) -> None:
    """The model ladder against the peers: share of the best box kept (all aspects, 9:16, the
    off-centre crops; rows) against network MACs per 4:3 photo and against ms per image
    (columns); a line joins the rungs of the `ladder`. Peers have no network cost: they are
    lines across the MACs panels, points on the ms panels; the inter-observer bar is a dashed
    line on every panel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ours = [m for m in summary if m in macs]
    others = [m for m in summary if m not in macs and m != INTER_OBSERVER]
    fig, axes = plt.subplots(len(LADDER_ROWS), 2, figsize=(11, 3.4 * len(LADDER_ROWS)))
    colours = plt.get_cmap("tab10")
    for row, (label, value) in enumerate(LADDER_ROWS):
        by_cost, by_time = axes[row]
        order = sorted((m for m in ours if m in ladder), key=lambda m: macs[m])
        by_cost.plot(
            [macs[m] / 1e6 for m in order], [value(summary[m]) for m in order], "-", color="0.7"
        )
        for m in ours:
            for ax, x in ((by_cost, macs[m] / 1e6), (by_time, summary[m]["ms_per_image"])):
                ax.scatter(x, value(summary[m]), s=45, color="tab:red", zorder=3)
                ax.annotate(
                    m.removeprefix("cropworker "),
                    (x, value(summary[m])),
                    textcoords="offset points",
                    xytext=(4, 4),
                    fontsize=7,
                )
        for i, m in enumerate(others):
            colour = colours(i % 10)
            by_cost.axhline(value(summary[m]), color=colour, linewidth=1, alpha=0.8)
            by_cost.annotate(
                m,
                (1.0, value(summary[m])),
                xycoords=("axes fraction", "data"),
                fontsize=6,
                ha="right",
                va="bottom",
                color=colour,
            )
            if summary[m]["ms_per_image"] is not None:
                by_time.scatter(summary[m]["ms_per_image"], value(summary[m]), s=30, color=colour)
                by_time.annotate(
                    m,
                    (summary[m]["ms_per_image"], value(summary[m])),
                    textcoords="offset points",
                    xytext=(4, -8),
                    fontsize=6,
                    color=colour,
                )
        if INTER_OBSERVER in summary:
            for ax in (by_cost, by_time):
                ax.axhline(value(summary[INTER_OBSERVER]), color="k", linestyle="--", linewidth=1)
            by_time.annotate(
                "viewers split in half",
                (0.01, value(summary[INTER_OBSERVER])),
                xycoords=("axes fraction", "data"),
                fontsize=7,
                va="bottom",
            )
        by_cost.set_ylabel(f"kept / best box\n{label}")
        for ax in (by_cost, by_time):
            ax.set_xscale("log")
            ax.grid(True, which="both", alpha=0.3)
    axes[-1][0].set_xlabel("network multiply-accumulates per 4:3 photo (millions)")
    axes[-1][1].set_xlabel("ms per image (decode + crop, 4 aspects; held-out images, 1 thread)")
    axes[0][0].set_title("the model ladder by cost", fontsize=10)
    axes[0][1].set_title("and by time, with the peers", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def per_image_csv(results: list[ImageResult], aspects: Sequence[str]) -> str:
    """One line per image and method: the share kept relative to the best box, per aspect."""
    lines = [",".join(["image", "method", *aspects])]
    for r in results:
        for method, scores in r.scores.items():
            values = (f"{scores[a].vs_best:.3f}" for a in aspects)
            lines.append(",".join([r.key, f'"{method}"', *values]))
    return "\n".join(lines) + "\n"


def subset(images: list[data.FixationImage], limit: int | None) -> list[data.FixationImage]:
    """Every k-th image, so a small limit still spans the datasets."""
    if not limit or limit >= len(images):
        return images
    return images[:: len(images) // limit][:limit]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    data.add_data_argument(parser)
    parser.add_argument("--model", default=DEFAULT_MODEL, help="the reference for ratios")
    parser.add_argument("--limit", type=int, default=None, help="only N held-out images")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--sheet-aspect", default="9:16")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    cv2.setNumThreads(args.threads)
    aspects = crop.DEFAULT_ASPECTS
    _, val = data.split(data.load_fixation_sets(args.data))
    images = subset(val, args.limit)
    models = [args.model, *(m for m in shipped_models() if m != args.model)]
    methods: list[peers.Peer] = [peers.Cropworker(m, args.threads) for m in models]
    found, missing = peers.load_peers()
    methods += found
    results = [evaluate_image(im, methods, aspects) for im in images]
    summary = summarise(results, aspects)
    reference = methods[0].name
    print(
        f"{len(images)} held-out images ({', '.join(sorted({im.dataset for im in images}))}), "
        f"{sum(len(im.fixations) for im in images)} fixations; "
        f"{platform.processor() or platform.machine()}\n"
    )
    print(format_tables(summary, aspects, reference))
    pairs = paired(results, aspects, reference)
    print("\n" + format_paired(pairs, aspects, reference))
    for name, why in missing.items():
        print(f"not run: {name}: {why}")
    haar = [m for m in methods if isinstance(m, peers.HaarFaces)]
    args.out.mkdir(parents=True, exist_ok=True)
    speed_path = args.out / "crop_speed.json"
    speed = json.loads(speed_path.read_text()) if speed_path.is_file() else None
    report = {
        "images": len(images),
        "fixations": int(sum(len(im.fixations) for im in images)),
        "aspects": list(aspects),
        "bad_crop_share": BAD_CROP_SHARE,
        "reference": reference,
        "methods": summary,
        "paired_vs_reference": pairs,
        "macs": {m.name: m.macs for m in methods if isinstance(m, peers.Cropworker)},
        "not_run": missing,
        "haar_images_with_faces": haar[0].with_faces if haar else None,
    }
    (args.out / "crop_quality.json").write_text(json.dumps(report, indent=1) + "\n")
    (args.out / "crop_quality_per_image.csv").write_text(per_image_csv(results, aspects))
    names = [m.name for m in methods]
    by_key = {im.key: im for im in images}
    contact_sheet(results, by_key, names, args.sheet_aspect, args.out / "crop_quality_sheet.png")
    bar = summary.get(INTER_OBSERVER, {}).get("all_aspects", {}).get("vs_best")
    plot(summary, speed, bar, args.out / "quality_vs_speed.png")
    macs = {m.name: m.macs for m in methods if isinstance(m, peers.Cropworker) and m.macs}
    rungs = [m.name for m in methods if isinstance(m, peers.Cropworker) and m.rung]
    ladder_plot(summary, macs, rungs, args.out / "ladder.png")
    if haar:
        print(f"Haar cascade found faces in {haar[0].with_faces} of {haar[0].images} images")
    print(
        f"\nwrote {args.out}/: crop_quality.json, crop_quality_per_image.csv, "
        "crop_quality_sheet.png, quality_vs_speed.png, ladder.png"
    )


if __name__ == "__main__":
    main()

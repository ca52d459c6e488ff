"""The `cropworker` command line.

    cropworker crop IMAGE... [--aspect 16:9,1:1,4:5,9:16] [--keep X,Y[,W,H]]... [--json]
                   [--saliency-dir DIR] [--draw DIR]
    cropworker run [--brokers HOST:PORT] [--input-topic T] ...   the streaming worker (Kafka)
    cropworker demo [--samples DIR] [--out DIR] [--follow]      the worker on an embedded broker
    cropworker build-engine MODEL --out ENGINE --max-batch N [--fp16]   a TensorRT engine (GPU)

`crop`: a bad image gives an error line for that image (and a non-zero exit status at the end);
the other images are still processed. `run` and `demo` take every setting of
`cropworker.stream.settings.Settings` as a flag and as a `CROPWORKER_*` environment variable.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from . import crop, report
from .backend import DEFAULT_MODEL, OnnxBackend
from .decode import DecodedImage, decode_preview
from .errors import CropworkerError, ImageError, KeepError
from .pipeline import Cropper, CropRequest, CropResult
from .stream import app, demo, logs
from .stream import settings as stream_settings

PREVIEW_SIDE = 960
EXIT_IMAGE_ERRORS = 1


def _env(name: str, default: str) -> str:
    return stream_settings.env(name, default)


@dataclass
class Outcome:
    """One image's result or the reason it was rejected."""

    image: str
    result: CropResult | None = None
    decoded: DecodedImage | None = None
    error: CropworkerError | OSError | None = None
    data: bytes = b""

    def to_json(self) -> dict[str, Any]:
        if self.result is not None:
            return self.result.to_json(self.image)
        code = self.error.code if isinstance(self.error, CropworkerError) else "unreadable"
        return {"image": self.image, "error": {"type": code, "message": str(self.error)}}


def run_crops(
    cropper: Cropper, paths: Sequence[str], keep: Sequence[crop.Box] = ()
) -> Iterator[Outcome]:
    """Crop the images at `paths`, in order, decoding and inferring up to a batch at a time;
    every crop must contain the `keep` regions (an image they do not fit in is an error)."""
    request = CropRequest(keep=tuple(keep))
    for start in range(0, len(paths), cropper.max_batch):
        pending = []
        for path in paths[start : start + cropper.max_batch]:
            outcome = Outcome(path)
            try:
                outcome.data = Path(path).read_bytes()
                decoded = cropper.decode(outcome.data)
                crop.check_keep(keep, decoded.width, decoded.height)
                outcome.decoded = decoded
            except (ImageError, KeepError, OSError) as exc:
                outcome.error = exc
            pending.append(outcome)
        good = [o for o in pending if o.decoded is not None]
        images = [o.decoded for o in good if o.decoded]
        for outcome, result in zip(
            good, cropper.crop_decoded(images, [request] * len(images)), strict=True
        ):
            outcome.result = result
        yield from pending


def format_text(outcome: Outcome) -> str:
    if outcome.result is None:
        return f"{outcome.image}: error: {outcome.to_json()['error']['message']}"
    r = outcome.result
    boxes = "  ".join(f"{name} {x},{y},{w}x{h}" for name, (x, y, w, h) in r.crops.items())
    kept = "".join(f"  keep {name} {status}" for name, status in (r.keep or {}).items())
    return f"{outcome.image} {r.width}x{r.height}  {boxes}{kept}"


def draw(outcome: Outcome, out_dir: Path, limits: Any, keep: Sequence[crop.Box] = ()) -> str:
    assert outcome.result is not None
    preview = decode_preview(outcome.data, PREVIEW_SIDE, limits)
    picture = report.render(preview, outcome.result, keep)
    name = f"{Path(outcome.image).stem}.jpg"
    out_dir.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out_dir / name), picture, [cv2.IMWRITE_JPEG_QUALITY, 88])
    return name


def crop_command(args: argparse.Namespace) -> int:
    cropper = Cropper(OnnxBackend(args.model, threads=args.threads), aspects=args.aspect)
    failures, entries = 0, []
    for outcome in run_crops(cropper, args.images, args.keep):
        record = outcome.to_json()
        print(json.dumps(record) if args.json else format_text(outcome), flush=True)
        if outcome.result is None:
            failures += 1
            continue
        if args.saliency_dir:
            args.saliency_dir.mkdir(parents=True, exist_ok=True)
            np.save(args.saliency_dir / f"{Path(outcome.image).stem}.npy", outcome.result.saliency)
        if args.draw:
            entries.append(
                (outcome.image, draw(outcome, args.draw, cropper.limits, args.keep), record)
            )
    if args.draw and entries:
        print(f"report: {report.write_html(args.draw, entries)}", file=sys.stderr)
    if failures:
        print(f"{failures} of {len(args.images)} images failed", file=sys.stderr)
    return EXIT_IMAGE_ERRORS if failures else 0


def run_command(args: argparse.Namespace) -> int:
    settings = stream_settings.from_namespace(args)
    logs.configure(settings.log_format, settings.log_level)
    return app.serve(settings)


def demo_command(args: argparse.Namespace) -> int:
    settings = stream_settings.from_namespace(args)
    logs.configure(settings.log_format, settings.log_level)
    return demo.run_demo(settings)


def build_engine_command(args: argparse.Namespace) -> int:
    from .gpu.engine import BuildOptions, build_engine

    options = BuildOptions(
        max_batch=args.max_batch,
        opt_batch=args.opt_batch,
        fp16=args.fp16,
        timing_cache=args.timing_cache,
        workspace_mib=args.workspace_mib,
        version_compatible=args.version_compatible,
    )
    sidecar = build_engine(args.onnx, args.out, options)
    print(json.dumps(sidecar.to_json(), indent=2))
    return 0


def parse_aspects(text: str) -> list[str]:
    try:
        return list(stream_settings.parse_aspects(text))
    except CropworkerError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def parse_keep(text: str) -> crop.Box:
    try:
        return crop.keep_region([float(v) for v in text.split(",")])
    except ValueError as exc:  # float() of a non-number, or a KeepError
        raise argparse.ArgumentTypeError(f"--keep takes X,Y,W,H or X,Y: {exc}") from exc


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cropworker", description="Saliency-based auto-cropping.")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--model",
        default=_env("MODEL", DEFAULT_MODEL),
        help="fast, default or large (the ladder, by cost), vanilla, or an .onnx path; student "
        "is fast (env CROPWORKER_MODEL; default %(default)s)",
    )
    common.add_argument(
        "--threads",
        type=int,
        default=int(_env("THREADS", "1")),
        help="inference threads (env CROPWORKER_THREADS; default %(default)s)",
    )
    common.add_argument(
        "--aspect",
        type=parse_aspects,
        default=parse_aspects(_env("ASPECTS", ",".join(crop.DEFAULT_ASPECTS))),
        help="comma-separated W:H list (env CROPWORKER_ASPECTS; default "
        + ",".join(crop.DEFAULT_ASPECTS)
        + ")",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("crop", parents=[common], help="crop image files")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument(
        "--keep",
        type=parse_keep,
        action="append",
        default=[],
        metavar="X,Y[,W,H]",
        help="a region every crop must contain: a box X,Y,W,H or a point X,Y in pixels of the "
        "image as displayed (EXIF orientation applied); repeat for more; applies to each IMAGE. "
        "Where no crop of an aspect can hold them all it holds the most of their area and says "
        "'keep ASPECT partial' (else 'all'); a region outside the image is that image's error",
    )
    p.add_argument("--json", action="store_true", help="one JSON object per line per image")
    p.add_argument("--saliency-dir", type=Path, help="write each saliency map as STEM.npy")
    p.add_argument(
        "--draw", type=Path, help="write pictures with heat map and boxes, and index.html"
    )
    p.set_defaults(func=crop_command)
    r = sub.add_parser(
        "run", help="the streaming worker: consume upload events, publish crop results"
    )
    stream_settings.add_arguments(r, stream_settings.Settings.from_env())
    r.set_defaults(func=run_command)
    d = sub.add_parser(
        "demo",
        help="the worker on an embedded broker: upload the samples, print results, write a report",
    )
    demo_defaults = stream_settings.Settings.from_env(**stream_settings.DEMO_DEFAULTS)
    stream_settings.add_arguments(d, demo_defaults, demo=True)
    d.set_defaults(func=demo_command)
    e = sub.add_parser(
        "build-engine",
        help="compile an ONNX model into a TensorRT engine and its sidecar (needs a GPU and the "
        "full tensorrt package)",
    )
    e.add_argument("onnx", metavar="MODEL", help="an .onnx path or a shipped model name")
    e.add_argument("--out", type=Path, required=True, metavar="ENGINE", help="engine file")
    e.add_argument("--max-batch", type=int, required=True, help="largest micro-batch")
    e.add_argument("--opt-batch", type=int, help="batch to tune for (default: --max-batch)")
    e.add_argument("--fp16", action="store_true", help="build from an FP16 conversion")
    e.add_argument(
        "--timing-cache", type=Path, help="default: tensorrt-timing.cache next to the engine"
    )
    e.add_argument("--workspace-mib", type=int, help="builder workspace limit")
    e.add_argument(
        "--no-version-compatible",
        dest="version_compatible",
        action="store_false",
        help="a plan only this exact TensorRT can load (not the lean runtime)",
    )
    e.set_defaults(func=build_engine_command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    try:
        args = build_parser().parse_args(argv)
        code: int = args.func(args)
    except CropworkerError as exc:
        print(f"cropworker: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())

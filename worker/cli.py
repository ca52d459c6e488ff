"""The `cropworker` command line.

    cropworker crop IMAGE... [--aspect 16:9,1:1,4:5,9:16] [--keep X,Y[,W,H]]... [--json]
                   [--saliency-dir DIR] [--draw DIR]
    cropworker run [--brokers HOST:PORT] [--input-topic T] ...   the streaming worker (Kafka)
    cropworker demo [--samples DIR] [--out DIR] [--follow]      the worker on an embedded broker
    cropworker build-engine MODEL --out ENGINE --max-batch N [--fp16]   a TensorRT engine (GPU)

`crop`: a bad image gives an error line for that image (and a non-zero exit status at the end);
the other images are still processed. `run` and `demo` take every setting of
`cropworker.stream.settings.Settings` as a flag and as a `CROPWORKER_*` environment variable.

Each command reads only its own variables (`crop`: CROPWORKER_MODEL, _THREADS, _ASPECTS), so a
bad variable of the streaming worker cannot break `crop`; a bad value is one error line naming
the variable, exit status 2. Only `run` and `demo` import the streaming worker, and with it the
Kafka client library.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from . import crop, env, report
from .backend import DEFAULT_MODEL, OnnxBackend
from .decode import DecodedImage, decode_preview
from .errors import CropworkerError, ImageError, KeepError
from .pipeline import Cropper, CropRequest, CropResult

PREVIEW_SIDE = 960
EXIT_IMAGE_ERRORS = 1


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
    from .stream import app, logs
    from .stream import settings as stream_settings

    settings = stream_settings.from_namespace(args)
    logs.configure(settings.log_format, settings.log_level)
    return app.serve(settings)


def demo_command(args: argparse.Namespace) -> int:
    from .demo import run as demo
    from .stream import logs
    from .stream import settings as stream_settings

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


def parse_keep(text: str) -> crop.Box:
    try:
        return crop.keep_region([float(v) for v in text.split(",")])
    except ValueError as exc:  # float() of a non-number, or a KeepError
        raise argparse.ArgumentTypeError(f"--keep takes X,Y,W,H or X,Y: {exc}") from exc


def _crop_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        default=env.read("MODEL", str, DEFAULT_MODEL),
        help="fast, default or large (the ladder, by cost), vanilla, or an .onnx path; student "
        "is fast (env CROPWORKER_MODEL; default %(default)s)",
    )
    p.add_argument(
        "--threads",
        type=env.argument_type("threads", env.positive_int),
        default=env.read("THREADS", env.positive_int, 1),
        help="inference threads (env CROPWORKER_THREADS; default %(default)s)",
    )
    aspects: tuple[str, ...] = env.read("ASPECTS", env.parse_aspects, crop.DEFAULT_ASPECTS)
    p.add_argument(
        "--aspect",
        type=env.argument_type("aspects", env.parse_aspects),
        default=aspects,
        help=f"comma-separated W:H list (env CROPWORKER_ASPECTS; default {','.join(aspects)})",
    )
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


def _run_arguments(p: argparse.ArgumentParser) -> None:
    from .stream import settings as stream_settings

    stream_settings.add_arguments(p, stream_settings.Settings.from_env())


def _demo_arguments(p: argparse.ArgumentParser) -> None:
    from .stream import settings as stream_settings

    defaults = stream_settings.Settings.from_env(**stream_settings.DEMO_DEFAULTS)
    stream_settings.add_arguments(p, defaults, demo=True)


def _build_engine_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("onnx", metavar="MODEL", help="an .onnx path or a shipped model name")
    p.add_argument("--out", type=Path, required=True, metavar="ENGINE", help="engine file")
    p.add_argument("--max-batch", type=int, required=True, help="largest micro-batch")
    p.add_argument("--opt-batch", type=int, help="batch to tune for (default: --max-batch)")
    p.add_argument("--fp16", action="store_true", help="build from an FP16 conversion")
    p.add_argument(
        "--timing-cache", type=Path, help="default: tensorrt-timing.cache next to the engine"
    )
    p.add_argument("--workspace-mib", type=int, help="builder workspace limit")
    p.add_argument(
        "--no-version-compatible",
        dest="version_compatible",
        action="store_false",
        help="a plan only this exact TensorRT can load (not the lean runtime)",
    )


Command = Callable[[argparse.Namespace], int]
# name: (help, adds its arguments, runs it)
COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Command]] = {
    "crop": ("crop image files", _crop_arguments, crop_command),
    "run": (
        "the streaming worker: consume upload events, publish crop results",
        _run_arguments,
        run_command,
    ),
    "demo": (
        "the worker on an embedded broker: upload the samples, print results, write a report",
        _demo_arguments,
        demo_command,
    ),
    "build-engine": (
        "compile an ONNX model into a TensorRT engine and its sidecar (needs a GPU and the full "
        "tensorrt package)",
        _build_engine_arguments,
        build_engine_command,
    ),
}


def build_parser(command: str | None) -> argparse.ArgumentParser:
    """The parser of every command, with the arguments of `command` only. Flag defaults come
    from `CROPWORKER_*` variables, so only the chosen command's variables are read: a bad one
    of another command cannot break it, and only `run` and `demo` load the streaming worker."""
    parser = argparse.ArgumentParser(prog="cropworker", description="Saliency-based auto-cropping.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, add_arguments, func) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text)
        if name == command:
            add_arguments(p)
        p.set_defaults(func=func)
    return parser


def command_of(argv: Sequence[str]) -> str | None:
    """The command `argv` names: its first word that is not an option (the top level has no
    option that takes a value)."""
    return next((word for word in argv if not word.startswith("-")), None)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = build_parser(command_of(argv)).parse_args(argv)
        code: int = args.func(args)
    except CropworkerError as exc:
        print(f"cropworker: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())

"""Per-image crop speed: decode + saliency + crop, on a 1200x900 and a 4000x3000 JPEG.

Every method runs in this one process, one after the other on the same bytes, each with the
same thread count (ONNX Runtime, OpenCV, libvips): cropworker with every shipped model, the peers
of `peers.py` (libvips smartcrop attention and entropy, smartcrop.py, spectral-residual
saliency, Haar faces with a centre fallback, the plain centre crop), each choosing the largest
box for the four default aspects from the encoded bytes, and the full JPEG decode alone: the
floor any method that looks at the pixels pays. Medians of repeated runs; ratios to the
`--model` cropworker. Writes `results/crop_speed.json` (read by `crop_quality.py` for its plot).

    python benchmarks/crop_speed.py [--runs 20] [--threads 1] [--model vanilla] [--sizes 1200x900]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import peers

from cropworker import crop
from cropworker.backend import DEFAULT_MODEL, OnnxBackend, shipped_models
from cropworker.decode import decode_image
from cropworker.pipeline import Cropper

RESULTS = Path(__file__).resolve().parent / "results"
SOURCE = Path(__file__).resolve().parents[1] / "samples" / "eyecrowd_036.jpg"
SIZES = ((1200, 900), (4000, 3000))
# Camera JPEGs carry sensor noise and fine detail that an upscaled 640 px photo lacks; grain of
# this strength brings the file size (and so the entropy-decoding work) to that of real photos:
# ~0.35 bytes per pixel at quality 90.
GRAIN_SIGMA = 5.0


def camera_like_jpeg(width: int, height: int, seed: int = 0) -> bytes:
    source = cv2.imread(str(SOURCE), cv2.IMREAD_COLOR)
    big = cv2.resize(source, (width, height), interpolation=cv2.INTER_CUBIC).astype(np.float32)
    grain = np.random.default_rng(seed).normal(0, GRAIN_SIGMA, big.shape[:2])[:, :, None]
    noisy = np.clip(big + grain, 0, 255).astype(np.uint8)
    ok, encoded = cv2.imencode(".jpg", noisy, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return encoded.tobytes()


def median_ms(fn: Callable[[], object], runs: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def measure(
    data: bytes, reference: Cropper, others: list[peers.Peer], runs: int
) -> tuple[dict[str, float], dict[str, float]]:
    """({method: ms}, {stage of the reference cropworker: ms}) for one encoded image."""
    backend = reference.backend
    decoded = reference.decode(data)
    saliency = np.exp(backend.infer(decoded.rgb[None])[0])
    buffer = np.frombuffer(data, np.uint8)
    methods = {
        f"cropworker {backend.info.tag}": median_ms(lambda: reference.crop(data), runs),
        "floor: full JPEG decode alone (OpenCV)": median_ms(
            lambda: cv2.imdecode(buffer, cv2.IMREAD_COLOR), runs
        ),
    }
    for peer in others:
        methods[peer.name] = median_ms(partial(peer.crops, data, crop.DEFAULT_ASPECTS), runs)
    stages = {
        "decode (DCT-reduced, oriented, resized)": median_ms(
            lambda: decode_image(data, backend.info.long_side), runs
        ),
        "saliency network": median_ms(lambda: backend.infer(decoded.rgb[None]), runs),
        "crop geometry (4 aspects + points)": median_ms(
            lambda: (
                crop.crops(saliency, decoded.width, decoded.height, reference.aspects),
                crop.salient_points(saliency, decoded.width, decoded.height),
            ),
            runs,
        ),
    }
    return methods, stages


def thumbnail_attention_ms(data: bytes, runs: int) -> float | None:
    """libvips as sharp and imgproxy deploy it for thumbnails: shrink-on-load to 512 px, then
    attention, for one aspect (its box is in the thumbnail, so it is not a peer here)."""
    try:
        import pyvips
    except (ImportError, OSError):
        return None
    return median_ms(
        lambda: pyvips.Image.thumbnail_buffer(data, 512, height=512, crop="attention"), runs
    )


def set_threads(threads: int) -> None:
    """The same thread count for every library that would otherwise take all cores."""
    cv2.setNumThreads(threads)
    try:
        import pyvips

        pyvips.concurrency_set(threads)
    except (ImportError, OSError):
        pass


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--model", default=DEFAULT_MODEL, help="the reference for ratios")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--sizes", default=",".join(f"{w}x{h}" for w, h in SIZES), help="JPEG sizes, WxH,..."
    )
    args = parser.parse_args(argv)
    sizes = [tuple(int(v) for v in size.split("x")) for size in args.sizes.split(",")]
    set_threads(args.threads)
    reference = Cropper(OnnxBackend(args.model, threads=args.threads))
    others: list[peers.Peer] = [
        peers.Cropworker(m, args.threads) for m in shipped_models() if m != args.model
    ]
    found, missing = peers.load_peers()
    others += found
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    print(
        f"reference cropworker {reference.backend.info.tag}; {args.threads} thread(s) for ONNX "
        f"Runtime, OpenCV and libvips; {machine}; median of {args.runs} runs; every method "
        f"returns the largest box for {', '.join(crop.DEFAULT_ASPECTS)}\n"
    )
    report: dict[str, Any] = {"machine": machine, "threads": args.threads, "runs": args.runs}
    report.update(methods={}, cropworker_stages={}, jpeg_bytes={}, not_run=missing)
    for width, height in sizes:
        data = camera_like_jpeg(width, height)
        methods, stages = measure(data, reference, others, args.runs)
        thumbnail = thumbnail_attention_ms(data, args.runs)
        size = f"{width}x{height}"
        report["methods"][size], report["cropworker_stages"][size] = methods, stages
        report["jpeg_bytes"][size] = len(data)
        ours = next(iter(methods.values()))
        print(f"{size} JPEG ({len(data) / 1e6:.2f} MB)")
        print(f"  {'method':<62} {'ms':>8} {'x cropworker':>13}")
        for name, ms in methods.items():
            print(f"  {name:<62} {ms:8.1f} {ms / ours:13.2f}")
            if name.startswith(f"cropworker {reference.backend.info.tag}"):
                for stage, stage_ms in stages.items():
                    print(f"  {'  of which ' + stage:<62} {stage_ms:8.1f} {stage_ms / ours:13.2f}")
        if thumbnail is not None:
            name = "(libvips thumbnail 512 + attention: 1 aspect, shrink-on-load)"
            print(f"  {name:<62} {thumbnail:8.1f} {thumbnail / ours:13.2f}")
            report.setdefault("libvips_thumbnail_attention_1_aspect", {})[size] = thumbnail
        print()
    for name, why in missing.items():
        print(f"not run: {name}: {why}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "crop_speed.json").write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()

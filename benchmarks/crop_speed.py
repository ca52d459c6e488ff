"""Per-image crop speed: decode + saliency + crop, on a 1200x900 and a 4000x3000 JPEG.

Measured side by side in one process, medians of repeated runs, with the JPEG decode alone (the
floor any cropper pays) and libvips `smartcrop` attention (the most deployed smart crop, inside
sharp and imgproxy) when pyvips and libvips are installed (`apt-get install libvips42`,
`pip install pyvips`).

    python benchmarks/crop_speed.py [--runs 30] [--threads 1]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from cropworker import crop
from cropworker.backend import OnnxBackend
from cropworker.decode import decode_image
from cropworker.pipeline import Cropper

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


def measure(data: bytes, cropper: Cropper, runs: int) -> dict[str, float]:
    backend = cropper.backend
    decoded = cropper.decode(data)
    logp = backend.infer(decoded.rgb[None])[0]
    saliency = np.exp(logp)
    buffer = np.frombuffer(data, np.uint8)
    results = {
        "cropworker: decode + saliency + crop": median_ms(lambda: cropper.crop(data), runs),
        "  of which decode (DCT-reduced, oriented, resized)": median_ms(
            lambda: decode_image(data, backend.info.long_side), runs
        ),
        "  of which saliency network": median_ms(lambda: backend.infer(decoded.rgb[None]), runs),
        "  of which crop geometry (4 aspects + points)": median_ms(
            lambda: (
                crop.crops(saliency, decoded.width, decoded.height, cropper.aspects),
                crop.salient_points(saliency, decoded.width, decoded.height),
            ),
            runs,
        ),
        "floor: full JPEG decode alone (OpenCV)": median_ms(
            lambda: cv2.imdecode(buffer, cv2.IMREAD_COLOR), runs
        ),
    }
    try:
        import pyvips
    except (ImportError, OSError):
        return results
    w, h = crop.box_size(decoded.width, decoded.height, 1.0)
    results["libvips smartcrop attention (full-size decode)"] = median_ms(
        lambda: (
            pyvips.Image.new_from_buffer(data, "")
            .smartcrop(w, h, interesting="attention")
            .copy_memory()
        ),
        runs,
    )
    results["libvips thumbnail 512 px, crop=attention (shrink-on-load)"] = median_ms(
        lambda: pyvips.Image.thumbnail_buffer(
            data, 512, height=512, crop="attention"
        ).copy_memory(),
        runs,
    )
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--model", default="vanilla")
    args = parser.parse_args(argv)
    cv2.setNumThreads(1)
    cropper = Cropper(OnnxBackend(args.model, threads=args.threads))
    print(
        f"model {cropper.backend.info.tag}, ONNX Runtime {args.threads} thread(s), "
        f"{platform.processor() or platform.machine()}, median of {args.runs} runs\n"
    )
    for width, height in SIZES:
        data = camera_like_jpeg(width, height)
        results = measure(data, cropper, args.runs)
        ours = results["cropworker: decode + saliency + crop"]
        print(f"{width}x{height} JPEG ({len(data) / 1e6:.2f} MB)")
        print(f"  {'method':<62} {'ms':>8} {'x cropworker':>13}")
        for name, ms in results.items():
            print(f"  {name:<62} {ms:8.1f} {ms / ours:13.2f}")
        print()


if __name__ == "__main__":
    main()

"""Cost of each shipped model: MACs, file size, and ONNX Runtime time per image at batch 1 and 8
with 1 and 2 threads, each at the model's own input for a 4:3 photo, measured in one run, with
ratios to the `--model` one (a shipped name or an .onnx path, measured too if not shipped).
Writes `results/model_cost.json`.

    python benchmarks/model_cost.py [--runs 40] [--model vanilla] [--also old.onnx ...]

Earlier versions come from git history, e.g. `git show 90f4a0d:models/zoo/student.onnx`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

from cropworker.backend import DEFAULT_MODEL, OnnxBackend, resolve_model, shipped_models

RESULTS = Path(__file__).resolve().parent / "results"


def ms_per_image(backend: OnnxBackend, shape: tuple[int, int], batch: int, runs: int) -> float:
    width, height = shape
    x = np.random.default_rng(0).integers(0, 256, (batch, height, width, 3), dtype=np.uint8)
    backend.warm_up([shape], batch)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        backend.infer(x)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times) / batch


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--model", default=DEFAULT_MODEL, help="the reference for ratios")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--also",
        nargs="*",
        default=[],
        help=".onnx files measured in the same run (earlier versions)",
    )
    args = parser.parse_args(argv)
    rows: dict[str, dict[str, float | str]] = {}
    names = [args.model, *(m for m in shipped_models() if m != args.model), *args.also]
    for name in names:
        row: dict[str, float | str] = {}
        for threads in (1, 2):
            backend = OnnxBackend(name, threads=threads)
            meta = backend.session.get_modelmeta().custom_metadata_map
            w, h = (int(v) for v in meta["macs_input"].split("x"))
            row["input"], row["macs"] = meta["macs_input"], float(meta["macs"])
            for batch in (1, 8):
                row[f"{threads}t b{batch}"] = ms_per_image(backend, (w, h), batch, args.runs)
        row["MB"] = resolve_model(name).stat().st_size / 1e6
        rows[Path(name).stem if name in args.also else name] = row
    base = rows[args.model]
    timed = ["1t b1", "1t b8", "2t b1", "2t b8"]
    print(f"ONNX Runtime CPU, ms per image (median of {args.runs}); x = ratio to {args.model}\n")
    print(
        f"{'model':<10} {'input':>8} {'M MACs':>8} {'MB':>6} " + " ".join(f"{c:>14}" for c in timed)
    )
    for name, row in rows.items():
        cells = " ".join(f"{row[c]:6.2f} ({float(row[c]) / float(base[c]):4.2f}x)" for c in timed)
        print(
            f"{name:<10} {row['input']:>8} {float(row['macs']) / 1e6:8.1f} "
            f"{float(row['MB']):6.1f} {cells}"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "model_cost.json").write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()

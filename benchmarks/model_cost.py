"""Cost of each shipped model: MACs, file size, and ONNX Runtime time per image at batch 1 and 8
with 1 and 2 threads, each at the model's own input for a 4:3 photo, measured in one run, with
ratios to the `--model` one (a shipped name or an .onnx path, measured too if not shipped).
Writes `results/model_cost.json`.

    python benchmarks/model_cost.py [--runs 40] [--model vanilla] [--also old.onnx ...]

With 1 thread the models are timed in turns, not one after another, so that ratios survive a
noisy machine; with 2 threads one after another (see `main`).

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
BLOCK = 6  # inferences per model per round, the first one not counted


def interleaved_ms(
    backends: dict[str, tuple[OnnxBackend, tuple[int, int]]], batch: int, rounds: int
) -> dict[str, float]:
    """Median ms per image of each backend at its (w, h) input, timed in turns: per round each
    runs `BLOCK` inferences in a row (the order rotating), the first of which is not counted
    (it pays for waking a thread pool another model left spinning). The machine's drift then
    hits every model alike."""
    rng = np.random.default_rng(0)
    inputs = {}
    for name, (backend, (w, h)) in backends.items():
        inputs[name] = rng.integers(0, 256, (batch, h, w, 3), dtype=np.uint8)
        backend.warm_up([(w, h)], batch)
    times: dict[str, list[float]] = {name: [] for name in backends}
    names = list(backends)
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            backend, x = backends[name][0], inputs[name]
            backend.infer(x)
            for _ in range(BLOCK - 1):
                start = time.perf_counter()
                backend.infer(x)
                times[name].append(time.perf_counter() - start)
    return {name: 1000 * statistics.median(t) / batch for name, t in times.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--runs", type=int, default=40, help=f"rounds (each times {BLOCK - 1} inferences)"
    )
    parser.add_argument("--model", default=DEFAULT_MODEL, help="the reference for ratios")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--also", nargs="*", default=[], help=".onnx files measured in the same run as well"
    )
    args = parser.parse_args(argv)
    names = [args.model, *(m for m in shipped_models() if m != args.model), *args.also]
    labels = {name: Path(name).stem if name in args.also else name for name in names}
    rows: dict[str, dict[str, float | str]] = {labels[name]: {} for name in names}
    for threads in (1, 2):
        # With 2 threads each session keeps a pool thread spinning after its runs, and several
        # sessions in one process would slow each other: those are timed one model at a time.
        for group in [names] if threads == 1 else [[name] for name in names]:
            backends = {}
            for name in group:
                backend = OnnxBackend(name, threads=threads)
                meta = backend.session.get_modelmeta().custom_metadata_map
                w, h = (int(v) for v in meta["macs_input"].split("x"))
                row = rows[labels[name]]
                row["input"], row["macs"] = meta["macs_input"], float(meta["macs"])
                row["MB"] = resolve_model(name).stat().st_size / 1e6
                backends[labels[name]] = (backend, (w, h))
            for batch in (1, 8):
                for label, ms in interleaved_ms(backends, batch, args.runs).items():
                    rows[label][f"{threads}t b{batch}"] = ms
    base = rows[args.model]
    timed = ["1t b1", "1t b8", "2t b1", "2t b8"]
    print(
        f"ONNX Runtime CPU, ms per image (median of {args.runs} x {BLOCK - 1}; 1 thread: models"
        " in turns);"
        f" x = ratio to {args.model}\n"
    )
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

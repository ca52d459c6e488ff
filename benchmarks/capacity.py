"""The capacity table: uploads/s per CPU core and per GPU, from measured results only, and the
replicas a given load needs.

    python benchmarks/capacity.py                     # prints the table; 1,000 uploads/s example
    python benchmarks/capacity.py --load 5000

Per CPU core comes from the CPU worker runs: uploads/s over the cores the workers kept busy
(`worker_throughput.json` on the development machine; `gpu_check.json`'s "worker cpu xN" stages
on the GPU machine's 16 cores). Per GPU comes from `gpu_check.json`'s "worker gpu" stage (one
GPU worker, decoding on the CPU) and its "cuda model MODEL" stages (the network alone, best
batch). A row whose run has not happened says "not measured": nothing here is estimated.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"
UTILISATION = 0.7  # each replica planned at this share of its measured rate


def rows(worker: dict[str, Any] | None, gpu: dict[str, Any] | None) -> list[dict[str, Any]]:
    """(what, uploads/s, per what, where measured) for every measured figure, else not measured."""
    out: list[dict[str, Any]] = []
    if worker:
        for d in worker["drains"]:
            if d["cores_busy"]:
                out.append(
                    {
                        "what": f"CPU worker x{d['workers']}, {worker['model']}",
                        "rate": d["rate"],
                        "unit": "core",
                        "per_unit": d["rate"] / d["cores_busy"],
                        "where": worker["machine"],
                    }
                )
    stages = (gpu or {}).get("stages", {})
    device = (gpu or {}).get("device", "")
    for name, stage in stages.items():
        if name.startswith("worker cpu") and stage.get("status") == "ok" and stage["cores_busy"]:
            out.append(
                {
                    "what": f"CPU {name.removeprefix('worker cpu ')} processes, default",
                    "rate": stage["uploads_per_s"],
                    "unit": "core",
                    "per_unit": stage["uploads_per_s"] / stage["cores_busy"],
                    "where": device,
                }
            )
    gpu_worker = stages.get("worker gpu", {})
    if gpu_worker.get("status") == "ok":
        rate = gpu_worker["uploads_per_s"]
        out.append(
            {"what": "one GPU worker, default", "rate": rate, "unit": "GPU", "per_unit": rate}
            | {"where": device}
        )
    else:
        out.append({"what": "one GPU worker", "rate": None, "unit": "GPU", "per_unit": None})
    for name, stage in stages.items():
        if name.startswith("cuda model ") and stage.get("status") == "ok":
            best = stage["fp32"]["best"]["images_per_s"]
            out.append(
                {
                    "what": f"network only, {name.removeprefix('cuda model ')} fp32 (best batch)",
                    "rate": best,
                    "unit": "GPU",
                    "per_unit": best,
                    "where": device,
                }
            )
    return out


def table(measured: list[dict[str, Any]], load: float) -> str:
    lines = [
        f"| replica | uploads/s | per {'/'.join(sorted({r['unit'] for r in measured}))} "
        f"| for {load:,.0f} uploads/s at {UTILISATION:.0%} | measured on |",
        "|---|---|---|---|---|",
    ]
    for r in measured:
        if r["per_unit"] is None:
            lines.append(f"| {r['what']} | not measured | not measured | | |")
            continue
        need = math.ceil(load / (r["per_unit"] * UTILISATION))
        lines.append(
            f"| {r['what']} | {r['rate']:.0f} | {r['per_unit']:.0f} per {r['unit']} "
            f"| {need} {r['unit']}s | {r['where']} |"
        )
    return "\n".join(lines)


def load_json(path: Path) -> dict[str, Any] | None:
    return dict(json.loads(path.read_text())) if path.exists() else None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--load", type=float, default=1000.0, help="uploads/s to size for")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    worker = load_json(args.results / "worker_throughput.json")
    gpu = load_json(args.results / "gpu_check.json")
    print(table(rows(worker, gpu), args.load))


if __name__ == "__main__":
    main()

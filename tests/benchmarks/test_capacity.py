"""benchmarks/capacity.py: the table holds measured figures only and sizes a load from them."""

from __future__ import annotations

from .conftest import load

WORKER = {
    "model": "default",
    "machine": "2 cores, x86_64",
    "drains": [{"workers": 1, "rate": 240.0, "cores_busy": 1.5}],
}


def test_without_a_gpu_run_the_gpu_row_says_not_measured() -> None:
    capacity = load("capacity")
    rows = capacity.rows(WORKER, None)
    assert rows[0]["per_unit"] == 160.0 and rows[0]["unit"] == "core"
    assert rows[-1] == {"what": "one GPU worker", "rate": None, "unit": "GPU", "per_unit": None}
    text = capacity.table(rows, 1000)
    assert "| one GPU worker | not measured | not measured | | |" in text
    assert "| 9 cores |" in text  # 1000 / (160 x 0.7) = 8.9


def test_a_gpu_run_fills_per_gpu_and_per_core_rows() -> None:
    capacity = load("capacity")
    gpu = {
        "device": "1 GPU: NVIDIA H200",
        "stages": {
            "worker gpu": {"status": "ok", "uploads_per_s": 1400.0},
            "worker cpu x8": {"status": "ok", "uploads_per_s": 1600.0, "cores_busy": 10.0},
            "cuda model large": {"status": "ok", "fp32": {"best": {"images_per_s": 3000.0}}},
            "worker cpu x4": {"status": "failed"},
        },
    }
    by_what = {r["what"]: r for r in capacity.rows(None, gpu)}
    assert by_what["one GPU worker, default"]["per_unit"] == 1400.0
    assert by_what["CPU x8 processes, default"]["per_unit"] == 160.0
    assert by_what["network only, large fp32 (best batch)"]["rate"] == 3000.0
    assert "| 2 GPUs |" in capacity.table(list(by_what.values()), 1000)  # 1000 / (1400 x 0.7)

"""The benchmark scripts end to end on tiny inputs, and the throughput report's arithmetic."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cropworker.backend import LADDER, OnnxBackend
from tests.images import DATA

from .conftest import load


@pytest.mark.slow
def test_crop_speed_writes_every_method(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    crop_speed = load("crop_speed")
    crop_speed.main(["--runs", "1", "--sizes", "320x240", "--out", str(tmp_path)])
    report = json.loads((tmp_path / "crop_speed.json").read_text())
    methods = report["methods"]["320x240"]
    reference = f"cropworker {OnnxBackend().info.tag}"  # the default model is the reference
    assert next(iter(methods)) == reference
    assert "floor: full JPEG decode alone (OpenCV)" in methods and "centre" in methods
    assert all(ms > 0 for name, ms in methods.items() if name != "centre")
    assert reference in capsys.readouterr().out


@pytest.mark.slow
def test_crop_quality_writes_report_sheet_and_plot(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    crop_quality = load("crop_quality")
    crop_quality.main(["--data", str(DATA), "--limit", "3", "--out", str(tmp_path)])
    report = json.loads((tmp_path / "crop_quality.json").read_text())
    assert report["images"] == 3 and report["reference"] == f"cropworker {OnnxBackend().info.tag}"
    for method in report["methods"].values():
        for aspect in report["aspects"]:
            assert 0 <= method["aspects"][aspect]["vs_best"] <= 1
    # every other method paired against the reference on the same images, with its interval
    paired = report["paired_vs_reference"]
    assert set(paired) == set(report["methods"]) - {report["reference"]}
    for pair in paired.values():
        low, high = pair["all_aspects"]["interval"]
        assert low - 1e-9 <= pair["all_aspects"]["points"] <= high + 1e-9
    rows = (tmp_path / "crop_quality_per_image.csv").read_text().splitlines()
    assert len(rows) == 1 + 3 * len(report["methods"])
    assert (tmp_path / "crop_quality_sheet.png").stat().st_size > 10_000
    assert (tmp_path / "quality_vs_speed.png").stat().st_size > 10_000
    assert (tmp_path / "ladder.png").stat().st_size > 10_000
    macs = report["macs"]  # every rung of the ladder ran, with its cost as served
    for rung in LADDER:
        assert macs[f"cropworker {OnnxBackend(rung).info.tag}"] > 0
    assert "inter-observer" in capsys.readouterr().out


def test_capacity_rounds_replicas_up() -> None:
    worker_throughput = load("worker_throughput")
    # 10 M a day at a peak 3x the average is 347.2/s; a replica carrying 0.7 * 50 = 35/s
    replicas = worker_throughput.capacity(50.0, peak_to_average=3.0, utilisation=0.7)
    assert replicas == {1_000_000: 1, 10_000_000: 10, 100_000_000: 100}


def test_offered_rates_add_half_the_target_only_when_a_worker_carries_it() -> None:
    worker_throughput = load("worker_throughput")
    assert worker_throughput.offered_rates(100.0, [0.5, 0.9]) == [50.0, 75.0, 90.0]
    assert worker_throughput.offered_rates(60.0, [0.5]) == [30.0]


def test_report_formats_measured_and_unmeasured_rows() -> None:
    worker_throughput = load("worker_throughput")
    drain = worker_throughput.Drain("batch8", 1, 8, 100, 60.0, 6.5, 0.9, [200.0, 201.0])
    steady = worker_throughput.Steady(30.0, 29.5, 40.0, 80.0, 120.0, 35.0)
    report = {
        "model": "vanilla",
        "machine": "2 cores",
        "load_average": 0.5,
        "backlog": 100,
        "steady_s": 5.0,
        "drains": [drain.__dict__],
        "scaling": None,
        "sustained": 60.0,
        "steady": [steady.__dict__],
        "peak_to_average": 3.0,
        "utilisation": 0.7,
        "capacity": [
            {
                "replica": "cpu",
                "rate": 60.0,
                "replicas": {"1000000": 1, "10000000": 9, "100000000": 83},
            },
            {"replica": "gpu", "rate": 0.0, "replicas": {}},
        ],
    }
    text = worker_throughput.format_report(report)
    assert "60.0" in text and "flat" in text and "not measured" in text
    assert "0.48" in text  # p99 120 ms against the 250 ms target


def test_fault_recovery_waits_for_the_slowest_partition() -> None:
    faults = load("faults")
    tally = faults.Tally("127.0.0.1:1", faults.Topics("in", "out", "dead"))  # never started
    tally.inputs = {"a": 0, "b": 1, "c": 1, "old": 2}
    tally.first = {"a": 12.0, "b": 15.0, "c": 11.0, "old": 9.0}
    sent_at = {"a": 10.5, "b": 10.2, "c": 10.1, "old": 5.0}
    # after 10.0: partition 0 answered at 12, partition 1 at 11; partition 2 got nothing new
    assert faults.recovery(tally, sent_at, 10.0) == 2.0
    assert faults.recovery(tally, sent_at, 20.0) is None


def test_fault_report_is_a_table_with_every_scenario() -> None:
    faults = load("faults")
    outcome = faults.Outcome("broker-stall", 100, 102, 0, 2, 0, 8.0, 3.5, checks={"lost": 4})
    hung = faults.Outcome("slow-batch", 100, 100, 1, 0, 0, 8.0, None, hung=True)
    report = {
        "date": "2026-11-29",
        "args": ["--uploads", "100"],
        "uploads": 100,
        "rate": 10.0,
        "fault_s": 8.0,
        "machine": "2 cores",
        "load_average": 1.0,
        "outcomes": [outcome.__dict__, hung.__dict__],
    }
    text = faults.format_report(report)
    assert "| broker-stall | 100 | 102 | 0 | 2 | 8.0 | 3.5 | ok | lost: 4 |" in text
    assert "| slow-batch | 100 | 100 | 1 | 0 | 8.0 | - | hung |  |" in text

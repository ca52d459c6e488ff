"""benchmarks/gpu_check.py end to end with the fake modules and PyTorch on the CPU standing in
for CUDA: GPU time is scarce, so the script must not fail there on a Python mistake. The figures
are the CPU's and the fakes', not a GPU's."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType
from typing import Any

import cv2
import numpy as np
import pytest

from tests.benchmarks.conftest import load

from .fakes import FakeCudart, FakeTensorRT, cudaError_t


@pytest.fixture(scope="module")
def gpu_check() -> ModuleType:
    return load("gpu_check")


def cpu_torch(model: str, precision: str) -> Any:
    """The CUDA backend's own code, on the CPU."""
    from cropworker.gpu.torch_backend import TorchBackend

    return TorchBackend(model, device="cpu", precision=precision)


class OpenCvCodec:
    """nvImageCodec's decode calls, answered by OpenCV."""

    NVIMGCODEC_DEVICE_CPU_ONLY = -99

    class ColorSpec:
        SRGB = 1

    class SampleFormat:
        I_RGB = 10

    def DecodeParams(self, **params: Any) -> dict[str, Any]:
        return params

    def Decoder(self, **options: Any) -> Any:
        class Image:
            def __init__(self, rgb: np.ndarray) -> None:
                self.rgb = rgb

            def cpu(self) -> np.ndarray:
                return self.rgb

        class Decoder:
            def decode(self, data: bytes, params: Any) -> Image:
                bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
                return Image(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))

        return Decoder()


@pytest.mark.broker
def test_every_stage_runs(gpu_check: ModuleType, tmp_path: Path) -> None:
    pytest.importorskip("torch")
    cudart = FakeCudart()
    status = gpu_check.run(
        tmp_path,
        budget_s=600,
        max_batch=4,
        cudart=cudart,
        tensorrt=FakeTensorRT(cudart),
        nvimgcodec=OpenCvCodec(),
        copy_bytes=1 << 20,
        backends=cpu_torch,
        models=("fast",),
        cuda_batches=(1, 2),
        gpu_worker_env={"CROPWORKER_BACKEND": "cpu"},  # the worker stage's code, on the CPU
        cpu_processes=(1,),
        backlog=24,
        steady_s=1.0,
    )
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    stages = report["stages"]
    assert stages["cuda plumbing"]["status"] == "ok"
    fast = stages["cuda model fast"]
    assert fast["status"] == "ok", fast
    assert set(fast["fp32"]["images_per_s_by_batch"]) == {"1", "2"}
    assert fast["fp32"]["within_tolerance"] and fast["fp32"]["photos"] == len(gpu_check.SAMPLES)
    assert fast["fp32"]["same_crops"] == len(gpu_check.SAMPLES)
    assert fast["fp16"]["max_abs_log_density_diff"] > gpu_check.TOLERANCE  # reported, not held
    assert set(stages["gpu decode"]["per_size"]) == {"1200x900", "4000x3000"}
    assert stages["gpu decode (torchvision)"]["status"] == "skipped"  # no CUDA for torch here
    for name in ("worker gpu", "worker cpu x1"):
        worker = stages[name]
        assert worker["status"] == "ok", worker
        assert worker["uploads_per_s"] > 0 and worker["p99_ms"] > 0
        assert worker["decode_s"] > 0 and worker["network_s"] > 0
    assert set(stages["tensorrt build"]["engines"]) == {"fp32", "fp16"}
    speed = stages["tensorrt fp16 speed"]
    assert set(speed["images_per_s_by_batch"]) == {"1", "2", "4"}
    assert stages["tensorrt fp32 vs onnxruntime"]["photos"] == len(gpu_check.SAMPLES)
    assert stages["onnxruntime cuda"]["status"] in {"ok", "skipped"}
    assert report["targets"]["cuda model fast fp32 within 0.001"] is True
    assert status == (0 if all(report["targets"].values()) else 1), report["targets"]
    assert "GPU check" in (tmp_path / "gpu_check.md").read_text()
    assert cudart.fake_host == {} and cudart.fake_device == {}  # everything freed


def test_the_targets_read_what_ran(gpu_check: ModuleType) -> None:
    ok = {"within_tolerance": True, "best": {"batch": 64, "images_per_s": 2500.0}}
    slow = {"within_tolerance": False, "best": {"batch": 64, "images_per_s": 900.0}}
    stages = {
        "cuda plumbing": {"status": "ok"},
        "cuda model large": {"status": "ok", "fp32": ok, "fp16": slow},
        "cuda model fast": {"status": "ok", "fp32": slow, "fp16": ok},
        "cuda model vanilla": {"status": "failed"},
        "worker gpu": {"status": "ok", "network_over_decode": 0.35},
    }
    assert gpu_check.targets(stages) == {
        "cuda model large fp32 within 0.001": True,
        "cuda model fast fp32 within 0.001": False,
        "large fp32 >= 2000 images/s": True,
        "gpu worker decode-bound (network < 20% of decode)": False,
    }


def test_no_gpu_is_status_3(gpu_check: ModuleType, tmp_path: Path) -> None:
    cudart = FakeCudart(count_error=cudaError_t.cudaErrorNoDevice)
    assert gpu_check.run(tmp_path, 60, 4, cudart=cudart) == 3
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert "cudaErrorNoDevice" in report["device"] and report["stages"] == {}


def test_an_exhausted_budget_skips_the_rest(gpu_check: ModuleType, tmp_path: Path) -> None:
    cudart = FakeCudart()
    gpu_check.run(tmp_path, 0, 4, cudart=cudart, tensorrt=FakeTensorRT(cudart), cpu_processes=())
    stages = json.loads((tmp_path / "gpu_check.json").read_text())["stages"]
    assert stages and all(s["status"] == "skipped" for s in stages.values())

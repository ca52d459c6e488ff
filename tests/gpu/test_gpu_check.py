"""benchmarks/gpu_check.py end to end with the fake modules: GPU time is scarce, so the script
must not fail there on a Python mistake. The figures are the fakes', not a GPU's."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import cv2
import numpy as np
import pytest

from .fakes import FakeCudart, FakeTensorRT, cudaError_t


@pytest.fixture(scope="module")
def gpu_check() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gpu_check", "benchmarks/gpu_check.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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


def test_every_stage_runs(gpu_check: ModuleType, tmp_path: Path) -> None:
    cudart = FakeCudart()
    status = gpu_check.run(
        tmp_path,
        budget_s=300,
        max_batch=4,
        cudart=cudart,
        tensorrt=FakeTensorRT(cudart),
        nvimgcodec=OpenCvCodec(),
        copy_bytes=1 << 20,
    )
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    stages = report["stages"]
    assert status == 0, stages
    assert stages["cuda plumbing"]["status"] == "ok"
    assert set(stages["tensorrt build"]["engines"]) == {"fp32", "fp16"}
    speed = stages["tensorrt fp16 speed"]
    assert set(speed["images_per_s_by_batch"]) == {"1", "2", "4"}
    assert set(speed["images_per_s_by_aspect_batch4"]) == {"4:3", "16:9", "1:1", "3:4", "9:16"}
    assert stages["tensorrt fp32 vs onnxruntime"]["photos"] == len(gpu_check.SAMPLES)
    assert stages["onnxruntime cuda"]["status"] in {"ok", "skipped"}
    assert len(stages["gpu decode"]["per_image"]) == len(gpu_check.SAMPLES)
    assert "GPU check" in (tmp_path / "gpu_check.md").read_text()
    assert cudart.fake_host == {} and cudart.fake_device == {}  # everything freed


def test_no_gpu_is_status_3(gpu_check: ModuleType, tmp_path: Path) -> None:
    cudart = FakeCudart(count_error=cudaError_t.cudaErrorNoDevice)
    assert gpu_check.run(tmp_path, 60, 4, cudart=cudart) == 3
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert "cudaErrorNoDevice" in report["device"] and report["stages"] == {}


def test_an_exhausted_budget_skips_the_rest(gpu_check: ModuleType, tmp_path: Path) -> None:
    cudart = FakeCudart()
    gpu_check.run(tmp_path, 0, 4, cudart=cudart, tensorrt=FakeTensorRT(cudart))
    stages = json.loads((tmp_path / "gpu_check.json").read_text())["stages"]
    assert stages and all(s["status"] == "skipped" for s in stages.values())

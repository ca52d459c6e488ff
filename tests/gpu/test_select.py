from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cropworker.backend import ModelInfo
from cropworker.decode import DecodedImage, DecodeLimits
from cropworker.errors import EngineMismatchError, GpuUnavailableError, SettingsError
from cropworker.gpu.select import select_backend
from cropworker.stream.settings import Settings

ENGINE = Path("/engines/vanilla.engine")
INFO = ModelInfo("vanilla", "1", 256, 4)


class Stub:
    def __init__(self, kind: str) -> None:
        self.kind, self.info = kind, INFO
        self.precision = ""

    def infer(self, images: np.ndarray) -> np.ndarray:
        return np.zeros(images.shape[:3], np.float32)

    def warm_up(self, shapes: list[tuple[int, int]], batch: int = 1) -> None:
        pass


def cpu(model: str, threads: int) -> Stub:
    return Stub("cpu")


def gpu(engine: Path, model: str) -> Stub:
    return Stub("tensorrt")


def no_gpu(engine: Path, model: str) -> Stub:
    raise GpuUnavailableError("cudaGetDeviceCount failed: cudaErrorNoDevice")


def cuda(model: str, precision: str) -> Stub:
    stub = Stub("cuda")
    stub.precision = precision
    return stub


def no_cuda(model: str, precision: str) -> Stub:
    raise GpuUnavailableError("PyTorch 2.13.0+cpu (a CPU-only build) finds no usable CUDA device")


def nvjpeg(long_side: int, limits: DecodeLimits) -> Any:
    def decode(data: bytes) -> DecodedImage:
        raise AssertionError("not called here")

    return decode


def select(choice: str, engine: Path | None = ENGINE, **kw: Any) -> Any:
    return select_backend(
        choice,
        model="vanilla",
        threads=1,
        engine=engine,
        cpu=cpu,
        **{"tensorrt": gpu, "cuda": cuda, "device_present": lambda: True, **kw},
    )


@pytest.mark.parametrize(
    ("choice", "engine", "kind"),
    [
        ("cpu", ENGINE, "cpu"),
        ("auto", None, "cuda"),
        ("auto", ENGINE, "tensorrt"),  # an engine takes precedence over PyTorch
        ("tensorrt", ENGINE, "tensorrt"),
        ("cuda", None, "cuda"),
        ("cuda", ENGINE, "cuda"),
    ],
)
def test_choice(choice: str, engine: Path | None, kind: str) -> None:
    chosen = select(choice, engine)
    assert chosen.kind == kind == chosen.backend.kind
    assert chosen.fallback == "" and chosen.decoder is None


@pytest.mark.parametrize("choice", ["auto", "tensorrt"])
def test_no_gpu_falls_back_to_the_cpu(choice: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        chosen = select(choice, tensorrt=no_gpu)
    assert chosen.kind == "cpu" == chosen.backend.kind
    assert "cudaErrorNoDevice" in chosen.fallback
    assert "falling back to ONNX Runtime" in caplog.text


def test_require_gpu_fails_instead() -> None:
    with pytest.raises(GpuUnavailableError, match="cudaErrorNoDevice"):
        select("tensorrt", tensorrt=no_gpu, require_gpu=True)


def test_auto_without_a_gpu_quietly_takes_the_cpu(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        chosen = select("auto", engine=None, cuda=no_cuda)
    assert chosen.kind == "cpu" == chosen.backend.kind
    assert "CPU-only build" in chosen.fallback
    (record,) = [r for r in caplog.records if "falling back to ONNX Runtime" in r.getMessage()]
    assert record.levelno == logging.INFO


def test_an_explicit_cuda_choice_falls_back_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO):
        chosen = select("cuda", engine=None, cuda=no_cuda)
    assert chosen.kind == "cpu" == chosen.backend.kind
    (record,) = [r for r in caplog.records if "falling back to ONNX Runtime" in r.getMessage()]
    assert record.levelno == logging.WARNING


@pytest.mark.parametrize("choice", ["auto", "cuda"])
def test_require_gpu_fails_instead_of_the_cpu_for_cuda(choice: str) -> None:
    with pytest.raises(GpuUnavailableError, match="no usable CUDA device"):
        select(choice, engine=None, cuda=no_cuda, require_gpu=True)


def test_the_cuda_precision_reaches_the_backend() -> None:
    assert select("cuda").backend.precision == "fp32"  # the default: matches the CPU
    assert select("auto", engine=None, cuda_precision="fp16").backend.precision == "fp16"
    with pytest.raises(SettingsError, match="cuda_precision must be one of fp32, fp16"):
        select("cuda", cuda_precision="fp8")


def test_a_mismatched_engine_is_never_hidden_by_the_fallback() -> None:
    def mismatched(engine: Path, model: str) -> Stub:
        raise EngineMismatchError("built for compute capability 8.6")

    with pytest.raises(EngineMismatchError):
        select("auto", tensorrt=mismatched)


def test_gpu_decode() -> None:
    assert select("tensorrt", gpu_decode=True, nvjpeg=nvjpeg).decoder is not None

    def missing(long_side: int, limits: DecodeLimits) -> Any:
        raise GpuUnavailableError("nvidia-nvimgcodec is not installed")

    assert select("tensorrt", gpu_decode=True, nvjpeg=missing).decoder is None
    with pytest.raises(GpuUnavailableError, match="nvimgcodec"):
        select("tensorrt", gpu_decode=True, nvjpeg=missing, require_gpu=True)


def test_bad_choices() -> None:
    with pytest.raises(SettingsError, match="one of auto, cpu, cuda, tensorrt"):
        select("gpu")
    with pytest.raises(SettingsError, match="needs an engine"):
        select("tensorrt", engine=None)


def test_settings_from_the_environment() -> None:
    settings = Settings.from_env(
        {
            "CROPWORKER_BACKEND": "tensorrt",
            "CROPWORKER_ENGINE": "/engines/v.engine",
            "CROPWORKER_REQUIRE_GPU": "true",
            "CROPWORKER_GPU_DECODE": "yes",
            "CROPWORKER_CUDA_PRECISION": "fp16",
        }
    )
    assert settings.backend == "tensorrt" and settings.engine == Path("/engines/v.engine")
    assert settings.require_gpu and settings.gpu_decode and settings.cuda_precision == "fp16"
    defaults = Settings()
    assert (defaults.backend, defaults.engine, defaults.require_gpu) == ("auto", None, False)
    assert defaults.cuda_precision == "fp32"
    assert Settings.from_env({"CROPWORKER_BACKEND": "cuda"}).backend == "cuda"


@pytest.mark.parametrize(
    ("environ", "match"),
    [
        ({"CROPWORKER_BACKEND": "gpu"}, "backend must be one of"),
        ({"CROPWORKER_BACKEND": "tensorrt"}, "needs an engine"),
        ({"CROPWORKER_CUDA_PRECISION": "bf16"}, "cuda_precision must be one of"),
    ],
)
def test_invalid_settings(environ: dict[str, str], match: str) -> None:
    with pytest.raises(SettingsError, match=match):
        Settings.from_env(environ)


def test_auto_never_imports_pytorch_without_a_device_node() -> None:
    def must_not_run(model: str, precision: str) -> Stub:
        raise AssertionError("PyTorch was tried on a host with no NVIDIA device")

    chosen = select("auto", engine=None, cuda=must_not_run, device_present=lambda: False)
    assert chosen.kind == "cpu" and chosen.fallback == ""
    with pytest.raises(GpuUnavailableError, match="no NVIDIA device"):
        select("auto", engine=None, device_present=lambda: False, require_gpu=True)
    # asked for by name, it is always tried (and falls back if it cannot run)
    assert select("cuda", engine=None, device_present=lambda: False).kind == "cuda"

from __future__ import annotations

from pathlib import Path

import pytest

from cropworker.errors import EngineMismatchError
from cropworker.gpu.cuda import DeviceInfo
from cropworker.gpu.sidecar import Sidecar, check, parse_version, tensorrt_compatible

H200 = DeviceInfo(0, "NVIDIA H200", 9, 0, 141 << 30)
SIDECAR = Sidecar(
    tensorrt_version="11.4.0.106",
    version_compatible=True,
    gpu_name="NVIDIA H200",
    compute_capability="9.0",
    onnx_sha256="a" * 64,
    engine_sha256="b" * 64,
    precision="fp16",
    input_name="image",
    output_name="log_density",
    profile_min=(1, 64, 64, 3),
    profile_opt=(16, 192, 256, 3),
    profile_max=(32, 256, 256, 3),
    model={"name": "vanilla", "version": "1", "long_side": "256", "output_stride": "4"},
    built_at="2026-01-01T00:00:00+00:00",
)


def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "e.engine.json"
    SIDECAR.write(path)
    assert Sidecar.read(path) == SIDECAR
    assert SIDECAR.batch_range == (1, 16, 32)
    assert SIDECAR.model_info("x").tag == "vanilla@1"


@pytest.mark.parametrize(
    ("built", "running", "compatible", "ok"),
    [
        ("11.4.0.106", "11.4.0.106", False, True),
        ("11.4.0.106", "11.4.1.2", False, False),
        ("11.4.0.106", "11.4.1.2", True, True),
        ("11.4.0.106", "11.6.0.1", True, True),
        ("11.4.0.106", "11.3.0.1", True, False),
        ("10.13.0.35", "11.4.0.106", True, False),
        ("garbage", "11.4.0.106", True, False),
    ],
)
def test_tensorrt_compatibility(built: str, running: str, compatible: bool, ok: bool) -> None:
    assert tensorrt_compatible(built, running, compatible) is ok


def test_parse_version() -> None:
    assert parse_version("11.4.0.106") == (11, 4, 0, 106)
    assert parse_version("10.8.0.post1") == (10, 8, 0)


def test_check_accepts_a_match() -> None:
    check(
        SIDECAR,
        source="e",
        tensorrt_version="11.4.0.106",
        device=H200,
        onnx_sha256="a" * 64,
        engine_sha256="b" * 64,
    )


def test_check_refuses_a_profile_that_misses_small_inputs() -> None:
    narrow = Sidecar(**{**SIDECAR.__dict__, "profile_min": (2, 128, 128, 3)})
    with pytest.raises(EngineMismatchError) as caught:
        check(
            narrow,
            source="e",
            tensorrt_version="11.4.0.106",
            device=H200,
            onnx_sha256="a" * 64,
            engine_sha256="b" * 64,
        )
    assert "smallest batch is 2" in str(caught.value)
    assert "smallest input 128x128 exceeds 64" in str(caught.value)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("not json", "unreadable sidecar"),
        ('{"format": 2}', "sidecar format 2"),
        ('{"format": 1, "gpu": {}}', "malformed sidecar"),
    ],
)
def test_unusable_sidecars(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "e.engine.json"
    path.write_text(text)
    with pytest.raises(EngineMismatchError, match=match):
        Sidecar.read(path)

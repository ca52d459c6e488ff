from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cropworker import cli
from cropworker.gpu import engine
from cropworker.gpu.probe import probe_gpu

from .test_sidecar import SIDECAR


def test_build_engine_passes_every_option(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    seen: dict[str, Any] = {}

    def fake_build(model: str, out: Path, options: engine.BuildOptions) -> Any:
        seen.update(model=model, out=out, options=options)
        return SIDECAR

    monkeypatch.setattr(engine, "build_engine", fake_build)
    argv = ["build-engine", "m.onnx", "--out", str(tmp_path / "m.engine"), "--max-batch", "32"]
    argv += ["--opt-batch", "16", "--fp16", "--workspace-mib", "1024", "--no-version-compatible"]
    assert cli.main(argv) == 0
    assert seen["model"] == "m.onnx" and seen["out"] == tmp_path / "m.engine"
    assert seen["options"] == engine.BuildOptions(
        max_batch=32, opt_batch=16, fp16=True, workspace_mib=1024, version_compatible=False
    )
    assert json.loads(capsys.readouterr().out)["batch"] == {"min": 1, "opt": 16, "max": 32}


def test_build_engine_without_a_gpu_says_why(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    if probe_gpu().available:
        pytest.skip("this machine has a GPU")
    out = tmp_path / "v.engine"
    assert cli.main(["build-engine", "vanilla", "--out", str(out), "--max-batch", "8"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cropworker: ") and ("cuda" in err.lower() or "CUDA" in err)
    assert not out.exists()


def test_bad_batch_is_a_usage_error(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    argv = ["build-engine", "vanilla", "--out", str(tmp_path / "v"), "--max-batch", "0"]
    assert cli.main(argv) == 2
    assert "max batch must be at least 1" in capsys.readouterr().err


def test_run_help_lists_the_gpu_settings(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["run", "--help"])
    text = capsys.readouterr().out
    for flag in ("--backend", "--engine", "--require-gpu", "--gpu-decode"):
        assert flag in text
    assert "CROPWORKER_ENGINE" in text

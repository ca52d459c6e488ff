from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from cropworker.backend import OnnxBackend
from cropworker.cli import main
from tests.images import SAMPLES


def test_crop_json_with_a_bad_file_in_the_middle(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"<html>not an image</html>")
    missing = tmp_path / "missing.jpg"
    images = [str(SAMPLES / "coffee.jpg"), str(bad), str(missing), str(SAMPLES / "nus_258.jpg")]
    code = main(
        [
            "crop",
            "--json",
            *images,
            "--saliency-dir",
            str(tmp_path / "sal"),
            "--draw",
            str(tmp_path / "draw"),
        ]
    )
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == 1
    assert [line["image"] for line in lines] == images
    assert lines[1]["error"]["type"] == "unsupported_format"
    assert lines[2]["error"]["type"] == "unreadable"
    good = lines[3]
    assert set(good) == {"image", "width", "height", "salient_points", "crops", "model"}
    assert (good["width"], good["height"]) == (480, 640)
    assert list(good["crops"]) == ["16:9", "1:1", "4:5", "9:16"]
    assert all(len(p) == 3 for p in good["salient_points"])
    saliency = np.load(tmp_path / "sal" / "nus_258.npy")
    assert saliency.dtype == np.float32 and abs(saliency.sum() - 1) < 1e-4
    assert saliency.shape[0] > saliency.shape[1]  # portrait map for a portrait photo
    drawn = cv2.imread(str(tmp_path / "draw" / "coffee.jpg"))
    assert drawn.shape == (400, 600, 3)
    assert "coffee.jpg" in (tmp_path / "draw" / "index.html").read_text()


def test_all_good_exits_zero_with_text_output(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["crop", str(SAMPLES / "chelsea.jpg"), "--aspect", "2:1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{SAMPLES / 'chelsea.jpg'} 451x300")
    assert " 2:1 " in out and "16:9" not in out


def test_bad_aspect_is_a_usage_error() -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["crop", str(SAMPLES / "chelsea.jpg"), "--aspect", "16x9"])
    assert exit_info.value.code == 2


def test_unknown_model_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["crop", str(SAMPLES / "chelsea.jpg"), "--model", "nope"]) == 2
    assert "no model 'nope'" in capsys.readouterr().err


def test_aspects_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CROPWORKER_ASPECTS", "3:2")
    assert main(["crop", "--json", str(SAMPLES / "chelsea.jpg")]) == 0
    assert list(json.loads(capsys.readouterr().out)["crops"]) == ["3:2"]


@pytest.mark.broker
def test_demo_streams_the_samples_and_writes_the_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    samples = tmp_path / "samples"
    samples.mkdir()
    for name in ("astronaut.jpg", "camera.png"):
        shutil.copy(SAMPLES / name, samples / name)
    assert main(["demo", "--samples", str(samples), "--out", str(tmp_path / "report")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("metrics: http://127.0.0.1:")
    results = [json.loads(line) for line in lines if line.startswith("{")]
    assert sorted(r["media_id"].split("/")[1] for r in results) == ["astronaut.jpg", "camera.png"]
    assert all(r["schema"] == "cropworker.crop.v1" for r in results)
    assert all(r["model"] == OnnxBackend().info.tag for r in results)
    assert lines[-1] == f"report: {tmp_path / 'report' / 'index.html'}"
    page = (tmp_path / "report" / "index.html").read_text()
    assert page.count("<figure>") == 2
    assert (tmp_path / "report" / "camera.jpg").exists()


def test_run_shows_every_setting_with_its_variable(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for flag, env in [
        ("--brokers", "CROPWORKER_BROKERS"),
        ("--input-topic", "CROPWORKER_INPUT_TOPIC"),
        ("--max-wait-ms", "CROPWORKER_MAX_WAIT_MS"),
        ("--aspect", "CROPWORKER_ASPECTS"),
        ("--sasl-password", "CROPWORKER_SASL_PASSWORD"),
    ]:
        assert flag in text and f"(env {env};" in text


def test_a_bad_setting_in_the_environment_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CROPWORKER_MAX_BATCH", "lots")
    assert main(["run"]) == 2
    assert "CROPWORKER_MAX_BATCH='lots'" in capsys.readouterr().err

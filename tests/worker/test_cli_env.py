"""Each command reads only its own `CROPWORKER_*` variables: a bad one is a one-line error and
exit status 2, and a bad variable of another command changes nothing."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from cropworker.cli import main
from tests.images import SAMPLES

CHELSEA = str(SAMPLES / "chelsea.jpg")


def test_crop_ignores_the_streaming_workers_variables(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CROPWORKER_MAX_BATCH", "lots")
    monkeypatch.setenv("CROPWORKER_FOLLOW", "maybe")
    assert main(["crop", "--json", CHELSEA, "--aspect", "1:1"]) == 0
    assert list(json.loads(capsys.readouterr().out)["crops"]) == ["1:1"]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CROPWORKER_THREADS", "two"),
        ("CROPWORKER_THREADS", "0"),
        ("CROPWORKER_ASPECTS", "16x9"),
        ("CROPWORKER_ASPECTS", " ,"),
    ],
)
def test_a_bad_crop_variable_is_one_line_and_exit_2(
    name: str, value: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(name, value)
    assert main(["crop", CHELSEA]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert len(captured.err.splitlines()) == 1
    assert captured.err.startswith(f"cropworker: {name}={value!r}: ")


@pytest.mark.parametrize("command", ["run", "demo"])
def test_a_bad_streaming_variable_is_one_line_and_exit_2(
    command: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CROPWORKER_SESSION_TIMEOUT_MS", "6s")
    assert main([command]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1
    assert err.startswith("cropworker: CROPWORKER_SESSION_TIMEOUT_MS='6s': ")


def test_build_engine_reads_no_crop_or_streaming_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CROPWORKER_THREADS", "two")
    monkeypatch.setenv("CROPWORKER_MAX_BATCH", "lots")
    with pytest.raises(SystemExit) as exit_info:
        main(["build-engine", "--help"])
    assert exit_info.value.code == 0
    assert "--max-batch" in capsys.readouterr().out


def test_run_help_shows_the_defaults_the_environment_sets(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CROPWORKER_INPUT_TOPIC", "from-env")
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "(env CROPWORKER_INPUT_TOPIC; default 'from-env')" in text


def test_crop_imports_no_kafka() -> None:
    """`cropworker crop` is the one-image tool: it must run where only the runtime for it is
    installed, and start without loading the Kafka client library."""
    script = (
        "import sys\n"
        "from cropworker.cli import main\n"
        f"assert main(['crop', {CHELSEA!r}, '--aspect', '1:1']) == 0\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'confluent_kafka'))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.splitlines()[-1] == "[]"


@pytest.mark.parametrize("value", ["0", "-1", "two"])
def test_threads_must_be_a_positive_number(value: str) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["crop", CHELSEA, "--threads", value])
    assert exit_info.value.code == 2

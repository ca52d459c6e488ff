"""Helpers for the deployment tests: the real Helm engine (helm-python-sdk, Helm's Go SDK) and
external tools (promtool, hadolint). A missing tool skips its tests on a developer machine and
fails them in CI (CI=true), where .ci/run installs every tool."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "cropworker"
DEPLOY = ROOT / "deploy"
RELEASE = "demo"
NAMESPACE = "crops"

# The values files the chart is checked with: its defaults and the scenarios in ci/.
SCENARIOS = {
    "default": None,
    "gpu": CHART / "ci" / "gpu-values.yaml",
    "cpu": CHART / "ci" / "cpu-values.yaml",
    "keda-off": CHART / "ci" / "keda-off-values.yaml",
    "secure": CHART / "ci" / "secure-values.yaml",
}


def missing(what: str, how: str) -> None:
    """Skip (developer machine) or fail (CI) a test whose tool is not installed."""
    message = f"{what} is not installed ({how})"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message}; CI must have it")
    pytest.skip(message)


def tool(name: str, how: str) -> str:
    """Path of an executable, looked up beside this Python (the venv) and then on PATH."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        missing(name, how)
    assert found is not None
    return found


@pytest.fixture(scope="session")
def helm() -> Any:
    try:
        import helm_python
    except ImportError:
        missing("helm-python-sdk", "pip install helm-python-sdk: the dev extra")
    return helm_python


def scenario_values(name: str) -> dict[str, Any]:
    path = SCENARIOS[name]
    return {} if path is None else dict(yaml.safe_load(path.read_text()))


class Rendered:
    """The manifests of one `helm template`, parsed: by kind, and as raw documents."""

    def __init__(self, manifests: dict[str, str]) -> None:
        self.notes = next(
            (text for name, text in manifests.items() if name.endswith("NOTES.txt")), ""
        )
        self.objects: list[dict[str, Any]] = []
        for name, text in sorted(manifests.items()):
            if name.endswith(".txt"):
                continue
            self.objects += [doc for doc in yaml.safe_load_all(text) if doc]

    def kinds(self) -> list[str]:
        return sorted(o["kind"] for o in self.objects if not _is_test_hook(o))

    def one(self, kind: str) -> dict[str, Any]:
        found = [o for o in self.objects if o["kind"] == kind and not _is_test_hook(o)]
        assert len(found) == 1, f"expected one {kind}, got {len(found)}"
        return found[0]

    def maybe(self, kind: str) -> dict[str, Any] | None:
        found = [o for o in self.objects if o["kind"] == kind and not _is_test_hook(o)]
        return found[0] if found else None

    def test_pods(self) -> list[dict[str, Any]]:
        return [o for o in self.objects if _is_test_hook(o)]


def _is_test_hook(obj: dict[str, Any]) -> bool:
    return bool(obj["metadata"].get("annotations", {}).get("helm.sh/hook") == "test")


@pytest.fixture(scope="session")
def render(helm: Any) -> Iterator[Any]:
    """render(values) -> Rendered, through Helm's own engine (schema validation included)."""
    with helm.Chart.load(str(CHART)) as chart:

        def run(values: dict[str, Any] | None = None) -> Rendered:
            return Rendered(chart.render(values or {}, name=RELEASE, namespace=NAMESPACE))

        yield run

"""The chart's custom resources (KEDA's ScaledObject and TriggerAuthentication,
prometheus-operator's ServiceMonitor and PrometheusRule), rendered for every scenario, checked
against the schemas of their CRDs, with unknown fields rejected as an API server with field
validation would.

No API server can run here. The schemas come from the npm packages @kubernetes-models/keda and
@kubernetes-models/prometheus-operator (generated from the projects' Go types; ESM-only, run with
Node), installed at the pinned versions into cache/npm (ignored by git) on first use: this needs
node, npm and the npm registry."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
from typing import Any

import pytest

from .conftest import ROOT, SCENARIOS, missing, scenario_values

pytestmark = pytest.mark.deploy

PACKAGES = {"@kubernetes-models/keda": "2.0.0", "@kubernetes-models/prometheus-operator": "6.0.0"}
# Their dependencies are resolved as the registry stood on this day, so a later release of one
# of them cannot change what is checked.
REGISTRY_AS_OF = "2026-12-01"
NPM_DIR = ROOT / "cache" / "npm"
CUSTOM_KINDS = {"ScaledObject", "TriggerAuthentication", "ServiceMonitor", "PrometheusRule"}
BUILT_IN_API_VERSIONS = {"v1", "apps/v1", "policy/v1", "networking.k8s.io/v1"}
# Every optional custom resource on, on top of each scenario's values.
ALL_ON = {"metrics": {"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True}}}

# The generated validators check types, enums, patterns and required fields, but have no
# `additionalProperties: false`: they accept any extra field. They do read every property their
# schema declares (and iterate the keys of maps such as labels), so a Proxy records what they
# read, and a field they never read is unknown to the schema. Reads: a JSON list of objects on
# stdin; writes: a JSON list of {errors, unknown} (paths like /spec/endpoints/0/bogus).
VALIDATE_JS = r"""
import { readFileSync } from "node:fs";
import { ScaledObject, TriggerAuthentication } from "@kubernetes-models/keda/keda.sh/v1alpha1";
import {
  PrometheusRule,
  ServiceMonitor,
} from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1";
const MODELS = { ScaledObject, TriggerAuthentication, PrometheusRule, ServiceMonitor };

function watched(value, path, read) {
  if (value === null || typeof value !== "object") return value;
  return new Proxy(value, {
    get(target, key) {
      if (typeof key !== "string") return target[key];
      read.add(`${path}/${key}`);
      return watched(target[key], `${path}/${key}`, read);
    },
    ownKeys(target) {
      for (const key of Reflect.ownKeys(target)) read.add(`${path}/${String(key)}`);
      return Reflect.ownKeys(target);
    },
  });
}

function paths(value, path, out) {
  if (value !== null && typeof value === "object") {
    for (const [key, child] of Object.entries(value)) {
      out.push(`${path}/${key}`);
      paths(child, `${path}/${key}`, out);
    }
  }
  return out;
}

const results = JSON.parse(readFileSync(0, "utf8")).map((object) => {
  const model = MODELS[object.kind];
  if (!model || model.apiVersion !== object.apiVersion) {
    return { errors: [`no schema for ${object.apiVersion} ${object.kind}`], unknown: [] };
  }
  const read = new Set();
  let errors = [];
  try {
    model.prototype.validate.call(watched(object, "", read));
  } catch (error) {
    errors = [error.message];
  }
  const unknown = paths(object, "", []).filter((path) => !read.has(path));
  return { errors, unknown: unknown.filter((p) => !unknown.some((q) => p.startsWith(`${q}/`))) };
});
console.log(JSON.stringify(results));
"""


def installed(package: str) -> str | None:
    manifest = NPM_DIR / "node_modules" / package / "package.json"
    return json.loads(manifest.read_text())["version"] if manifest.exists() else None


@pytest.fixture(scope="session")
def node() -> str:
    """Node, with the pinned packages in cache/npm (installed there when missing or stale)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        missing("node and npm", "apt-get install nodejs npm")
    assert node is not None and npm is not None
    if any(installed(name) != version for name, version in PACKAGES.items()):
        command = [npm, "install", "--prefix", str(NPM_DIR), "--save-exact", "--ignore-scripts"]
        command += ["--no-audit", "--no-fund", "--loglevel=error", f"--before={REGISTRY_AS_OF}"]
        command += [f"{name}@{version}" for name, version in PACKAGES.items()]
        result = subprocess.run(command, capture_output=True, text=True, timeout=300)
        if result.returncode != 0:
            missing(", ".join(PACKAGES), f"npm install failed: {result.stderr[-2000:]}")
    return node


def validate(node: str, objects: list[dict[str, Any]]) -> list[dict[str, list[str]]]:
    result = subprocess.run(
        [node, "--input-type=module", "--eval", VALIDATE_JS],
        input=json.dumps(objects),
        cwd=NPM_DIR,  # where the packages resolve from
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    answers: list[dict[str, list[str]]] = json.loads(result.stdout)
    assert len(answers) == len(objects)
    return answers


def merged(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        nested = isinstance(value, dict) and isinstance(out.get(key), dict)
        out[key] = merged(out[key], value) if nested else value
    return out


def custom_resources(render: Any, scenario: str) -> list[dict[str, Any]]:
    out = render(merged(scenario_values(scenario), ALL_ON))
    objects = [o for o in out.objects if o["kind"] in CUSTOM_KINDS]
    others = {o["apiVersion"] for o in out.objects if o["kind"] not in CUSTOM_KINDS}
    assert others <= BUILT_IN_API_VERSIONS, "a custom resource this test does not check"
    return objects


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_custom_resources_match_their_crd_schemas(node: str, render: Any, scenario: str) -> None:
    objects = custom_resources(render, scenario)
    assert {"ServiceMonitor", "PrometheusRule"} <= {o["kind"] for o in objects}
    for obj, answer in zip(objects, validate(node, objects), strict=True):
        assert answer == {"errors": [], "unknown": []}, (obj["kind"], answer)


def test_every_kind_is_checked_in_some_scenario(render: Any) -> None:
    kinds = {o["kind"] for name in SCENARIOS for o in custom_resources(render, name)}
    assert kinds == CUSTOM_KINDS


# Each spoils one rendered object of the `secure` scenario: (kind, where, field, value or None
# to remove the field, what the validator must say: "unknown" for that field, or its error).
SPOILS = [
    ("ServiceMonitor", "", "bogus", 1, "unknown"),
    ("ServiceMonitor", "/spec/endpoints/0", "bogus", 1, "unknown"),
    ("ServiceMonitor", "/spec/selector", "bogus", {}, "unknown"),  # beside the matchLabels map
    ("ScaledObject", "/spec/triggers/0", "bogus", "x", "unknown"),
    ("ScaledObject", "/spec", "minReplicaCount", "one", "minReplicaCount must be integer"),
    ("TriggerAuthentication", "/spec/secretTargetRef/0", "key", None, "required property key"),
    ("PrometheusRule", "/spec/groups/0/rules/0", "bogus", 1, "unknown"),
    ("PrometheusRule", "/spec/groups/0", "name", None, "required property name"),
]


def test_the_validator_rejects_unknown_fields_and_wrong_types(node: str, render: Any) -> None:
    objects = {o["kind"]: o for o in custom_resources(render, "secure")}
    spoiled = []
    for kind, where, field, value, _ in SPOILS:
        obj = copy.deepcopy(objects[kind])
        inner = obj
        for step in where.split("/")[1:]:
            inner = inner[int(step)] if isinstance(inner, list) else inner[step]
        if value is None:
            del inner[field]
        else:
            inner[field] = value
        spoiled.append(obj)
    for (kind, where, field, _, expect), answer in zip(
        SPOILS, validate(node, spoiled), strict=True
    ):
        if expect == "unknown":
            assert answer == {"errors": [], "unknown": [f"{where}/{field}"]}, (kind, answer)
        else:
            assert answer["unknown"] == [] and len(answer["errors"]) == 1, (kind, answer)
            assert expect in answer["errors"][0], (kind, answer)


def test_the_npm_packages_stay_outside_git() -> None:
    ignored = subprocess.run(["git", "check-ignore", "-q", str(NPM_DIR)], cwd=ROOT)
    assert ignored.returncode == 0, f"{NPM_DIR} must be ignored by git"

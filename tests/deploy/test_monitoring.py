"""The Grafana dashboard and the Prometheus rules: valid for promtool, the alerts fire when they
should (promtool's rule unit tests), and every metric they query is one the worker exposes."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest

from cropworker.stream.metrics import WorkerMetrics

from .conftest import DEPLOY, tool

pytestmark = pytest.mark.deploy

DASHBOARD = DEPLOY / "grafana" / "cropworker-dashboard.json"
RULES = DEPLOY / "prometheus" / "cropworker-rules.yaml"
RULE_TESTS = DEPLOY / "prometheus" / "cropworker-rules.test.yaml"
PROMTOOL = "Debian package prometheus: apt-get install prometheus"

# Series from outside the worker that the dashboard may query: kube-state-metrics' view of the
# Deployment and of the HPA that KEDA creates. Nothing else may be external.
EXTERNAL = {
    "kube_deployment_spec_replicas",
    "kube_deployment_status_replicas_available",
    "kube_horizontalpodautoscaler_spec_max_replicas",
}
PROMQL_WORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or",
    "unless", "offset", "inf", "nan",
}  # fmt: skip
# Grafana's variables, replaced by what Prometheus would receive.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$namespace": ".*", "$job": ".*"}


def worker_series() -> set[str]:
    """Names of every series the worker's /metrics exposes (histograms as _bucket/_sum/_count,
    counters as _total), from the worker's own registry."""
    text = generate_latest(WorkerMetrics(CollectorRegistry(), model="vanilla@1").registry)
    names: set[str] = set()
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", text.decode(), re.MULTILINE):
        if kind == "counter":
            names.add(name.removesuffix("_total") + "_total")
        elif kind == "histogram":
            names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
        else:
            names.add(name)
    return names


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers that are not functions, keywords, label
    names (inside {} or a by/on/... list), strings or durations."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges and subqueries
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    names = set()
    for match in re.finditer(r"(?<![\w.$])[A-Za-z_:][\w:]*", expr):
        rest = expr[match.end() :].lstrip()
        if match.group() not in PROMQL_WORDS and not rest.startswith("("):
            names.add(match.group())
    return names


def dashboard_queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    queries = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            inner = re.fullmatch(r"label_values\((.*),\s*\w+\)", variable["query"]["query"])
            assert inner, variable["query"]
            queries.append(inner.group(1))
    return queries


def rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_the_metric_name_parser_sees_metrics_only() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le, job) (rate(a_bucket{job=~"$job", le!="1e3"}'
        "[$__rate_interval]))) / on (job) group_left b:rec unless sum without (x) (c_total) > 1e3"
    )
    assert metric_names(expr) == {"a_bucket", "b:rec", "c_total"}


def test_every_queried_metric_is_exposed_by_the_worker() -> None:
    exposed = worker_series()
    assert {"cropworker_images_processed_total", "cropworker_consumer_lag"} <= exposed
    recorded = {rule["record"] for rule in rules() if "record" in rule}
    queries = dashboard_queries() + [rule["expr"] for rule in rules()]
    used = set().union(*(metric_names(q) for q in queries))
    unknown = used - exposed - recorded - EXTERNAL
    assert unknown == set(), "queried but not in the worker's /metrics"
    assert used >= EXTERNAL, "EXTERNAL lists a metric nothing queries"
    assert all(name.startswith("cropworker:") for name in recorded)


def test_the_worker_exposition_passes_promtool_lint() -> None:
    promtool = tool("promtool", PROMTOOL)
    text = generate_latest(WorkerMetrics(CollectorRegistry(), model="vanilla@1").registry)
    result = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_rules_pass_promtool_check() -> None:
    promtool = tool("promtool", PROMTOOL)
    result = subprocess.run(
        [promtool, "check", "rules", str(RULES)], capture_output=True, text=True
    )
    assert result.returncode == 0 and "SUCCESS" in result.stdout, result.stdout + result.stderr


def test_the_alerts_fire_when_they_should() -> None:
    promtool = tool("promtool", PROMTOOL)
    result = subprocess.run(
        [promtool, "test", "rules", RULE_TESTS.name],
        cwd=RULE_TESTS.parent,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0 and "SUCCESS" in result.stdout, result.stdout + result.stderr
    tested = set(re.findall(r"alertname: (\w+)", RULE_TESTS.read_text()))
    assert tested == {rule["alert"] for rule in rules() if "alert" in rule}, "an untested alert"


def test_the_required_alerts_exist() -> None:
    alerts = {rule["alert"]: rule for rule in rules() if "alert" in rule}
    for name in (
        "CropworkerLagGrowing",
        "CropworkerThroughputStalled",
        "CropworkerDeadLetterRateHigh",
        "CropworkerLatencyP99AboveObjective",
    ):
        assert alerts[name]["labels"]["severity"] in {"warning", "critical"}
        assert alerts[name]["annotations"]["summary"] and alerts[name]["for"]


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    """Each dashboard query, its Grafana variables filled in, parsed by Prometheus' own parser
    (as a recording rule for promtool)."""
    promtool = tool("promtool", PROMTOOL)
    exprs = []
    for query in dashboard_queries():
        for variable, value in GRAFANA_VARIABLES.items():
            query = query.replace(variable, value)
        assert "$" not in query, f"unknown Grafana variable in {query}"
        exprs.append(query)
    records = [{"record": f"dashboard:query_{n}:x", "expr": e} for n, e in enumerate(exprs)]
    path = tmp_path / "dashboard-queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": records}]}))
    result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_dashboard_shows_what_operators_need() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    assert all(p["datasource"]["uid"] == "${datasource}" and "gridPos" in p for p in panels)
    by_title = {p["title"]: " ".join(t["expr"] for t in p["targets"]) for p in panels}

    def panel(title: str) -> str:
        return by_title[title]

    assert "rate(cropworker_images_processed_total" in panel("Throughput")
    for quantile in ("0.5", "0.95", "0.99"):
        assert f"histogram_quantile({quantile}, " in panel("End-to-end latency")
        assert f"histogram_quantile({quantile}, " in panel("Inference time per batch")
    assert "cropworker_end_to_end_latency_seconds_bucket" in panel("End-to-end latency")
    assert "cropworker_inference_seconds_bucket" in panel("Inference time per batch")
    assert "cropworker_batch_size" in panel("Batch size")
    assert "by (topic, partition) (cropworker_consumer_lag" in panel("Consumer lag per partition")
    assert "kube_deployment_spec_replicas" in panel("Replicas")
    assert "cropworker_dead_letters_total" in panel("Dead letters and error ratio")
    assert 'result="dead_letter"' in panel("Dead letters and error ratio")

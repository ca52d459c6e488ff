"""The Grafana dashboard and the Prometheus rules: valid for promtool, the alerts fire when they
should and stay quiet on near misses (promtool's rule unit tests), every metric they query is one
the worker exposes, every dead-letter type has one cause, and the chart's PrometheusRule ships the
rules file as it is plus a rule for its release."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest

from cropworker.stream.metrics import WorkerMetrics

from .conftest import CHART, DEPLOY, ROOT, tool

pytestmark = pytest.mark.deploy

DASHBOARD = DEPLOY / "grafana" / "cropworker-dashboard.json"
# The rules live in the chart (Helm reads no file outside it); their tests beside the dashboard.
RULES = CHART / "files" / "cropworker-rules.yaml"
RULE_TESTS = DEPLOY / "prometheus" / "cropworker-rules.test.yaml"
# The chart's per-release rule, tested on the PrometheusRule rendered for `demo` in `crops`.
CHART_RULE_TESTS = DEPLOY / "prometheus" / "prometheusrule.test.yaml"
RULE_VALUES = {
    "metrics": {"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True}}
}
PROMTOOL = "Debian package prometheus: apt-get install prometheus"

# Series from outside the worker that the dashboard may query: kube-state-metrics' view of the
# Deployment and of the HPA that KEDA creates. Nothing else may be external.
EXTERNAL = {
    "kube_deployment_spec_replicas",
    "kube_deployment_status_replicas_available",
    "kube_horizontalpodautoscaler_spec_max_replicas",
}
# Series Prometheus itself writes for every target.
SCRAPE_SERIES = {"up"}
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
    unknown = used - exposed - recorded - EXTERNAL - SCRAPE_SERIES
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


def promtool_test(tests: Path) -> None:
    promtool = tool("promtool", PROMTOOL)
    result = subprocess.run(
        [promtool, "test", "rules", tests.name], cwd=tests.parent, capture_output=True, text=True
    )
    assert result.returncode == 0 and "SUCCESS" in result.stdout, result.stdout + result.stderr


def alerts_firing_in(tests: Path) -> set[str]:
    """Alerts a promtool test file expects to fire somewhere (not only to stay quiet)."""
    found = set()
    for group in yaml.safe_load(tests.read_text())["tests"]:
        for case in group.get("alert_rule_test", []):
            if case["exp_alerts"]:
                found.add(case["alertname"])
    return found


def test_the_alerts_fire_when_they_should() -> None:
    promtool_test(RULE_TESTS)
    assert alerts_firing_in(RULE_TESTS) == {r["alert"] for r in rules() if "alert" in r}


def test_the_required_alerts_exist() -> None:
    alerts = {rule["alert"]: rule for rule in rules() if "alert" in rule}
    for name in (
        "CropworkerLagGrowing",
        "CropworkerThroughputStalled",
        "CropworkerNoPartitionsAssigned",
        "CropworkerNotReady",
        "CropworkerLoopStalled",
        "CropworkerReleaseGone",
        "CropworkerScrapeTargetDown",
        "CropworkerDecodeThreadsStuck",
        "CropworkerPartitionsPausedLong",
        "CropworkerDeadLettersInfrastructure",
        "CropworkerDeadLettersContent",
        "CropworkerLatencyP99AboveObjective",
    ):
        assert alerts[name]["labels"]["severity"] in {"warning", "critical"}
        assert alerts[name]["annotations"]["summary"] and alerts[name]["for"]


def dead_letter_types() -> set[str]:
    """Every error type the worker can dead-letter: the `code` of each error class, and the
    types worker/stream sets by name (an unexpected exception, a result that failed to
    publish)."""
    types = set(
        re.findall(r'^\s+code = "(\w+)"$', (ROOT / "worker" / "errors.py").read_text(), re.M)
    )
    for path in (ROOT / "worker" / "stream").glob("*.py"):
        types |= set(re.findall(r'error_type\b[^=\n]*=\s*"(\w+)"', path.read_text()))
    return types


def cause(name: str) -> set[str]:
    """The error types of a cause: the `type=~` regex of its recording rule."""
    (rule,) = [r for r in rules() if r.get("labels", {}).get("cause") == name]
    (regex,) = re.findall(r'\{type=~"([\w|]+)"\}', rule["expr"])
    return set(regex.split("|"))


def test_every_dead_letter_type_has_exactly_one_cause() -> None:
    types = dead_letter_types()
    assert {"corrupt", "decoder_crashed", "internal_error", "publish_failed"} <= types
    content, infrastructure = cause("content"), cause("infrastructure")
    assert content & infrastructure == set(), "in both causes"
    assert types - content - infrastructure == set(), "in neither cause: no alert counts it"
    assert (content | infrastructure) - types == set(), "not an error type of the worker"


def test_the_chart_ships_the_rules_and_a_rule_for_its_release(render: Any, tmp_path: Path) -> None:
    """The PrometheusRule holds the rules file's groups unchanged, then CropworkerReleaseAbsent
    for this release, which promtool tests on the rendered object."""
    groups = render(RULE_VALUES).one("PrometheusRule")["spec"]["groups"]
    assert groups[:-1] == yaml.safe_load(RULES.read_text())["groups"]
    assert [r["alert"] for r in groups[-1]["rules"]] == ["CropworkerReleaseAbsent"]
    (tmp_path / "prometheusrule.yaml").write_text(yaml.safe_dump({"groups": groups}))
    promtool_test(Path(shutil.copy(CHART_RULE_TESTS, tmp_path)))
    assert alerts_firing_in(CHART_RULE_TESTS) == {"CropworkerReleaseAbsent"}


@pytest.mark.parametrize(
    "values",
    [
        {"keda": {"minReplicaCount": 0}},
        {"keda": {"enabled": False}, "replicaCount": 0},
        {"metrics": {"serviceMonitor": {"enabled": False}}},
    ],
    ids=["keda-scales-to-zero", "zero-replicas", "no-service-monitor"],
)
def test_no_release_rule_without_workers_to_expect_or_a_known_job(
    render: Any, values: dict[str, Any]
) -> None:
    merged = {**values, "metrics": {**RULE_VALUES["metrics"], **values.get("metrics", {})}}
    groups = render(merged).one("PrometheusRule")["spec"]["groups"]
    assert groups == yaml.safe_load(RULES.read_text())["groups"]


def test_the_prometheus_rule_is_opt_in_and_labelled(render: Any) -> None:
    assert render({}).maybe("PrometheusRule") is None
    values = {"metrics": {"prometheusRule": {"enabled": True, "labels": {"release": "kps"}}}}
    assert render(values).one("PrometheusRule")["metadata"]["labels"]["release"] == "kps"


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

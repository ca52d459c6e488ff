"""The Helm chart, rendered by Helm's own engine for every values scenario, linted, and checked
against the worker it deploys: settings, ports, probes, drain time, credentials."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest
import yaml
from prometheus_client import CollectorRegistry

from cropworker.stream.metrics import Health, MetricsServer, WorkerMetrics
from cropworker.stream.settings import Settings

from .conftest import CHART, SCENARIOS, Rendered, missing, scenario_values

pytestmark = pytest.mark.deploy

# Worker settings the chart sets from its own keys (kafka.*, metrics.*), not from `config`.
CHART_MANAGED = {
    "brokers", "group_id", "input_topic", "output_topic", "dead_letter_topic",
    "security_protocol", "sasl_mechanism", "sasl_username", "sasl_password",
    "ssl_ca_location", "ssl_certificate_location", "ssl_key_location",
    "metrics_host", "metrics_port", "client_id",
}  # fmt: skip
BASE_KINDS = ["ConfigMap", "Deployment", "PodDisruptionBudget", "Service"]
EXPECTED_KINDS = {
    "default": [*BASE_KINDS, "ScaledObject"],
    "gpu": [*BASE_KINDS, "ScaledObject"],
    "cpu": [*BASE_KINDS, "ScaledObject"],
    "keda-off": BASE_KINDS,
    "secure": [*BASE_KINDS, "NetworkPolicy", "PrometheusRule", "ScaledObject",
               "ServiceMonitor", "TriggerAuthentication"],
}  # fmt: skip


@pytest.fixture(params=list(SCENARIOS))
def scenario(request: pytest.FixtureRequest, render: Any) -> tuple[str, Rendered]:
    return request.param, render(scenario_values(request.param))


def pod_spec(out: Rendered) -> dict[str, Any]:
    spec: dict[str, Any] = out.one("Deployment")["spec"]["template"]["spec"]
    return spec


def worker(out: Rendered) -> dict[str, Any]:
    containers = pod_spec(out)["containers"]
    assert len(containers) == 1
    container: dict[str, Any] = containers[0]
    return container


def config_env(out: Rendered) -> dict[str, str]:
    """The worker's environment as the pod would see it, secrets replaced by placeholders."""
    env = dict(out.one("ConfigMap")["data"])
    for var in worker(out).get("env", []):
        env[var["name"]] = var.get("value", "from-a-secret")
    return env


def chart_defaults() -> dict[str, Any]:
    return dict(yaml.safe_load(CHART.joinpath("values.yaml").read_text()))


def is_subset(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_the_chart_lints_clean(helm: Any, name: str) -> None:
    report = helm.lint(str(CHART), scenario_values(name), strict=True, kube_version="v1.27.0")
    serious = [m for m in report["messages"] if m["severity"] >= 2]  # 2: warning, 3: error
    assert report["errors"] == [] and serious == [], report


def test_each_scenario_renders_its_objects_with_required_fields(
    scenario: tuple[str, Rendered],
) -> None:
    name, out = scenario
    assert out.kinds() == sorted(EXPECTED_KINDS[name])
    assert len(out.test_pods()) == 1
    for obj in out.objects:
        assert obj["apiVersion"] and obj["metadata"]["name"].startswith("demo-cropworker")
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/instance"] == "demo"
        assert labels["app.kubernetes.io/name"].startswith("cropworker")
    assert "demo-cropworker" in out.notes


# Kinds without a Kubernetes API schema (custom resources): their fields are asserted below.
CUSTOM_KINDS = {"PrometheusRule", "ScaledObject", "ServiceMonitor", "TriggerAuthentication"}


@pytest.mark.parametrize("kube_version", ["1.27.0", "latest"])
def test_built_in_objects_match_the_kubernetes_api_schema(
    scenario: tuple[str, Rendered], kube_version: str
) -> None:
    """Strict: an unknown or misplaced field (a typo Kubernetes would drop or reject) fails."""
    try:
        import kubernetes_validate
    except ImportError:
        missing("kubernetes-validate", "pip install kubernetes-validate: the dev extra")
    version = kubernetes_validate.latest_version() if kube_version == "latest" else kube_version
    for obj in scenario[1].objects:
        if obj["kind"] not in CUSTOM_KINDS:
            kubernetes_validate.validate(obj, version, strict=True)


def test_selectors_match_the_labels_they_select(scenario: tuple[str, Rendered]) -> None:
    _, out = scenario
    deployment = out.one("Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert is_subset(selector, pod_labels)
    assert is_subset(out.one("Service")["spec"]["selector"], pod_labels)
    assert is_subset(out.one("PodDisruptionBudget")["spec"]["selector"]["matchLabels"], pod_labels)
    if policy := out.maybe("NetworkPolicy"):
        assert is_subset(policy["spec"]["podSelector"]["matchLabels"], pod_labels)
    if monitor := out.maybe("ServiceMonitor"):
        service = out.one("Service")
        assert is_subset(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
        ports = {p["name"] for p in service["spec"]["ports"]}
        assert {e["port"] for e in monitor["spec"]["endpoints"]} <= ports
    if scaled := out.maybe("ScaledObject"):
        assert scaled["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    # The test pod is never taken for a worker by the Service, the PDB or the Deployment.
    (test_pod,) = out.test_pods()
    assert not is_subset(selector, test_pod["metadata"]["labels"])


def test_ports_match_the_worker(scenario: tuple[str, Rendered]) -> None:
    _, out = scenario
    (port,) = worker(out)["ports"]
    env = config_env(out)
    assert port["name"] == "metrics"
    assert port["containerPort"] == int(env["CROPWORKER_METRICS_PORT"])
    assert port["containerPort"] == Settings().metrics_port  # every scenario keeps the default
    assert env["CROPWORKER_METRICS_HOST"] == "0.0.0.0"
    (service_port,) = out.one("Service")["spec"]["ports"]
    assert service_port["targetPort"] == "metrics"
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert worker(out)[probe]["httpGet"]["port"] == "metrics"


@pytest.fixture
def served() -> Iterator[tuple[MetricsServer, Health]]:
    registry = CollectorRegistry()
    WorkerMetrics(registry, model="vanilla@1")
    health = Health()
    server = MetricsServer(registry, health, "127.0.0.1", 0).start()
    yield server, health
    server.stop()


def status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_probes_ask_the_worker_what_they_mean(
    render: Any, served: tuple[MetricsServer, Health]
) -> None:
    """Each probe path, requested from the worker's real HTTP server: liveness and startup pass
    while the worker lives, readiness only once it polls inside the group."""
    server, health = served
    container = worker(render())
    base = f"http://127.0.0.1:{server.port}"

    def probe(name: str) -> int:
        return status(base + container[name]["httpGet"]["path"])

    assert (probe("startupProbe"), probe("livenessProbe"), probe("readinessProbe")) == (
        200,
        200,
        503,
    )
    health.running = health.joined = True
    assert probe("readinessProbe") == 200
    health.threads_ok = False
    assert probe("livenessProbe") == 503


def test_the_config_map_is_settings_the_worker_accepts(scenario: tuple[str, Rendered]) -> None:
    _, out = scenario
    env = config_env(out)
    fields = {f.name for f in dataclasses.fields(Settings)}
    unknown = [k for k in env if k.removeprefix("CROPWORKER_").lower() not in fields]
    assert unknown == [], "variables the worker does not read"
    settings = Settings.from_env(env)
    assert settings.metrics_port == worker(out)["ports"][0]["containerPort"]
    assert settings.consumer_config()["group.id"] == env["CROPWORKER_GROUP_ID"]


def test_config_defaults_are_the_workers_and_cover_every_setting(render: Any) -> None:
    """values.yaml documents every worker setting with the worker's own default, so the chart
    neither drifts from the worker nor hides a setting from operators."""
    out = render()
    defaults = Settings()
    from_chart = Settings.from_env(out.one("ConfigMap")["data"])
    config_keys = {re.sub(r"(?<!^)(?=[A-Z])", "_", k).lower() for k in chart_defaults()["config"]}
    runtime = {
        f.name for f in dataclasses.fields(Settings) if not f.metadata["help"].startswith("demo:")
    }
    assert config_keys | CHART_MANAGED == runtime
    for name in config_keys:
        assert getattr(from_chart, name) == getattr(defaults, name), name


def test_large_numbers_reach_the_worker_as_integers(render: Any) -> None:
    # YAML numbers are float64 in Helm: 52428800 must not become 5.24288e+07.
    data = render({"config": {"maxImageBytes": 104857600, "maxWaitMs": 2.5}}).one("ConfigMap")[
        "data"
    ]
    assert data["CROPWORKER_MAX_IMAGE_BYTES"] == "104857600"
    assert data["CROPWORKER_MAX_WAIT_MS"] == "2.5"
    hosts = render({"config": {"httpAllowedHosts": ["a.example.com", "*.cdn.example.com"]}})
    settings = Settings.from_env(hosts.one("ConfigMap")["data"])
    assert settings.http_allowed_hosts == ("a.example.com", "*.cdn.example.com")
    unset = render({"config": {"logLevel": None}}).one("ConfigMap")["data"]
    assert "CROPWORKER_LOG_LEVEL" not in unset  # null: the worker's own default applies


def test_kubernetes_waits_for_the_drain_before_killing(scenario: tuple[str, Rendered]) -> None:
    _, out = scenario
    drain = float(config_env(out)["CROPWORKER_SHUTDOWN_TIMEOUT_S"])
    assert pod_spec(out)["terminationGracePeriodSeconds"] >= drain + 10


def test_grace_period_follows_the_shutdown_timeout(render: Any) -> None:
    out = render(
        {
            "config": {"shutdownTimeoutS": 90.5, "loopTimeoutS": 120},
            "terminationGraceMarginSeconds": 20,
        }
    )
    assert pod_spec(out)["terminationGracePeriodSeconds"] == 111  # ceil(90.5) + 20


def test_keda_owns_the_replica_count(render: Any) -> None:
    with_keda = render().one("Deployment")["spec"]
    assert "replicas" not in with_keda
    without = render({"keda": {"enabled": False}, "replicaCount": 3})
    assert without.one("Deployment")["spec"]["replicas"] == 3
    assert without.maybe("ScaledObject") is None and without.maybe("TriggerAuthentication") is None


def test_the_scaled_object_reads_the_lag_of_the_workers_group(
    scenario: tuple[str, Rendered],
) -> None:
    name, out = scenario
    scaled = out.maybe("ScaledObject")
    if scaled is None:
        assert name == "keda-off"
        return
    env, spec, values = config_env(out), scaled["spec"], scenario_values(name)
    (trigger,) = spec["triggers"]
    meta = trigger["metadata"]
    assert trigger["type"] == "kafka"
    assert meta["bootstrapServers"] == env["CROPWORKER_BROKERS"]
    assert meta["consumerGroup"] == env["CROPWORKER_GROUP_ID"]
    assert meta["topic"] == env["CROPWORKER_INPUT_TOPIC"]
    worker_reset = Settings.from_env(env).consumer_config()["auto.offset.reset"]
    assert meta["offsetResetPolicy"] == worker_reset  # KEDA counts the lag the workers see
    assert meta["limitToPartitionsWithLag"] == "true" and meta["allowIdleConsumers"] == "false"
    assert int(meta["lagThreshold"]) > 0 and int(meta["activationLagThreshold"]) >= 0
    assert all(isinstance(v, str) for v in meta.values())  # KEDA metadata is string-valued
    partitions = values.get("kafka", {}).get("partitions", chart_defaults()["kafka"]["partitions"])
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"] <= partitions
    assert spec["minReplicaCount"] <= spec["fallback"]["replicas"] <= spec["maxReplicaCount"]


def test_scaling_is_calm(render: Any) -> None:
    """Each scale step is a rebalance: the HPA may add a bounded number of workers per period
    once the demand has held (never its default 4 pods or 100% per 15 s), and remove one at a
    time after a long window."""
    behavior = render().one("ScaledObject")["spec"]["advanced"]["horizontalPodAutoscalerConfig"][
        "behavior"
    ]
    up, down = behavior["scaleUp"], behavior["scaleDown"]
    assert up["selectPolicy"] == "Min" and up["stabilizationWindowSeconds"] >= 30
    assert up["policies"] == [{"type": "Pods", "value": 2, "periodSeconds": 60}]
    assert down["policies"] == [{"type": "Pods", "value": 1, "periodSeconds": 60}]
    assert down["stabilizationWindowSeconds"] >= 300
    latest = render({"config": {"offsetReset": "latest"}})
    (trigger,) = latest.one("ScaledObject")["spec"]["triggers"]
    assert trigger["metadata"]["offsetResetPolicy"] == "latest"
    assert latest.one("ConfigMap")["data"]["CROPWORKER_OFFSET_RESET"] == "latest"


def test_each_pod_has_its_own_client_id(render: Any) -> None:
    env = {v["name"]: v for v in worker(render())["env"]}
    source = env["CROPWORKER_CLIENT_ID"]["valueFrom"]["fieldRef"]["fieldPath"]
    assert source == "metadata.name"  # the pod's name, unique in its namespace


def test_memory_is_not_overcommitted(scenario: tuple[str, Rendered]) -> None:
    _, out = scenario
    resources = worker(out)["resources"]
    assert resources["requests"]["memory"] == resources["limits"]["memory"]


def test_more_workers_than_partitions_fails_the_render(helm: Any, render: Any) -> None:
    with pytest.raises(
        helm.HelmRenderError, match=r"maxReplicaCount \(13\) exceeds kafka.partitions \(12\)"
    ):
        render({"keda": {"maxReplicaCount": 13}})
    render({"keda": {"maxReplicaCount": 13}, "kafka": {"partitions": 13}})


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"replicas": 3}, "additional properties 'replicas' not allowed"),
        ({"kafka": {"partition": 12}}, "additional properties 'partition' not allowed"),
        ({"config": {"maxBatchSize": 8}}, "additional properties 'maxBatchSize' not allowed"),
        ({"podDisruptionBudget": {"maxUnavailable": 0}}, "maxUnavailable"),
        ({"kafka": {"securityProtocol": "tls"}}, "securityProtocol"),
        ({"keda": {"minReplicaCount": 5, "maxReplicaCount": 4}}, "exceeds keda.maxReplicaCount"),
        ({"kafka": {"securityProtocol": "sasl_ssl"}}, "needs kafka.sasl.mechanism"),
        ({"kafka": {"sasl": {"mechanism": "PLAIN"}}}, "must be sasl_plaintext or sasl_ssl"),
        (
            {"kafka": {"securityProtocol": "sasl_plaintext", "sasl": {"mechanism": "PLAIN"}}},
            "needs kafka.sasl.existingSecret",
        ),
        ({"kafka": {"tls": {"existingSecret": "ca"}}}, "must be ssl or sasl_ssl"),
        ({"keda": {"fallback": {"replicas": 13}}}, "keda.fallback.replicas (13) must lie"),
        ({"config": {"engine": "/e/x.plan"}}, "set gpu.product to the GPU model"),
        ({"config": {"loopTimeoutS": 20}}, "loopTimeoutS must exceed"),
        ({"config": {"assignor": "sticky"}}, "assignor"),
        (
            {"kafka": {"securityProtocol": "ssl", "tls": {"existingSecret": "t", "certKey": "c"}}},
            "go together",
        ),
        (
            {"metrics": {"service": {"enabled": False}, "serviceMonitor": {"enabled": True}}},
            "needs metrics.service.enabled",
        ),
    ],
)
def test_wrong_values_fail_with_a_clear_message(
    helm: Any, render: Any, values: dict[str, Any], message: str
) -> None:
    with pytest.raises(helm.HelmError, match=re.escape(message)):
        render(values)


def test_the_disruption_budget_cannot_block_a_drain(scenario: tuple[str, Rendered]) -> None:
    _, out = scenario
    spec = out.one("PodDisruptionBudget")["spec"]
    assert "minAvailable" not in spec
    assert spec["maxUnavailable"] >= 1
    assert spec["unhealthyPodEvictionPolicy"] == "AlwaysAllow"


def test_pods_run_unprivileged(scenario: tuple[str, Rendered]) -> None:
    _, out = scenario
    (test_pod,) = out.test_pods()
    for spec in (pod_spec(out), test_pod["spec"]):
        assert spec["automountServiceAccountToken"] is False
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["runAsUser"] != 0
        (container,) = spec["containers"]
        context = container["securityContext"]
        assert context["readOnlyRootFilesystem"] is True
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"]["drop"] == ["ALL"]
    mounts = {m["mountPath"]: m["name"] for m in worker(out)["volumeMounts"]}
    volumes = {v["name"]: v for v in pod_spec(out)["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]  # scratch space despite the read-only root


def test_gpu_scenario_requests_a_gpu_and_runs_the_gpu_image(render: Any) -> None:
    gpu = render(scenario_values("gpu"))
    assert worker(gpu)["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert pod_spec(gpu)["runtimeClassName"] == "nvidia"
    assert worker(gpu)["image"] == "cropworker:0.1.0-gpu"
    assert pod_spec(gpu)["tolerations"][0]["key"] == "nvidia.com/gpu"
    # the engine runs only on the GPU model it was built for: the pods are pinned to it
    product = scenario_values("gpu")["gpu"]["product"]
    assert pod_spec(gpu)["nodeSelector"]["nvidia.com/gpu.product"] == product
    # every pod mounts the engine volume at once: read-only
    (engines,) = [v for v in pod_spec(gpu)["volumes"] if v["name"] == "engines"]
    assert engines["persistentVolumeClaim"]["readOnly"] is True
    # `helm test` needs no GPU: the CPU image, on any node
    (test_pod,) = gpu.test_pods()
    assert test_pod["spec"]["containers"][0]["image"] == "cropworker:0.1.0-cpu"
    assert "nodeSelector" not in test_pod["spec"] and "tolerations" not in test_pod["spec"]
    for name in ("default", "cpu"):
        cpu = render(scenario_values(name))
        assert "nvidia.com/gpu" not in json.dumps(worker(cpu)["resources"])
        assert "runtimeClassName" not in pod_spec(cpu)
        assert worker(cpu)["image"] == "cropworker:0.1.0-cpu"


def test_credentials_come_from_secrets_and_reach_worker_and_keda(render: Any) -> None:
    out = render(scenario_values("secure"))
    assert out.maybe("Secret") is None  # referenced, never created from values
    env = {v["name"]: v for v in worker(out)["env"]}
    for name, key in (
        ("CROPWORKER_SASL_USERNAME", "username"),
        ("CROPWORKER_SASL_PASSWORD", "password"),
    ):
        assert env[name]["valueFrom"]["secretKeyRef"] == {
            "name": "cropworker-kafka-sasl",
            "key": key,
        }
    data = out.one("ConfigMap")["data"]
    assert not [k for k in data if "PASSWORD" in k or "USERNAME" in k]
    # The TLS Secret is mounted read-only and the worker is pointed at its files.
    (mount,) = [m for m in worker(out)["volumeMounts"] if m["name"] == "kafka-tls"]
    (volume,) = [v for v in pod_spec(out)["volumes"] if v["name"] == "kafka-tls"]
    assert mount["readOnly"] is True and volume["secret"]["secretName"] == "cropworker-kafka-tls"
    config = Settings.from_env(config_env(out)).consumer_config()
    assert config["security.protocol"] == "sasl_ssl" and config["sasl.mechanism"] == "SCRAM-SHA-512"
    assert config["sasl.password"] == "from-a-secret"
    for option, key in (("ssl.ca.location", "ca.crt"), ("ssl.certificate.location", "tls.crt"),
                        ("ssl.key.location", "tls.key")):  # fmt: skip
        assert config[option] == f"{mount['mountPath']}/{key}"
    # KEDA reads the lag with the same credentials.
    auth = out.one("TriggerAuthentication")
    refs = {r["parameter"]: (r["name"], r["key"]) for r in auth["spec"]["secretTargetRef"]}
    assert refs == {
        "username": ("cropworker-kafka-sasl", "username"),
        "password": ("cropworker-kafka-sasl", "password"),
        "ca": ("cropworker-kafka-tls", "ca.crt"),
        "cert": ("cropworker-kafka-tls", "tls.crt"),
        "key": ("cropworker-kafka-tls", "tls.key"),
    }
    (trigger,) = out.one("ScaledObject")["spec"]["triggers"]
    assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]
    assert trigger["metadata"]["sasl"] == "scram_sha512" and trigger["metadata"]["tls"] == "enable"


def test_network_policy_opens_only_metrics_dns_and_kafka(render: Any) -> None:
    out = render(scenario_values("secure"))
    spec = out.one("NetworkPolicy")["spec"]
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    (ingress,) = spec["ingress"]
    assert ingress["ports"] == [{"port": "metrics", "protocol": "TCP"}]
    (test_pod,) = out.test_pods()
    assert any(
        is_subset(
            peer.get("podSelector", {}).get("matchLabels", {"-": "-"}),
            test_pod["metadata"]["labels"],
        )
        for peer in ingress["from"]
    ), "helm test must reach the metrics port"
    egress_ports = sorted(p["port"] for rule in spec["egress"] for p in rule["ports"])
    assert egress_ports == [53, 53, 9093]


def test_network_policy_lets_allowed_fetches_out(render: Any) -> None:
    """With `httpAllowedHosts`, the policy must not silently block every https upload."""
    hosts = {
        "config": {"httpAllowedHosts": ["img.example.com"]},
        "networkPolicy": {"enabled": True},
    }
    spec = render(hosts).one("NetworkPolicy")["spec"]
    (http,) = [r for r in spec["egress"] if {"port": 443, "protocol": "TCP"} in r["ports"]]
    assert "to" not in http  # any address: the worker enforces the hosts itself
    cdn = [{"ipBlock": {"cidr": "203.0.113.0/24"}}]
    narrowed = render({**hosts, "networkPolicy": {"enabled": True, "httpTo": cdn}})
    (http,) = [
        r
        for r in narrowed.one("NetworkPolicy")["spec"]["egress"]
        if {"port": 443, "protocol": "TCP"} in r["ports"]
    ]
    assert http["to"] == cdn
    closed = render({"networkPolicy": {"enabled": True}}).one("NetworkPolicy")["spec"]["egress"]
    assert not [r for r in closed if {"port": 443, "protocol": "TCP"} in r["ports"]]


def test_service_monitor_scrapes_the_metrics_path(render: Any) -> None:
    monitor = render(scenario_values("secure")).one("ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint == {
        "port": "metrics",
        "path": "/metrics",
        "interval": "30s",
        "scrapeTimeout": "10s",
    }
    assert render().maybe("ServiceMonitor") is None  # off by default


def test_the_helm_test_pod_passes_on_a_worker_and_fails_without_one(
    render: Any, served: tuple[MetricsServer, Health]
) -> None:
    """Run the test pod's own script against the worker's real /metrics endpoint."""
    server, _ = served
    (test_pod,) = render().test_pods()
    (container,) = test_pod["spec"]["containers"]
    assert container["command"] == ["python", "-c"]
    script = container["args"][0].replace("demo-cropworker:9464", f"127.0.0.1:{server.port}")
    assert f"127.0.0.1:{server.port}" in script
    assert subprocess.run([sys.executable, "-c", script], timeout=30).returncode == 0
    empty = MetricsServer(CollectorRegistry(), Health(), "127.0.0.1", 0).start()
    try:
        script = script.replace(f":{server.port}/", f":{empty.port}/")
        failed = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=30)
    finally:
        empty.stop()
    assert failed.returncode != 0 and b"cropworker_build_info" in failed.stderr


def test_notes_warn_about_idle_workers_without_keda(render: Any) -> None:
    out = render({"keda": {"enabled": False}, "replicaCount": 14})
    assert "2 will sit idle" in out.notes


def undocumented_keys(text: str) -> list[str]:
    """Keys of a values file with no `# --` comment above them or above an ancestor (a documented
    key such as `resources` covers its free-form children)."""
    lines, found = text.splitlines(), []
    documented: list[tuple[int, bool]] = []  # (indent, documented) of the enclosing keys
    for i, line in enumerate(lines):
        if not (match := re.match(r"^(\s*)([A-Za-z]\w*):", line)):
            continue
        indent = len(match.group(1))
        while documented and documented[-1][0] >= indent:
            documented.pop()
        j = i - 1
        while j >= 0 and lines[j].lstrip().startswith("#") and "# --" not in lines[j]:
            j -= 1  # continuation lines of a comment
        has_doc = j >= 0 and lines[j].lstrip().startswith("# --")
        inherited = any(doc for _, doc in documented)
        is_parent = line.rstrip().endswith(":")
        if not (has_doc or inherited or is_parent):
            found.append(match.group(2))
        documented.append((indent, has_doc or inherited))
    return found


def test_every_value_is_documented_and_the_schema_closes_every_object() -> None:
    assert undocumented_keys("a:\n  # -- doc\n  b: 1\n  c: 2\n") == ["c"]  # the check works
    assert undocumented_keys(CHART.joinpath("values.yaml").read_text()) == []

    schema = json.loads(CHART.joinpath("values.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    jsonschema.validate(chart_defaults(), schema)

    def open_objects(node: Any, path: str) -> Iterator[str]:
        if isinstance(node, dict):
            if "properties" in node and node.get("additionalProperties") is not False:
                yield path
            for key, child in node.items():
                yield from open_objects(child, f"{path}/{key}")
        elif isinstance(node, list):
            for n, child in enumerate(node):
                yield from open_objects(child, f"{path}/{n}")

    assert list(open_objects(schema, "")) == []

"""The chart's monitoring pieces, rendered by the real helm: the operator's metrics Service, the
Prometheus Operator's ServiceMonitor and PodMonitor (off by default), and the Grafana dashboard
ConfigMap (off by default), whose every query names a metric rayguard exports."""

from __future__ import annotations

import json
import re
from typing import Any

from prometheus_client import CollectorRegistry

from rayguard_node.guard.loop import MonitorState
from rayguard_node.run.health import RuntimeCollector
from rayguard_operator import names
from rayguard_operator.metrics import OperatorMetrics
from rayguard_operator.manifests.render import render_list
from rayguard_operator.settings import OperatorSettings
from testkit.kube import helm_lint, helm_template
from tests.crd_schema import REPO_ROOT

import yaml

ALL_ON = ("--set", "metrics.serviceMonitor.enabled=true", "--set", "metrics.podMonitor.enabled=true",
          "--set", "grafana.dashboard.enabled=true")


def kinds(docs: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for doc in docs:
        by_kind.setdefault(doc["kind"], []).append(doc)
    return by_kind


def exported_metric_names() -> set[str]:
    """Every sample name the operator and the runtime can produce."""
    registry = CollectorRegistry()
    registry.register(RuntimeCollector(MonitorState(), lambda: 0, lambda: 0, lambda: True))
    found = set()
    for family in list(OperatorMetrics().registry.collect()) + list(registry.collect()):
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count", ""]}.get(family.type, [""])
        found |= {family.name + suffix for suffix in suffixes}
    return found


def test_monitors_and_dashboard_are_off_by_default_and_the_metrics_service_is_there():
    docs = kinds(helm_template())
    assert not {"ServiceMonitor", "PodMonitor", "ConfigMap"} & set(docs)
    [service] = [s for s in docs["Service"] if s["metadata"]["name"].endswith("-metrics")]
    assert service["spec"]["ports"] == [{"name": "metrics", "port": 9100, "targetPort": "metrics", "protocol": "TCP"}]
    [deployment] = docs["Deployment"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "metrics", "containerPort": 9100, "protocol": "TCP"} in container["ports"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["RAYGUARD_OPERATOR_METRICS_PORT"] == "9100"
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()


def test_the_service_monitor_selects_the_metrics_service_port():
    docs = kinds(helm_template(*ALL_ON))
    [monitor] = docs["ServiceMonitor"]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    [service] = [s for s in docs["Service"] if s["metadata"]["name"].endswith("-metrics")]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [service["metadata"]["namespace"]]}
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["metrics"]


def test_the_pod_monitor_scrapes_the_runtimes_of_ray_pods():
    [monitor] = kinds(helm_template(*ALL_ON))["PodMonitor"]
    assert monitor["spec"]["selector"] == {"matchExpressions": [
        {"key": names.LABEL_CLUSTER, "operator": "Exists"}]}
    assert monitor["spec"]["namespaceSelector"] == {"any": True}
    assert [(e["port"], e["path"]) for e in monitor["spec"]["podMetricsEndpoints"]] == [("health", "/metrics")]
    # The port it names is a container port of every Ray pod the operator builds.
    body = yaml.safe_load((REPO_ROOT / "examples" / "raycluster.yaml").read_text())
    pods = [i for i in render_list(body, OperatorSettings())["items"] if i["kind"] == "Pod"]
    for pod in pods:
        assert pod["metadata"]["labels"][names.LABEL_CLUSTER]
        ports = {p["name"] for c in pod["spec"]["containers"] for p in c.get("ports", [])}
        assert "health" in ports


def test_the_pod_monitor_follows_the_watched_namespaces():
    docs = kinds(helm_template(*ALL_ON, "--set", "watchNamespaces={a,b}"))
    assert docs["PodMonitor"][0]["spec"]["namespaceSelector"] == {"matchNames": ["a", "b"]}


def test_the_dashboard_is_valid_json_and_queries_only_metrics_rayguard_exports():
    [config_map] = kinds(helm_template(*ALL_ON))["ConfigMap"]
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(config_map["data"]["rayguard.json"])
    assert dashboard == json.loads((REPO_ROOT / "charts" / "rayguard" / "dashboards" / "rayguard.json").read_text())
    titles = {panel["title"] for panel in dashboard["panels"]}
    assert {"OOM kills by reason and cluster", "Node working set, limit and guard threshold",
            "Actor quota kills and warnings"} <= titles
    queries = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    queries += [v["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    used = {m for q in queries for m in re.findall(r"\brayguard_[a-z_]+", q)}
    assert used and used <= exported_metric_names(), used - exported_metric_names()


def test_a_query_of_a_metric_nobody_exports_would_be_caught():
    assert "rayguard_made_up_total" not in exported_metric_names()
    assert "rayguard_memory_working_set_bytes" in exported_metric_names()
    assert "rayguard_reconcile_seconds_bucket" in exported_metric_names()


def test_helm_lint_with_everything_on():
    assert "0 chart(s) failed" in helm_lint("--strict", *ALL_ON)


def test_a_service_monitor_without_the_metrics_port_is_refused():
    import subprocess

    try:
        helm_template("--set", "metrics.port=0", "--set", "metrics.serviceMonitor.enabled=true")
    except (subprocess.CalledProcessError, RuntimeError) as error:
        assert "metrics.serviceMonitor.enabled needs metrics.port" in str(getattr(error, "stderr", "") or error)
    else:
        raise AssertionError("helm rendered a ServiceMonitor with nothing to scrape")

"""spec.head.service through `rayguard render`: type, annotations, labels, extra ports and
headless; and what the CRD (its CEL rules included) and the parser refuse."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from rayguard_operator import names
from rayguard_operator.manifests.render import RenderError, render_file
from rayguard_operator.manifests.service import build_head_service, service_patch
from rayguard_operator.settings import OperatorSettings
from rayguard_operator.spec.model import parse_cluster
from tests.paths import REPO_ROOT

OWN_PORTS = [{"name": n, "port": p, "targetPort": p, "protocol": "TCP"} for n, p in names.HEAD_SERVICE_PORTS]


def body(service: dict[str, Any] | None = None) -> dict[str, Any]:
    data = yaml.safe_load((REPO_ROOT / "examples" / "raycluster.yaml").read_text())
    if service is not None:
        data["spec"]["head"]["service"] = service
    return data


def render(tmp_path: Path, service: dict[str, Any] | None) -> dict[str, Any]:
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(body(service)))
    items = yaml.safe_load(render_file(path, "yaml", OperatorSettings()))["items"]
    [service_obj] = [i for i in items if i["kind"] == "Service"]
    return service_obj


def test_default_is_a_cluster_ip_service_with_rayguards_ports(tmp_path: Path) -> None:
    service = render(tmp_path, None)
    assert service["spec"]["type"] == "ClusterIP" and "clusterIP" not in service["spec"]
    assert service["spec"]["ports"] == OWN_PORTS
    assert "annotations" not in service["metadata"]
    assert service["metadata"]["labels"] == {**names.cluster_labels("demo"), names.LABEL_NODE_TYPE: names.HEAD}


def test_type_annotations_labels_and_extra_ports_render(tmp_path: Path) -> None:
    service = render(tmp_path, {
        "type": "LoadBalancer", "annotations": {"example.com/lb": "internal"}, "labels": {"team": "ml"},
        "ports": [{"name": "serve", "port": 8000}, {"name": "grpc", "port": 9000, "targetPort": "grpc-port"},
                  {"name": "stats", "port": 9125, "targetPort": 9102, "protocol": "UDP"}]})
    assert service["spec"]["type"] == "LoadBalancer"
    assert service["metadata"]["annotations"] == {"example.com/lb": "internal"}
    assert service["metadata"]["labels"]["team"] == "ml"
    assert service["metadata"]["labels"][names.LABEL_CLUSTER] == "demo"  # rayguard's own stay
    assert service["spec"]["ports"] == OWN_PORTS + [
        {"name": "serve", "port": 8000, "targetPort": 8000, "protocol": "TCP"},
        {"name": "grpc", "port": 9000, "targetPort": "grpc-port", "protocol": "TCP"},
        {"name": "stats", "port": 9125, "targetPort": 9102, "protocol": "UDP"}]
    assert service["spec"]["selector"] == names.head_selector("demo")


def test_headless_renders_cluster_ip_none(tmp_path: Path) -> None:
    service = render(tmp_path, {"headless": True})
    assert service["spec"]["clusterIP"] == "None" and service["spec"]["type"] == "ClusterIP"


@pytest.mark.parametrize("service,field", [
    ({"type": "NodePort", "headless": True}, "headless"),  # the CEL rule
    ({"type": "ExternalName"}, "spec.head.service.type"),
    ({"ports": [{"name": "dashboard", "port": 9999}]}, "name"),
    ({"ports": [{"name": "serve", "port": 70000}]}, "port"),
    ({"ports": [{"name": "serve", "port": 8000}, {"name": "serve", "port": 8001}]}, "spec.head.service.ports"),
    ({"bogus": 1}, "spec.head.service.bogus"),
])
def test_what_the_crd_refuses(tmp_path: Path, service: dict[str, Any], field: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(body(service)))
    with pytest.raises(RenderError, match=field):
        render_file(path, "yaml", OperatorSettings())


@pytest.mark.parametrize("service,field", [
    ({"type": "NodePort", "headless": True}, "spec.head.service.headless"),
    ({"ports": [{"name": "redis", "port": 9999}]}, "spec.head.service.ports[0].name"),
    ({"ports": [{"name": "other", "port": 6379}]}, "spec.head.service.ports[0].port"),
    ({"ports": [{"name": "a", "port": 8000}, {"name": "b", "port": 8000}]}, "spec.head.service.ports[1].port"),
    ({"labels": {"rayguard.dev/cluster": "x"}}, "spec.head.service.labels.rayguard.dev/cluster"),
    ({"labels": {"app.kubernetes.io/managed-by": "me"}}, "spec.head.service.labels.app.kubernetes.io/managed-by"),
    ({"annotations": {"rayguard.dev/x": "y"}}, "spec.head.service.annotations.rayguard.dev/x"),
])
def test_what_the_parser_refuses_names_the_field(service: dict[str, Any], field: str) -> None:
    """The operator checks again what the CRD may not have (objects stored before it had them)."""
    from rayguard_operator.errors import SpecError
    with pytest.raises(SpecError) as caught:
        parse_cluster({**body(service), "metadata": {"name": "demo"}}, OperatorSettings())
    assert caught.value.path == field


def test_rayguard_render_cli_prints_the_service(tmp_path: Path) -> None:
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(body({"type": "NodePort", "ports": [{"name": "serve", "port": 8000}]})))
    environ = {k: v for k, v in os.environ.items() if not k.startswith("RAYGUARD_")}
    result = subprocess.run([sys.executable, "-m", "rayguard_operator.cli", "render", "-f", str(path)],
                            capture_output=True, text=True, timeout=60, env=environ, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr
    [service] = [i for i in yaml.safe_load(result.stdout)["items"] if i["kind"] == "Service"]
    assert service["spec"]["type"] == "NodePort" and service["spec"]["ports"][-1]["name"] == "serve"


# --- when the reconciler applies the Service again -----------------------------------------

def _model(service: dict[str, Any] | None) -> Any:
    data = body(service)
    data["metadata"].update(namespace="default", uid="uid-1")
    return parse_cluster(data, OperatorSettings())


def _applied(desired: dict[str, Any]) -> dict[str, Any]:
    """`desired` as the server holds it after rayguard applied it."""
    from testkit.kube.apply import server_side_apply
    return server_side_apply(None, desired, "rayguard", True, "v1", "2030-01-01T00:00:00Z")


def test_service_patch_compares_what_rayguard_owns() -> None:
    desired = build_head_service(_model({"annotations": {"a": "1"}, "labels": {"l": "1"}}))
    live = _applied(desired)
    assert service_patch(desired, live) is None
    foreign = {**live, "metadata": {**live["metadata"], "annotations": {"a": "1", "other": "x"}}}
    assert service_patch(desired, foreign) is None  # another manager's annotation: not ours
    fewer = build_head_service(_model({"labels": {"l": "1"}}))
    assert service_patch(fewer, live) == fewer  # we applied "a" and no longer do: apply to remove it
    changed = build_head_service(_model({"annotations": {"a": "2"}, "labels": {"l": "1"}}))
    assert service_patch(changed, live) == changed
    typed = build_head_service(_model({"type": "NodePort", "annotations": {"a": "1"}, "labels": {"l": "1"}}))
    assert service_patch(typed, live) == typed
    ported = build_head_service(_model({"annotations": {"a": "1"}, "labels": {"l": "1"},
                                        "ports": [{"name": "serve", "port": 8000}]}))
    assert service_patch(ported, live) == ported
    unmanaged = {**live, "metadata": {k: v for k, v in live["metadata"].items() if k != "managedFields"}}
    assert service_patch(desired, unmanaged) == desired  # written before rayguard applied: take it over

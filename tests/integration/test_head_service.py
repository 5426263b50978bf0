"""spec.head.service under kopf against the API emulator, as the chart's ServiceAccount: the
operator applies the head Service server-side as field manager `rayguard`, so another
client's annotation survives its passes, a changed spec is applied, an annotation taken out of
the spec leaves the Service, and a headless switch recreates the Service (clusterIP is
immutable)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
MERGE = "application/merge-patch+json"
SERVICE = "minimal-head"

pytestmark = pytest.mark.timeout(180)


def minimal(service: dict[str, Any]) -> dict[str, Any]:
    body = yaml.safe_load((REPO / "examples" / "raycluster-minimal.yaml").read_text())
    body["spec"]["workerGroups"][0].update(replicas=0, minReplicas=0)
    body["spec"]["head"]["service"] = service
    return body


def ports(service: dict[str, Any]) -> dict[str, int]:
    return {p["name"]: p["port"] for p in service["spec"]["ports"]}


def annotations(service: dict[str, Any]) -> dict[str, str]:
    return service["metadata"].get("annotations") or {}


def service_or_none(operator: Any) -> dict[str, Any] | None:
    try:
        return operator.service(SERVICE)
    except Exception:  # 404 between the delete and the apply of a headless switch
        return None


def test_head_service_fields_are_applied_and_foreign_fields_survive(operator: Any) -> None:
    operator.create(minimal({"annotations": {"user": "1"}, "ports": [{"name": "serve", "port": 8000}]}))
    service = operator.wait(lambda: (s := service_or_none(operator)) and "serve" in ports(s) and s,
                            "the head Service with its extra port", timeout=30)
    assert annotations(service) == {"user": "1"} and service["spec"]["type"] == "ClusterIP"
    assert {(e["manager"], e["operation"]) for e in service["metadata"]["managedFields"]} == {("rayguard", "Apply")}

    # Another controller annotates the Service: the operator's passes leave it, and write nothing.
    operator.api.core.patch_namespaced_service(SERVICE, operator.ns, {"metadata": {"annotations": {"foreign": "x"}}},
                                               field_manager="other-controller", _content_type=MERGE)
    since = operator.api.emulator.mark()
    operator.wait_reconciles("minimal", passes=3)
    assert annotations(operator.service(SERVICE)) == {"user": "1", "foreign": "x"}
    assert operator.api.emulator.count_writes(since=since, resource="services") == 0

    # A changed spec is applied; the annotation taken out of it goes, the foreign one stays.
    operator.patch_spec("minimal", {"head": {"service": {
        "type": "NodePort", "annotations": {"user": None, "user2": "2"}, "ports": [{"name": "serve", "port": 8001}]}}})
    service = operator.wait(lambda: (s := operator.service(SERVICE))["spec"]["type"] == "NodePort"
                            and annotations(s) == {"user2": "2", "foreign": "x"} and s, "the changed Service", timeout=30)
    assert ports(service)["serve"] == 8001 and 8000 not in ports(service).values()
    assert ports(service)["gcs"] == 6379  # rayguard's own ports stay
    uid, cluster_ip = service["metadata"]["uid"], service["spec"]["clusterIP"]
    assert cluster_ip.startswith("127.1.")

    # headless on: clusterIP is immutable, so the Service is deleted and created again.
    operator.patch_spec("minimal", {"head": {"service": {"type": "ClusterIP", "headless": True}}})
    service = operator.wait(lambda: (s := service_or_none(operator)) and s["spec"].get("clusterIP") == "None" and s,
                            "a headless head Service", timeout=30)
    assert service["metadata"]["uid"] != uid and service["spec"]["type"] == "ClusterIP"
    assert annotations(service) == {"user2": "2"}  # a new object: the foreign annotation went with the old
    assert any("headless changed" in e["message"] for e in operator.events("Deleted", "minimal"))

    # ... and off again.
    operator.patch_spec("minimal", {"head": {"service": {"headless": False}}})
    service = operator.wait(lambda: (s := service_or_none(operator)) and s["spec"].get("clusterIP", "None") != "None"
                            and s, "a head Service with a cluster IP", timeout=30)
    assert service["spec"]["clusterIP"].startswith("127.1.")
    assert operator.events("ReconcileFailed", "minimal") == []  # no write was refused on the way

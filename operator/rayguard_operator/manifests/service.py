"""Pure builder of the head Service, and the test of whether the Service on the server still
holds what rayguard applies.

rayguard writes the Service with server-side apply (field manager `rayguard`, forced), so the
Service's fields are owned per field manager by Kubernetes itself: rayguard owns exactly the
fields `build_head_service` sets, and another controller's annotations, labels or ports
survive. `service_patch` decides whether an apply is due; it reads the server's
managedFields only for what rayguard applied before and no longer applies (a label,
annotation or port taken out of spec.head.service), since only the next apply removes those.
"""

from __future__ import annotations

import json
from typing import Any

from rayguard_operator import names
from rayguard_operator.spec.model import ClusterModel

FIELD_MANAGER = "rayguard"  # the field manager rayguard applies its Service as


def build_head_service(cluster: ClusterModel) -> dict[str, Any]:
    """The Service on the head pod: GCS, client, dashboard, Redis and Ray's metrics, plus
    spec.head.service's type, annotations, labels, extra ports and headless mode. This is the
    apply configuration: every field in it is one rayguard owns."""
    service = cluster.head_service
    metadata: dict[str, Any] = {
        "name": names.head_service_name(cluster.name),
        "namespace": cluster.namespace,
        "labels": {**service.labels, **names.cluster_labels(cluster.name), names.LABEL_NODE_TYPE: names.HEAD},
    }
    if service.annotations:
        metadata["annotations"] = dict(service.annotations)
    if cluster.uid:
        metadata["ownerReferences"] = [names.owner_reference(cluster.name, cluster.uid)]
    spec: dict[str, Any] = {
        "type": service.type,
        "selector": names.head_selector(cluster.name),
        "ports": [{"name": n, "port": p, "targetPort": p, "protocol": "TCP"} for n, p in names.HEAD_SERVICE_PORTS]
        + [{"name": p.name, "port": p.port, "targetPort": p.target_port, "protocol": p.protocol}
           for p in service.ports],
    }
    if service.headless:
        spec["clusterIP"] = "None"
    return {"apiVersion": "v1", "kind": "Service", "metadata": metadata, "spec": spec}


def is_headless(service: dict[str, Any]) -> bool:
    return (service.get("spec") or {}).get("clusterIP") == "None"


def needs_recreate(desired: dict[str, Any], actual: dict[str, Any] | None) -> bool:
    """clusterIP is immutable: switching headless on or off takes a new Service."""
    return actual is not None and is_headless(desired) != is_headless(actual)


def _port_key(port: dict[str, Any]) -> tuple[Any, str]:
    return port.get("port"), port.get("protocol") or "TCP"


def _ports(service: dict[str, Any]) -> dict[tuple[Any, str], tuple[Any, ...]]:
    """Ports by (port, protocol), the key the server merges them by, with its defaults filled in."""
    return {_port_key(p): (p.get("name"), p.get("targetPort", p.get("port")))
            for p in (service.get("spec") or {}).get("ports") or []}


def applied_fields(service: dict[str, Any], manager: str = FIELD_MANAGER) -> dict[str, Any] | None:
    """The fieldsV1 of `manager`'s Apply entry in managedFields; None when it has none."""
    for entry in (service.get("metadata") or {}).get("managedFields") or []:
        if entry.get("manager") == manager and entry.get("operation") == "Apply" and not entry.get("subresource"):
            return entry.get("fieldsV1") or {}
    return None


def _owned_keys(fields: dict[str, Any], *path: str) -> set[str]:
    node: Any = fields
    for step in path:
        node = node.get(step) if isinstance(node, dict) else None
    return {k for k in (node or {}) if k != "."}


def service_patch(desired: dict[str, Any], actual: dict[str, Any]) -> dict[str, Any] | None:
    """The apply configuration (`desired`) when the Service must be applied again, or None.

    Applied again when rayguard has not applied it yet (a Service written by an earlier
    version), when a field rayguard owns differs (labels and annotations by key, the selector
    as a whole, the type, ports by port and protocol, headless), or when rayguard's managed
    fields still hold a label, annotation or port that `desired` no longer has. Fields the
    server fills in (clusterIP, nodePorts, sessionAffinity, ...) and fields other managers
    own are not compared.
    """
    owned = applied_fields(actual)
    if owned is None:
        return desired
    meta, spec = actual.get("metadata") or {}, actual.get("spec") or {}
    for part in ("labels", "annotations"):
        have, want = meta.get(part) or {}, desired["metadata"].get(part) or {}
        if any(have.get(k) != v for k, v in want.items()):
            return desired
        if _owned_keys(owned, "f:metadata", f"f:{part}") - {f"f:{k}" for k in want}:
            return desired  # one rayguard applied is no longer in spec.head.service
    if spec.get("selector") != desired["spec"]["selector"] or spec.get("type", "ClusterIP") != desired["spec"]["type"]:
        return desired
    have_ports, want_ports = _ports(actual), _ports(desired)
    if any(have_ports.get(k) != v for k, v in want_ports.items()):
        return desired
    owned_ports = {(key.get("port"), key.get("protocol") or "TCP") for key in
                   (json.loads(k[2:]) for k in _owned_keys(owned, "f:spec", "f:ports") if k.startswith("k:"))}
    if owned_ports - set(want_ports) or is_headless(desired) != is_headless(actual):
        return desired
    return None

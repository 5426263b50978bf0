"""Pure builder of the head Service, and the fields of it the reconciler keeps in step."""

from __future__ import annotations

from typing import Any

from rayguard_operator import names
from rayguard_operator.spec.model import ClusterModel


def build_head_service(cluster: ClusterModel) -> dict[str, Any]:
    """ClusterIP Service on the head pod: GCS, client, dashboard, Redis and Ray's metrics."""
    metadata: dict[str, Any] = {
        "name": names.head_service_name(cluster.name),
        "namespace": cluster.namespace,
        "labels": {**names.cluster_labels(cluster.name), names.LABEL_NODE_TYPE: names.HEAD},
    }
    if cluster.uid:
        metadata["ownerReferences"] = [names.owner_reference(cluster.name, cluster.uid)]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata,
        "spec": {
            "type": "ClusterIP",
            "selector": names.head_selector(cluster.name),
            "ports": [{"name": n, "port": p, "targetPort": p, "protocol": "TCP"}
                      for n, p in names.HEAD_SERVICE_PORTS],
        },
    }


def _ports(service: dict[str, Any]) -> list[tuple[Any, ...]]:
    """Ports as the server reports them, with its defaults filled in, for comparison."""
    return [(p.get("name"), p.get("port"), p.get("targetPort", p.get("port")), p.get("protocol", "TCP"))
            for p in (service.get("spec") or {}).get("ports") or []]


def service_patch(desired: dict[str, Any], actual: dict[str, Any]) -> dict[str, Any] | None:
    """A JSON merge patch bringing `actual` back to `desired`, or None when nothing differs.

    Only what rayguard owns is compared: our labels, the selector (extra keys are removed) and
    the ports. Fields the server fills in (clusterIP, sessionAffinity, ...) are left alone.
    """
    patch: dict[str, Any] = {}
    labels = (actual.get("metadata") or {}).get("labels") or {}
    wanted_labels = desired["metadata"]["labels"]
    if any(labels.get(k) != v for k, v in wanted_labels.items()):
        patch["metadata"] = {"labels": wanted_labels}
    spec: dict[str, Any] = {}
    selector = (actual.get("spec") or {}).get("selector") or {}
    if selector != desired["spec"]["selector"]:
        spec["selector"] = {**{k: None for k in selector if k not in desired["spec"]["selector"]},
                            **desired["spec"]["selector"]}
    if _ports(actual) != _ports(desired):
        spec["ports"] = desired["spec"]["ports"]
    if spec:
        patch["spec"] = spec
    return patch or None

"""Facts about observed pods, read from their manifests: name, group, template hash,
readiness, whether they count, and the order to keep or remove them in. Pure; used by the
action planner (actions.py) and the status (status.py)."""

from __future__ import annotations

from typing import Any

from rayguard_operator import names
from rayguard_operator.spec.model import NodeGroup

DEAD_PHASES = ("Failed", "Succeeded")

def pod_name(pod: dict[str, Any]) -> str:
    return pod["metadata"]["name"]


def is_terminating(pod: dict[str, Any]) -> bool:
    return bool(pod["metadata"].get("deletionTimestamp"))


def is_dead(pod: dict[str, Any]) -> bool:
    return (pod.get("status") or {}).get("phase") in DEAD_PHASES


def is_ready(pod: dict[str, Any]) -> bool:
    status = pod.get("status") or {}
    if status.get("phase") != "Running" or is_terminating(pod):
        return False
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])


def pod_group(pod: dict[str, Any]) -> tuple[str, str]:
    labels = pod["metadata"].get("labels") or {}
    return labels.get(names.LABEL_NODE_TYPE, ""), labels.get(names.LABEL_GROUP, "")


def pod_hash(pod: dict[str, Any]) -> str:
    return (pod["metadata"].get("annotations") or {}).get(names.ANNOTATION_TEMPLATE_HASH, "")


def _created(pod: dict[str, Any]) -> str:
    return pod["metadata"].get("creationTimestamp") or ""


def scale_down_order(pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Who goes first when a group shrinks: not-ready pods, then the newest."""
    by_age = sorted(pods, key=lambda p: (_created(p), pod_name(p)), reverse=True)
    return sorted(by_age, key=is_ready)


def keep_order(pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The pods most worth keeping first: ready, then the oldest."""
    return list(reversed(scale_down_order(pods)))


def live_pods(group: NodeGroup, pods: tuple[dict[str, Any], ...]) -> list[dict[str, Any]]:
    """The group's pods that count: not terminating, not dead."""
    return [p for p in pods if pod_group(p) == (group.role, group.name)
            and not is_terminating(p) and not is_dead(p)]

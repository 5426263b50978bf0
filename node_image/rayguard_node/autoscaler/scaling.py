"""Pure rules of scaling a RayCluster: pods as Ray's NodeData, and a scale request as the new
replicas and workersToDelete of each group. Used by every ScaleTarget, so that they agree.

Replicas are absolute, as the autoscaler computes them from the pods it sees, with one guard:
a group's replicas never drop by more than the pods named for deletion. Pods the operator has
not created yet are invisible to the autoscaler; lowering replicas below them without naming
a pod would be a scale-down on a guess.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import AbstractSet, Any, Mapping

from ray.autoscaler.batching_node_provider import NodeData
from ray.autoscaler.tags import NODE_KIND_HEAD, NODE_KIND_WORKER, STATUS_UP_TO_DATE, STATUS_UPDATE_FAILED

from rayguard_node.contract.autoscaler import (ANNOTATION_SCALE_REASON, HEAD_NODE_TYPE, LABEL_GROUP,
                                               LABEL_NODE_TYPE, REASON_IDLE, REASON_PENDING)

STATUS_PENDING = "pending"
# The CRD's defaults, for an object read before the API server defaulted it (or from a test).
DEFAULT_REPLICAS, DEFAULT_MIN_REPLICAS, DEFAULT_MAX_REPLICAS = 1, 0, 1000


@dataclass(frozen=True)
class GroupState:
    """One worker group as the RayCluster's spec has it now."""

    name: str
    replicas: int
    min_replicas: int
    max_replicas: int
    workers_to_delete: tuple[str, ...] = ()


@dataclass(frozen=True)
class GroupChange:
    """What one group becomes: replicas, the pods to delete, and why."""

    replicas: int
    workers_to_delete: tuple[str, ...]
    reason: str


def node_status(phase: str, ready: bool) -> str:
    """Ray's NodeData status: up-to-date only when running and ready, update-failed when dead."""
    if phase == "Running" and ready:
        return STATUS_UP_TO_DATE
    if phase in ("Failed", "Succeeded", "Unknown"):
        return STATUS_UPDATE_FAILED
    return STATUS_PENDING


def pod_ready(pod: Mapping[str, Any]) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def node_data(pod: Mapping[str, Any]) -> NodeData | None:
    """A pod as Ray's NodeData; None for a pod being deleted or not a rayguard node."""
    meta = pod.get("metadata") or {}
    if meta.get("deletionTimestamp"):
        return None  # gone as far as the autoscaler is concerned (Ray's consistency rule)
    labels = meta.get("labels") or {}
    kind = labels.get(LABEL_NODE_TYPE)
    if kind == NODE_KIND_HEAD:
        node_type = HEAD_NODE_TYPE
    elif kind == NODE_KIND_WORKER and labels.get(LABEL_GROUP):
        node_type = labels[LABEL_GROUP]
    else:
        return None
    status = pod.get("status") or {}
    return NodeData(kind=kind, type=node_type, ip=status.get("podIP") or None,
                    status=node_status(str(status.get("phase") or ""), pod_ready(pod)))


def nodes_of(pods: list[Mapping[str, Any]]) -> dict[str, NodeData]:
    nodes = {}
    for pod in pods:
        data = node_data(pod)
        if data is not None:
            nodes[str(pod["metadata"]["name"])] = data
    return nodes


def groups_of(raycluster: Mapping[str, Any]) -> dict[str, GroupState]:
    groups = {}
    for group in (raycluster.get("spec") or {}).get("workerGroups") or []:
        groups[str(group["name"])] = GroupState(
            str(group["name"]), int(group.get("replicas", DEFAULT_REPLICAS)),
            int(group.get("minReplicas", DEFAULT_MIN_REPLICAS)), int(group.get("maxReplicas", DEFAULT_MAX_REPLICAS)),
            tuple(group.get("workersToDelete") or ()))
    return groups


def unconsumed(groups: Mapping[str, GroupState]) -> frozenset[str]:
    """Pods still named in some group's workersToDelete: the operator has not finished with them."""
    return frozenset(name for group in groups.values() for name in group.workers_to_delete)


def plan_scale(groups: Mapping[str, GroupState], node_types: Mapping[str, str], desired: Mapping[str, int],
               to_delete: AbstractSet[str], reasons: Mapping[str, str]) -> dict[str, GroupChange]:
    """The groups a scale request changes. `node_types` maps pod names to their group (the
    pods the request was computed from); a name it does not know, or a group the spec no
    longer has, is left out. Replicas lie in [minReplicas, maxReplicas]."""
    deleting: dict[str, list[str]] = {}
    for pod in sorted(to_delete):
        if node_types.get(pod) in groups:
            deleting.setdefault(node_types[pod], []).append(pod)
    changes = {}
    for name, group in groups.items():
        named = deleting.get(name, [])
        wanted = desired.get(name, group.replicas)
        replicas = max(wanted, group.replicas - len(named))
        replicas = min(max(replicas, group.min_replicas), group.max_replicas)
        if replicas == group.replicas and not named:
            continue
        names = tuple(dict.fromkeys(group.workers_to_delete + tuple(named)))  # keep what is still listed
        reason = reasons.get(name) or (REASON_PENDING if replicas > group.replicas else REASON_IDLE)
        changes[name] = GroupChange(replicas, names, reason)
    return changes


def scale_patch(raycluster: Mapping[str, Any], changes: Mapping[str, GroupChange]) -> dict[str, Any]:
    """One JSON merge patch for `changes`: the whole workerGroups list (a merge patch replaces a
    list), each group as `raycluster` has it with only replicas and workersToDelete changed; the
    reasons annotation; and the resourceVersion read, so that a write in between is a 409."""
    spec_groups = (raycluster.get("spec") or {}).get("workerGroups") or []
    groups = []
    for group in spec_groups:
        change = changes.get(group["name"])
        group = dict(group)
        if change is not None:
            group["replicas"] = change.replicas
            if change.workers_to_delete:
                group["workersToDelete"] = list(change.workers_to_delete)
        groups.append(group)
    reasons = {name: change.reason for name, change in sorted(changes.items())}
    meta = raycluster.get("metadata") or {}
    return {"metadata": {"resourceVersion": meta.get("resourceVersion"),
                         "annotations": {ANNOTATION_SCALE_REASON: json.dumps(reasons, sort_keys=True)}},
            "spec": {"workerGroups": groups}}


def reasons_for(current: Mapping[str, int], desired: Mapping[str, int],
                deleted: Mapping[str, int]) -> dict[str, str]:
    """Why each group changes: a group that launches is growing for pending demand; one that
    only loses named workers is shrinking because they were idle."""
    reasons = {}
    for name in set(desired) | set(deleted):
        launched = desired.get(name, 0) - (current.get(name, 0) - deleted.get(name, 0))
        if launched > 0:
            reasons[name] = REASON_PENDING
        elif deleted.get(name, 0) > 0:
            reasons[name] = REASON_IDLE
    return reasons

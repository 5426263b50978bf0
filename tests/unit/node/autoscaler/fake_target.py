"""An in-memory cluster manager behind the ScaleTarget seam, for the provider's unit tests: it
keeps a RayCluster spec and its pods, applies scale requests with the same pure rules as the
real targets (scaling.py), and plays the operator on request (`operator_pass`)."""

from __future__ import annotations

import itertools
from typing import AbstractSet, Any, Mapping

from ray.autoscaler.batching_node_provider import NodeData
from ray.autoscaler.tags import TAG_RAY_USER_NODE_TYPE

from rayguard_node.autoscaler.scaling import groups_of, nodes_of, plan_scale, unconsumed
from rayguard_node.autoscaler.provider import RayguardNodeProvider
from rayguard_node.autoscaler.target import TargetUnavailable
from rayguard_node.contract.autoscaler import LABEL_CLUSTER, LABEL_GROUP, LABEL_NODE_TYPE


def pod(name: str, group: str | None, phase: str = "Running", ready: bool = True, ip: str = "10.0.0.1",
        deleting: bool = False) -> dict[str, Any]:
    labels = {LABEL_CLUSTER: "demo", LABEL_NODE_TYPE: "worker" if group else "head"}
    if group:
        labels[LABEL_GROUP] = group
    meta: dict[str, Any] = {"name": name, "labels": labels}
    if deleting:
        meta["deletionTimestamp"] = "2030-01-01T00:00:00Z"
    return {"metadata": meta, "status": {"phase": phase, "podIP": ip,
                                         "conditions": [{"type": "Ready", "status": str(ready)}]}}


class FakeTarget:
    def __init__(self, groups: Mapping[str, tuple[int, int, int]]) -> None:
        """groups: name -> (replicas, minReplicas, maxReplicas)."""
        self.spec: dict[str, Any] = {"workerGroups": [
            {"name": n, "replicas": r, "minReplicas": lo, "maxReplicas": hi} for n, (r, lo, hi) in groups.items()]}
        self.pods: dict[str, dict[str, Any]] = {"demo-head": pod("demo-head", None)}
        self.submits: list[tuple[dict[str, int], frozenset[str], dict[str, str]]] = []
        self.reads = 0
        self.failing = False
        self._names = itertools.count()
        self._node_types: dict[str, str] = {}

    def raycluster(self) -> dict[str, Any]:
        return {"metadata": {"name": "demo", "resourceVersion": "1"}, "spec": self.spec}

    def nodes(self) -> dict[str, NodeData]:
        self.reads += 1
        if self.failing:
            raise TargetUnavailable("the API server is gone")
        nodes = nodes_of(list(self.pods.values()))
        self._node_types = {name: data.type for name, data in nodes.items()}
        return nodes

    def unconsumed_deletions(self) -> frozenset[str]:
        return unconsumed(groups_of(self.raycluster()))

    def submit(self, desired: Mapping[str, int], to_delete: AbstractSet[str], reasons: Mapping[str, str]) -> None:
        self.submits.append((dict(desired), frozenset(to_delete), dict(reasons)))
        for name, change in plan_scale(groups_of(self.raycluster()), self._node_types, desired, to_delete,
                                       reasons).items():
            [group] = [g for g in self.spec["workerGroups"] if g["name"] == name]
            group["replicas"] = change.replicas
            group["workersToDelete"] = list(change.workers_to_delete)

    def group(self, name: str) -> dict[str, Any]:
        return next(g for g in self.spec["workerGroups"] if g["name"] == name)

    def operator_pass(self, create: bool = True) -> None:
        """What the operator does: delete the named pods, clear the lists, make missing pods."""
        for group in self.spec["workerGroups"]:
            for name in group.pop("workersToDelete", None) or []:
                self.pods.pop(name, None)
            mine = [p for p in self.pods.values() if p["metadata"]["labels"].get(LABEL_GROUP) == group["name"]]
            for _ in range(group["replicas"] - len(mine) if create else 0):
                name = f"demo-{group['name']}-{next(self._names)}"
                self.pods[name] = pod(name, group["name"])

    def workers(self, group: str) -> set[str]:
        return {n for n, p in self.pods.items() if p["metadata"]["labels"].get(LABEL_GROUP) == group}


def update(p: RayguardNodeProvider, launch: dict[str, int] | None = None, terminate: tuple[str, ...] = ()) -> bool:
    """One autoscaler update, driven as Ray's StandardAutoscaler drives a provider; False when
    it backed off (safe_to_scale)."""
    p.non_terminated_nodes({})
    if not p.safe_to_scale():
        return False
    for group, count in (launch or {}).items():
        p.create_node({}, {TAG_RAY_USER_NODE_TYPE: group}, count)
    for node in terminate:
        p.terminate_node(node)
    p.post_process()
    return True

"""Status: computed from the model and the pods, compared, and patched only where it differs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from rayguard_operator.spec.model import ClusterModel, parse_cluster
from rayguard_operator.settings import OperatorSettings
from rayguard_operator.reconcile.status import compute_status, invalid_status, merge_patch
from tests.crd_schema import validate_against_crd
from tests.paths import REPO_ROOT

REPO = REPO_ROOT
T0, T1 = "2030-01-01T00:00:00Z", "2030-01-01T00:05:00Z"


def body() -> dict[str, Any]:
    data = yaml.safe_load((REPO / "examples" / "raycluster.yaml").read_text())
    data["metadata"].update(uid="u", namespace="default", generation=3)
    data["spec"]["workerGroups"][1]["replicas"] = 1
    return data


def cluster() -> ClusterModel:
    return parse_cluster(body(), OperatorSettings())


def pod(name: str, role: str, group: str, ready: bool = False, phase: str = "Running",
        ip: str | None = None) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": phase, "conditions": [{"type": "Ready", "status": str(ready)}]}
    if ip:
        status["podIP"] = ip
    return {"metadata": {"name": name, "creationTimestamp": T0,
                         "labels": {"rayguard.dev/node-type": role, "rayguard.dev/group": group}},
            "status": status}


def conditions(status: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}


def test_pending_running_ready() -> None:
    model = cluster()
    head = pod("demo-head-a", "head", "head", ready=False, phase="Pending")
    cpu, hm = pod("demo-worker-cpu-a", "worker", "cpu"), pod("demo-worker-highmem-a", "worker", "highmem")
    status = compute_status(model, (head, cpu, hm), {}, T0)
    assert status["phase"] == "Pending"
    assert status["head"] == {"serviceName": "demo-head", "ready": False, "podName": "demo-head-a"}
    assert conditions(status) == {"SpecValid": ("True", "SpecValid"), "HeadReady": ("False", "HeadPodNotReady"),
                                  "WorkersReady": ("False", "WorkersNotReady"), "Ready": ("False", "HeadNotReady")}
    head = pod("demo-head-a", "head", "head", ready=True, ip="10.1.2.3")
    cpu = pod("demo-worker-cpu-a", "worker", "cpu", ready=True)
    status = compute_status(model, (head, cpu, hm), status, T1)
    assert status["phase"] == "Running" and status["head"]["podIP"] == "10.1.2.3"
    assert status["workerGroups"] == [{"name": "cpu", "desired": 1, "ready": 1},
                                      {"name": "highmem", "desired": 1, "ready": 0}]
    assert (status["workersReady"], status["workersDesired"]) == (1, 2)
    assert "highmem: 0/1 ready" in next(c["message"] for c in status["conditions"] if c["type"] == "WorkersReady")
    hm = pod("demo-worker-highmem-a", "worker", "highmem", ready=True)
    status = compute_status(model, (head, cpu, hm), status, T1)
    assert status["phase"] == "Ready" and conditions(status)["Ready"] == ("True", "ClusterReady")
    assert all(c["observedGeneration"] == 3 for c in status["conditions"])
    assert status["observedGeneration"] == 3


def test_memory_plan_per_group() -> None:
    status = compute_status(cluster(), (), {}, T0)
    assert set(status["memoryPlan"]) == {"head", "cpu", "highmem"}
    head = status["memoryPlan"]["head"]
    assert head["numCpus"] == 0 and head["limitBytes"] == 2 * 1024**3
    assert head["objectStoreBytes"] == int(2 * 1024**3 * 0.25)
    assert status["memoryPlan"]["cpu"]["redisMaxBytes"] == 0


def test_transition_time_moves_only_with_the_status() -> None:
    model = cluster()
    first = compute_status(model, (), {}, T0)
    again = compute_status(model, (), first, T1)
    assert again == first and merge_patch(first, again) == {}
    ready = (pod("demo-head-a", "head", "head", ready=True),)
    moved = compute_status(model, ready, first, T1)
    times = {c["type"]: c["lastTransitionTime"] for c in moved["conditions"]}
    assert times == {"SpecValid": T0, "HeadReady": T1, "WorkersReady": T0, "Ready": T0}


def test_invalid_keeps_what_it_cannot_know() -> None:
    model = cluster()
    valid = {**compute_status(model, (), {}, T0), "oom": {"total": 2}}
    status = invalid_status(4, "spec.memory.redisMaxBytes: must not be negative", valid, T1)
    assert status["phase"] == "Invalid" and status["observedGeneration"] == 4
    assert conditions(status) == {"SpecValid": ("False", "InvalidSpec"), "HeadReady": ("False", "HeadPodMissing"),
                                  "WorkersReady": ("False", "WorkersNotReady"), "Ready": ("False", "InvalidSpec")}
    patch = merge_patch(valid, status)
    assert set(patch) == {"phase", "observedGeneration", "conditions"}  # head, oom, ... untouched


def test_merge_patch_removes_gone_groups_but_not_foreign_fields() -> None:
    current = {"memoryPlan": {"head": {"a": 1}, "old": {"a": 1}}, "oom": {"total": 1}, "phase": "Ready"}
    desired = {"memoryPlan": {"head": {"a": 1}}, "phase": "Ready"}
    assert merge_patch(current, desired) == {"memoryPlan": {"old": None}}
    assert merge_patch(desired, desired) == {}


def test_status_is_accepted_by_the_crd() -> None:
    model = cluster()
    pods = (pod("demo-head-a", "head", "head", ready=True, ip="10.0.0.1"),)
    for status in (compute_status(model, pods, {}, T0), compute_status(model, (), {}, T0, failure="create Pod x failed (422 Invalid)"),
                   invalid_status(1, "spec.head: is required", {}, T0)):
        assert validate_against_crd({**body(), "status": status}) == []
    failed = compute_status(model, pods, {}, T0, failure="create Pod x failed (403 Forbidden)")
    assert failed["phase"] == "Failed" and conditions(failed)["Ready"] == ("False", "ReconcileFailed")

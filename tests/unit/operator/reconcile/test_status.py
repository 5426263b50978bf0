"""Status: computed from the model and the pods, compared, and patched only where it differs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from rayguard_operator import names
from rayguard_operator.manifests.pod import build_pod, template_hash
from rayguard_operator.spec.model import ClusterModel, parse_cluster
from rayguard_operator.settings import OperatorSettings
from rayguard_operator.reconcile.status import (CURRENT, DISABLED, HEAD_OUTDATED, HELD_BACK, PENDING, compute_status,
                                               head_outdated_note, invalid_status, merge_patch)
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
        ip: str | None = None, model: ClusterModel | None = None) -> dict[str, Any]:
    """A pod of `model`'s current template (the default cluster's when none is given)."""
    status: dict[str, Any] = {"phase": phase, "conditions": [{"type": "Ready", "status": str(ready)}]}
    if ip:
        status["podIP"] = ip
    model = model or cluster()
    return {"metadata": {"name": name, "creationTimestamp": T0,
                         "labels": {"rayguard.dev/node-type": role, "rayguard.dev/group": group},
                         "annotations": {names.ANNOTATION_TEMPLATE_HASH:
                                         template_hash(model, model.group(group))}},  # type: ignore[arg-type]
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


# --- outdated pods and HeadOutdated ----------------------------------------------------------

def built(model: ClusterModel, name: str, group: str, ready: bool = True) -> dict[str, Any]:
    """A pod as the operator built it from `model` (so with its template parts), then ready."""
    pod = build_pod(model, model.group(group), name)  # type: ignore[arg-type]
    pod["status"] = {"phase": "Running", "conditions": [{"type": "Ready", "status": str(ready)}]} if ready \
        else {"phase": "Pending"}
    return pod


def changed(edit: Any, strategy: str | None = None, fault_tolerant: bool = False) -> ClusterModel:
    data = body()
    edit(data["spec"])
    if strategy:
        data["spec"]["upgradeStrategy"] = {"type": strategy}
    if fault_tolerant:
        data["spec"]["gcsFaultTolerance"] = {"redisAddress": "redis.example:6379"}
    return parse_cluster(data, OperatorSettings())


def old_pods(head_ready: bool = True) -> tuple[dict[str, Any], ...]:
    model = cluster()
    return (built(model, "demo-head-a", "head", head_ready), built(model, "demo-worker-cpu-a", "cpu"),
            built(model, "demo-worker-highmem-a", "highmem"))


def condition(status: dict[str, Any], kind: str = HEAD_OUTDATED) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == kind)


def new_image(spec: dict[str, Any]) -> None:
    spec["image"] = "rayguard/node:0.2.0"


def test_a_current_cluster_has_no_outdated_pods_and_no_head_outdated() -> None:
    model = cluster()
    status = compute_status(model, old_pods(), {}, T0)
    assert status["outdatedPods"] == 0 and HEAD_OUTDATED not in conditions(status)
    assert head_outdated_note({}, status) is None


def test_an_image_change_held_back_on_the_head_says_what_changed_and_what_to_do() -> None:
    status = compute_status(changed(new_image), old_pods(), {}, T0)
    assert status["outdatedPods"] == 3
    held = condition(status)
    assert (held["status"], held["reason"]) == ("True", HELD_BACK)
    message = held["message"]
    assert "head pod demo-head-a" in message and "(changed: image)" in message
    assert "kubectl" not in message and "delete pod demo-head-a" in message
    assert "Recreate" in message and "spec.gcsFaultTolerance" in message and "loses every job" in message
    note = head_outdated_note({}, status)
    assert note is not None and (note.type, note.reason, note.message) == ("Warning", "HeadOutdated", message)
    again = compute_status(changed(new_image), old_pods(), status, T1)
    assert again == status and head_outdated_note(status, again) is None  # once, not every pass
    assert validate_against_crd({**body(), "status": status}) == []


@pytest.mark.parametrize("edit, parts", [
    (lambda s: s["memory"].update(usageThreshold=0.8), "memory"),
    (lambda s: s["head"]["resources"]["limits"].update(memory="3Gi"), "resources, memory"),
    (lambda s: s["head"].update(rayStartParams={"disable-usage-stats": True}), "rayStartParams"),
    (lambda s: (new_image(s), s["memory"].update(quota={"enforcement": "Warn"})), "image, memory.quota"),
    (lambda s: s["head"].update(template={"metadata": {"labels": {"team": "a"}}}), "other pod settings"),
], ids=["memory", "limit", "rayStartParams", "image-and-quota", "overlay"])
def test_the_changed_parts_are_named(edit: Any, parts: str) -> None:
    message = condition(compute_status(changed(edit), old_pods(), {}, T0))["message"]
    assert f"(changed: {parts}" in message, message


def test_a_head_from_an_operator_that_recorded_no_parts_is_still_outdated() -> None:
    pods = old_pods()
    del pods[0]["metadata"]["annotations"][names.ANNOTATION_TEMPLATE_PARTS]
    message = condition(compute_status(changed(new_image), pods, {}, T0))["message"]
    assert "(changed: the pod template)" in message


@pytest.mark.parametrize("strategy, fault_tolerant, head_ready, reason, words", [
    ("RollingUpdate", True, True, PENDING, "replaces it after the workers"),
    ("RollingUpdate", False, False, PENDING, "replaces it after the workers"),  # never started
    ("Recreate", False, True, PENDING, "replaces it now"),
    ("None", True, True, DISABLED, "upgradeStrategy None replaces no pod"),
])
def test_the_reason_follows_the_strategy(strategy: str, fault_tolerant: bool, head_ready: bool, reason: str,
                                         words: str) -> None:
    status = compute_status(changed(new_image, strategy, fault_tolerant), old_pods(head_ready), {}, T0)
    held = condition(status)
    assert (held["status"], held["reason"]) == ("True", reason) and words in held["message"]
    assert head_outdated_note({}, status) is None  # only a head RollingUpdate keeps back is warned about


def test_head_outdated_turns_false_once_the_head_is_current() -> None:
    model = changed(new_image)
    outdated = compute_status(model, old_pods(), {}, T0)
    current = (built(model, "demo-head-b", "head"), built(model, "demo-worker-cpu-b", "cpu"),
               built(model, "demo-worker-highmem-b", "highmem"))
    status = compute_status(model, current, outdated, T1)
    back = condition(status)
    assert (back["status"], back["reason"], back["lastTransitionTime"]) == ("False", CURRENT, T1)
    assert "demo-head-b runs the current template" in back["message"] and status["outdatedPods"] == 0
    # A change after that is news again.
    later = compute_status(changed(lambda s: s["memory"].update(usageThreshold=0.8)), current, status, T1)
    assert head_outdated_note(status, later) is not None


def test_outdated_pods_count_only_live_pods_of_the_spec() -> None:
    pods = old_pods()
    pods[1]["metadata"]["deletionTimestamp"] = T1  # leaving
    pods[2]["status"] = {"phase": "Failed"}  # dead, replaced anyway
    gone = built(cluster(), "demo-worker-gone-a", "cpu")
    gone["metadata"]["labels"]["rayguard.dev/group"] = "gone"
    assert compute_status(changed(new_image), (*pods, gone), {}, T0)["outdatedPods"] == 1  # the head

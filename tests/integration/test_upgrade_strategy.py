"""spec.upgradeStrategy under kopf against the API emulator: who is replaced when a pod
template changes, HeadOutdated and its one Warning, and status.outdatedPods.

The emulator has no kubelet: pods stay Pending until a test marks them ready. A head that
never started is replaced like a worker (it holds no GCS), so each test readies the head
before it changes the template.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
NEW_IMAGE = "rayguard/node:0.2.0"

pytestmark = pytest.mark.timeout(180)


def minimal(strategy: str | None = None, fault_tolerant: bool = False, workers: int = 2) -> dict[str, Any]:
    body = yaml.safe_load((REPO / "examples" / "raycluster-minimal.yaml").read_text())
    body["spec"]["workerGroups"][0].update(replicas=workers, maxReplicas=10)
    if strategy is not None:
        body["spec"]["upgradeStrategy"] = {"type": strategy}
    if fault_tolerant:
        body["spec"]["gcsFaultTolerance"] = {"redisAddress": "redis.example:6379"}
    return body


def image_of(pod: dict[str, Any]) -> str:
    return pod["spec"]["containers"][0]["image"]


def ids(operator: Any, group: str | None = None) -> dict[str, str]:
    """name → uid of the cluster's pods (a replacement has a new uid even under the same name)."""
    return {p["metadata"]["name"]: p["metadata"]["uid"] for p in operator.pods("minimal", group)}


def ready_cluster(operator: Any, body: dict[str, Any]) -> None:
    operator.create(body)
    pods = 1 + body["spec"]["workerGroups"][0]["replicas"]
    operator.wait(lambda: len(operator.pods("minimal")) == pods, "the pods")
    for pod in operator.pod_names("minimal"):
        operator.set_ready(pod)
    operator.wait(lambda: operator.status("minimal").get("phase") == "Ready", "phase Ready")


def change_image(operator: Any, body: dict[str, Any]) -> None:
    spec = copy.deepcopy(body["spec"])
    spec["image"] = NEW_IMAGE
    operator.patch_spec("minimal", spec)


def ready_new_pods(operator: Any, old: dict[str, str]) -> None:
    for name, uid in ids(operator).items():
        if old.get(name) != uid:
            operator.set_ready(name)


def test_rolling_update_without_fault_tolerance_keeps_the_head_and_warns_once(operator: Any) -> None:
    body = minimal()
    ready_cluster(operator, body)
    head = ids(operator, "head")
    workers = ids(operator, "cpu")
    change_image(operator, body)

    # The workers go one at a time (each once its predecessor is ready); the head stays.
    for step in (1, 2):
        # Replaced: the old pod gone and its replacement there (it may come a pass later).
        operator.wait(lambda: len(set(workers) - set(ids(operator, "cpu"))) == step
                      and len(ids(operator, "cpu")) == len(workers), f"worker {step} replaced")
        ready_new_pods(operator, {**head, **workers})
    operator.wait(lambda: operator.status("minimal").get("outdatedPods") == 1, "only the head outdated")
    held = operator.condition("minimal", "HeadOutdated")
    assert (held["status"], held["reason"]) == ("True", "ReplacementHeldBack")
    [name] = head
    assert f"head pod {name} runs an outdated template (changed: image)" in held["message"]
    assert "spec.gcsFaultTolerance" in held["message"] and "Recreate" in held["message"]
    operator.wait_reconciles("minimal", passes=3)

    assert ids(operator, "head") == head  # the same pod: same name, same uid
    [head_pod] = operator.pods("minimal", "head")
    assert image_of(head_pod) == "rayguard/node:test"
    assert all(image_of(p) == NEW_IMAGE for p in operator.pods("minimal", "cpu"))
    [warning] = operator.events(reason="HeadOutdated", cluster="minimal")  # once, not every pass
    assert warning["type"] == "Warning" and warning["message"] == held["message"]
    operator.wait(lambda: operator.status("minimal").get("phase") == "Ready", "phase Ready with the head held back")

    # The user applies it: the new head has the new image, and the condition clears.
    operator.delete_pod(name)
    operator.wait(lambda: set(ids(operator, "head")) - {name}, "a new head")
    [new_head] = operator.pods("minimal", "head")
    assert image_of(new_head) == NEW_IMAGE
    operator.set_ready(new_head["metadata"]["name"])
    operator.wait(lambda: operator.condition("minimal", "HeadOutdated").get("status") == "False", "HeadOutdated=False")
    assert operator.status("minimal")["outdatedPods"] == 0
    assert len(operator.events(reason="HeadOutdated", cluster="minimal")) == 1


def test_rolling_update_with_fault_tolerance_replaces_the_head_after_the_workers(operator: Any) -> None:
    body = minimal(fault_tolerant=True)
    ready_cluster(operator, body)
    old = ids(operator)
    old_head = set(ids(operator, "head"))
    spec = copy.deepcopy(body["spec"])
    spec["memory"] = {"usageThreshold": 0.9}
    operator.patch_spec("minimal", spec)
    replaced: list[str] = []
    for step in range(3):
        # Exactly one old pod is replaced; the rest wait until its replacement is ready.
        operator.wait(lambda: len(set(old) - set(ids(operator))) == step + 1, f"replacement {step + 1}")
        operator.wait_reconciles("minimal", passes=2)
        current = ids(operator)
        assert len(set(old) - set(current)) == step + 1 and len(current) == 3
        assert operator.status("minimal")["outdatedPods"] == 2 - step
        replaced = sorted(set(old) - set(current), key=lambda n: n in old_head)
        if step < 2:
            assert not (old_head & set(replaced)), "the head went before a worker"
            held = operator.condition("minimal", "HeadOutdated")
            assert (held["status"], held["reason"]) == ("True", "ReplacementPending")
            assert "(changed: memory)" in held["message"]
        ready_new_pods(operator, old)
    assert old_head <= set(replaced)
    operator.wait(lambda: operator.status("minimal").get("phase") == "Ready", "phase Ready again")
    operator.wait(lambda: operator.condition("minimal", "HeadOutdated").get("status") == "False", "HeadOutdated=False")
    assert all(env["value"] == "0.9" for p in operator.pods("minimal") for env in p["spec"]["containers"][0]["env"]
               if env["name"] == "RAYGUARD_USAGE_THRESHOLD")
    assert operator.events(reason="HeadOutdated", cluster="minimal") == []


def test_recreate_replaces_every_outdated_pod_at_once(operator: Any) -> None:
    body = minimal("Recreate")
    ready_cluster(operator, body)
    old = ids(operator)
    change_image(operator, body)
    # Nothing is made ready: all three go without waiting for each other.
    operator.wait(lambda: not set(old) & set(ids(operator)) and len(ids(operator)) == 3, "all three replaced")
    assert all(image_of(p) == NEW_IMAGE for p in operator.pods("minimal"))
    operator.wait(lambda: operator.status("minimal").get("outdatedPods") == 0, "no outdated pod")
    deleted = [e for e in operator.events(reason="Deleted", cluster="minimal") if "Recreate" in e["message"]]
    assert len(deleted) == 3
    assert operator.events(reason="HeadOutdated", cluster="minimal") == []


def test_none_replaces_nothing_for_a_template_change(operator: Any) -> None:
    body = minimal("None", fault_tolerant=True)
    ready_cluster(operator, body)
    old = ids(operator)
    change_image(operator, body)
    operator.wait(lambda: operator.status("minimal").get("outdatedPods") == 3, "three outdated pods")
    operator.wait_reconciles("minimal", passes=3)
    assert ids(operator) == old
    held = operator.condition("minimal", "HeadOutdated")
    assert (held["status"], held["reason"]) == ("True", "ReplacementDisabled")
    assert operator.events(reason="HeadOutdated", cluster="minimal") == []
    assert operator.events(reason="Deleted", cluster="minimal") == []

    # A missing pod is still made, from the current template.
    gone = sorted(ids(operator, "cpu"))[0]
    operator.delete_pod(gone)
    operator.wait(lambda: len(set(ids(operator, "cpu")) - set(old)) == 1, "a replacement worker")
    [new] = [p for p in operator.pods("minimal", "cpu") if p["metadata"]["name"] not in old]
    assert image_of(new) == NEW_IMAGE
    operator.wait(lambda: operator.status("minimal").get("outdatedPods") == 2, "two outdated pods")

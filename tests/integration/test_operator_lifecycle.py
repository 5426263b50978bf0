"""The operator under kopf against the API emulator: a cluster's whole life.

The emulator has no kubelet, so each test marks pods Running and Ready (or Failed) itself by
patching their status, as a kubelet would.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml

from rayguard_node.sizing.plan import BudgetSettings, NodeFacts, make_plan
from testkit.kube.semantics import resource_of

REPO = Path(__file__).resolve().parents[2]
GiB = 1024**3

pytestmark = pytest.mark.timeout(180)


def minimal(workers: int = 2) -> dict[str, Any]:
    body = yaml.safe_load((REPO / "examples" / "raycluster-minimal.yaml").read_text())
    body["spec"]["workerGroups"][0]["replicas"] = workers
    body["spec"]["workerGroups"][0]["maxReplicas"] = 10
    return body


def env_of(pod: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in pod["spec"]["containers"][0]["env"]}


def test_create_builds_secret_service_and_pods(operator: Any) -> None:
    uid = operator.create(minimal())["metadata"]["uid"]
    operator.wait(lambda: len(operator.pods("minimal")) == 3, "the head and two workers")
    owner = [{"apiVersion": "rayguard.dev/v1", "kind": "RayCluster", "name": "minimal", "uid": uid,
              "controller": True, "blockOwnerDeletion": True}]

    secret = operator.secret("minimal-secret")
    assert secret["metadata"]["ownerReferences"] == owner
    values = secret.get("stringData") or {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert set(values) == {"ray-auth-token", "redis-password"}
    assert all(len(v) >= 32 for v in values.values()) and values["ray-auth-token"] != values["redis-password"]

    service = operator.service("minimal-head")
    assert service["metadata"]["ownerReferences"] == owner
    assert service["spec"]["selector"] == {"rayguard.dev/cluster": "minimal", "rayguard.dev/node-type": "head"}
    assert sorted(p["port"] for p in service["spec"]["ports"]) == [6379, 6380, 8080, 8265, 10001]

    pods = operator.pods("minimal")
    [head] = [p for p in pods if p["metadata"]["labels"]["rayguard.dev/node-type"] == "head"]
    workers = [p for p in pods if p is not head]
    assert head["metadata"]["name"].startswith("minimal-head-")
    assert all(p["metadata"]["name"].startswith("minimal-worker-cpu-") for p in workers)
    facts = NodeFacts(limit_bytes=2 * GiB, limit_source="pod-spec", cpu_limit=1.0, ray_sees_limit=True)
    for pod, role in [(head, "head")] + [(w, "worker") for w in workers]:
        labels = pod["metadata"]["labels"]
        assert labels["rayguard.dev/cluster"] == "minimal" and labels["rayguard.dev/node-type"] == role
        assert labels["rayguard.dev/group"] == ("head" if role == "head" else "cpu")
        assert pod["metadata"]["ownerReferences"] == owner
        assert pod["metadata"]["annotations"]["rayguard.dev/template-hash"]
        env = env_of(pod)
        planned = make_plan(role, facts, BudgetSettings()).object_store_bytes
        [shm] = [v for v in pod["spec"]["volumes"] if v["name"] == "dshm"]
        assert shm["emptyDir"] == {"medium": "Memory", "sizeLimit": str(planned)}
        assert env["RAYGUARD_OBJECT_STORE_BYTES"] == str(planned)
        assert env["RAYGUARD_ROLE"] == role and env["POD_NAME"]["fieldRef"]["fieldPath"] == "metadata.name"
        assert env["RAYGUARD_LIMIT_BYTES"]["resourceFieldRef"]["resource"] == "limits.memory"
        assert pod["spec"]["containers"][0]["image"] == "rayguard/node:test"  # the operator's setting
    assert env_of(head)["RAYGUARD_NUM_CPUS"] == "0"
    assert env_of(workers[0])["RAYGUARD_HEAD_ADDRESS"] == "minimal-head.default.svc:6379"

    created = operator.events(reason="Created", cluster="minimal")
    assert all(e["type"] == "Normal" and e["involvedObject"]["uid"] == uid for e in created)
    messages = sorted(e["message"] for e in created)
    assert [m.split()[1] for m in messages] == ["Pod", "Pod", "Pod", "Secret", "Service"]
    assert not any(v in json.dumps(operator.events()) for v in values.values())  # never in events
    assert not any(v in json.dumps(operator.status("minimal")) for v in values.values())


def test_status_follows_pod_readiness(operator: Any) -> None:
    operator.create(minimal())
    operator.wait(lambda: operator.status("minimal").get("phase") == "Pending", "phase Pending")
    status = operator.status("minimal")
    assert status["observedGeneration"] == operator.cluster("minimal")["metadata"]["generation"]
    assert (status["workersReady"], status["workersDesired"]) == (0, 2)
    assert status["head"]["serviceName"] == "minimal-head" and status["head"]["ready"] is False
    assert set(status["memoryPlan"]) == {"head", "cpu"} and status["memoryPlan"]["head"]["numCpus"] == 0
    assert {c["type"]: c["status"] for c in status["conditions"]} == {
        "SpecValid": "True", "HeadReady": "False", "WorkersReady": "False", "Ready": "False"}
    assert "oom" not in status  # OOM surfacing owns it

    [head] = operator.pod_names("minimal", "head")
    operator.set_ready(head)
    operator.wait(lambda: operator.status("minimal").get("phase") == "Running", "phase Running")
    status = operator.status("minimal")
    assert status["head"] == {"serviceName": "minimal-head", "podName": head, "podIP": "10.0.0.1", "ready": True}
    assert operator.condition("minimal", "HeadReady")["status"] == "True"

    for worker in operator.pod_names("minimal", "cpu"):
        operator.set_ready(worker)
    operator.wait(lambda: operator.status("minimal").get("phase") == "Ready", "phase Ready")
    status = operator.status("minimal")
    assert status["workerGroups"] == [{"name": "cpu", "desired": 2, "ready": 2}]
    assert status["workersReady"] == 2
    ready = operator.condition("minimal", "Ready")
    assert (ready["status"], ready["reason"], ready["observedGeneration"]) == ("True", "ClusterReady", 1)


def test_a_second_reconcile_of_an_unchanged_cluster_writes_nothing(operator: Any) -> None:
    operator.create(minimal())
    operator.wait(lambda: len(operator.pods("minimal")) == 3, "the pods")
    for pod in operator.pod_names("minimal"):
        operator.set_ready(pod)
    operator.wait(lambda: operator.status("minimal").get("phase") == "Ready", "phase Ready")
    operator.settle("minimal")
    since = operator.api.emulator.mark()
    operator.wait_reconciles("minimal", passes=3)
    assert operator.api.emulator.writes_by_resource(since=since) == {}


def test_scale_up_and_down(operator: Any) -> None:
    operator.create(minimal(workers=3))
    operator.wait(lambda: len(operator.pod_names("minimal", "cpu")) == 3, "three workers")
    first = sorted(operator.pod_names("minimal", "cpu"))
    not_ready = first[1]
    for pod in set(first) - {not_ready}:
        operator.set_ready(pod)
    operator.settle("minimal")

    operator.patch_spec("minimal", {"workerGroups": [{**minimal()["spec"]["workerGroups"][0], "replicas": 2}]})
    operator.wait(lambda: len(operator.pod_names("minimal", "cpu")) == 2, "two workers")
    assert not_ready not in operator.pod_names("minimal", "cpu")  # the not-ready pod goes first

    operator.patch_spec("minimal", {"workerGroups": [{**minimal()["spec"]["workerGroups"][0], "replicas": 4}]})
    operator.wait(lambda: len(operator.pod_names("minimal", "cpu")) == 4, "four workers")
    newest = operator.pod_names("minimal", "cpu") - set(first)
    assert len(newest) == 2
    operator.wait(lambda: operator.status("minimal").get("workersDesired") == 4, "workersDesired 4")

    for pod in operator.pod_names("minimal", "cpu"):
        operator.set_ready(pod)
    operator.patch_spec("minimal", {"workerGroups": [{**minimal()["spec"]["workerGroups"][0], "replicas": 0}]})
    operator.wait(lambda: not operator.pod_names("minimal", "cpu"), "no workers")
    assert len(operator.pod_names("minimal", "head")) == 1
    # Each delete's Event follows the delete itself: the last pod can be gone a moment before it.
    operator.wait(lambda: len(operator.events(reason="Deleted", cluster="minimal")) >= 5, "five Deleted events")
    deleted = operator.events(reason="Deleted", cluster="minimal")
    assert len(deleted) == 5 and all(e["type"] == "Normal" for e in deleted)


def test_deleted_and_failed_pods_are_replaced(operator: Any) -> None:
    operator.create(minimal())
    operator.wait(lambda: len(operator.pods("minimal")) == 3, "the pods")
    gone, failing = sorted(operator.pod_names("minimal", "cpu"))
    operator.delete_pod(gone)
    operator.wait(lambda: len(operator.pod_names("minimal", "cpu") - {gone, failing}) == 1, "a replacement")

    operator.set_phase(failing, "Failed")
    operator.wait(lambda: failing not in operator.pod_names("minimal", "cpu")
                  and len(operator.pod_names("minimal", "cpu")) == 2, "the failed pod replaced")
    [head] = operator.pod_names("minimal", "head")
    operator.delete_pod(head)
    operator.wait(lambda: len(operator.pod_names("minimal", "head") - {head}) == 1, "a new head")


def test_deleting_the_cluster_takes_its_children_and_builds_nothing(operator: Any) -> None:
    operator.create(minimal())
    operator.wait(lambda: len(operator.pods("minimal")) == 3, "the pods")
    operator.settle("minimal")
    operator.delete_cluster("minimal")
    operator.wait(lambda: not operator.pods("minimal"), "the pods to be collected")
    operator.wait(lambda: "minimal-secret" not in operator.secret_names(), "the secret to be collected")
    since = operator.api.emulator.mark()
    time.sleep(1.5)  # three resync intervals: nothing may come back
    assert operator.api.emulator.count_writes(since=since, resource="pods") == 0
    assert operator.api.emulator.count_writes(since=since, resource="secrets") == 0
    assert operator.pods("minimal") == []


# --- reads from the watches' cache, passes coalesced (docs/architecture.md, "The data path") ---

OPERATOR_AGENT = "rayguard-operator"  # a product token in the operator's User-Agent (kube/caller.py)


class PassLog(logging.Handler):
    """The syncer's debug line for each pass, as it happens."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())

    def count(self, cluster: str) -> int:
        """Passes an event triggered (the resync timer's are `fresh`)."""
        return sum(1 for line in list(self.lines) for mode in ("cached", "uncached")
                   if line.startswith(f"RayCluster default/{cluster}: {mode} pass"))


@pytest.fixture
def pass_log() -> Any:
    logger = logging.getLogger("rayguard_operator.reconcile.syncer")
    handler, level = PassLog(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def operator_reads(operator: Any, since: int, part: str) -> Counter[str]:
    """GETs (watches aside) the operator made as `part` of itself, by resource, from request
    number `since` of the emulator's log on: the User-Agent names the part (kube/caller.py)."""
    found: Counter[str] = Counter()
    for r in list(operator.api.emulator)[since:]:
        if r.method.value == "GET" and "watch" not in r.url.query \
                and f"{OPERATOR_AGENT}/{part}" in r.headers.get("User-Agent", "").split():
            found[resource_of(r.url.path)] += 1
    return found


def requests_so_far(operator: Any) -> int:
    return len(list(operator.api.emulator))


def operator_writes(operator: Any, since: int) -> Counter[str]:
    return Counter(f"{r.method.value} {resource_of(r.url.path)}" for r in list(operator.api.emulator)[since:]
                   if r.method.value != "GET" and any(token.startswith(OPERATOR_AGENT)
                                                      for token in r.headers.get("User-Agent", "").split()))


def test_a_10_worker_cluster_gets_to_ready_from_the_cache(operator: Any, pass_log: PassLog) -> None:
    """To bring a 10-worker cluster to Ready, the passes that events trigger read the Secret and
    the head Service once, and never the cluster or its pods (the watches deliver those); the
    resync timer's passes read all four. No pod is created twice, although the watch delivers
    each created pod after the pass that created it. A burst of readiness events is one pass or
    a few, and a pod event that changes nothing reads and writes nothing."""
    start = requests_so_far(operator)
    operator.create(minimal(workers=10))
    operator.wait(lambda: len(operator.pods("minimal")) == 11, "the head and ten workers")
    operator.wait(lambda: operator.status("minimal").get("workersDesired") == 10, "the first status")
    time.sleep(0.5)  # the passes that the created pods' events trigger

    before_burst = pass_log.count("minimal")
    with ThreadPoolExecutor(11) as pool:  # as a kubelet would, about at once: 11 pod events
        list(pool.map(operator.set_ready, sorted(operator.pod_names("minimal"))))
    operator.wait(lambda: operator.status("minimal").get("phase") == "Ready", "phase Ready")
    time.sleep(0.5)
    burst = pass_log.count("minimal") - before_burst
    assert 1 <= burst <= 4, pass_log.lines[-10:]

    reads, resync = operator_reads(operator, start, "reconcile"), operator_reads(operator, start, "resync")
    # The first pass's, unless a resync pass came first and read them; the bound is 5.
    assert reads <= Counter({"secrets": 1, "services": 1}), reads
    # The OOM report follower waits for the syncer to make both, reads them once, and keeps them
    # while it retries (this head's Redis never answers: it has no clusterIP here).
    oom_reads = operator_reads(operator, start, "oom")
    assert oom_reads == Counter({"secrets": 1, "services": 1}), oom_reads
    assert sum((reads + oom_reads).values()) <= 5
    # A full read each tick (the last may be under way): the cluster, the Secret, the Service, the pods.
    assert set(resync) == {"rayclusters", "secrets", "services", "pods"}, resync
    assert max(resync.values()) - min(resync.values()) <= 1, resync
    writes = operator_writes(operator, start)
    assert writes["POST pods"] == 11 and "DELETE pods" not in writes, writes
    assert len(operator.pod_names("minimal")) == 11

    # A pod event that changes nothing the operator looks at: a pass, no read, no write.
    operator.settle("minimal")
    since, passes = requests_so_far(operator), pass_log.count("minimal")
    [head] = operator.pod_names("minimal", "head")
    operator._write(operator.api.core.patch_namespaced_pod, head, operator.ns,
                    {"metadata": {"annotations": {"example.com/note": "hello"}}})
    operator.wait(lambda: pass_log.count("minimal") > passes, "a pass over the cluster")
    time.sleep(0.3)
    assert operator_reads(operator, since, "reconcile") == Counter()
    assert operator_writes(operator, since) == Counter()

"""Syncer passes over an autoscaled or suspended cluster, against the in-memory fake API:
workersToDelete consumed and cleared (a 409 handled), the scaling and suspend Events once
each, the autoscaler's children, and no write on a pass over an unchanged cluster."""

from __future__ import annotations

import copy
import json
from typing import Any

from rayguard_node.contract.autoscaler import ANNOTATION_SCALE_REASON

from rayguard_operator import names
from rayguard_operator.reconcile.autoscaler import KINDS
from rayguard_operator.reconcile.cache import ClusterCache
from rayguard_operator.reconcile.syncer import Syncer
from rayguard_operator.settings import OperatorSettings
from tests.unit.operator.reconcile.fake_api import NOW, NS, FakeApi, deliver
from tests.unit.operator.reconcile.test_syncer import NAME, cluster_body

AUTOSCALER = f"{NAME}-autoscaler"


def autoscaled(enabled: bool = True) -> dict[str, Any]:
    body = cluster_body()
    body["spec"]["autoscaling"] = {"enabled": enabled}
    body["metadata"]["resourceVersion"] = "1"
    return body


def make(body: dict[str, Any], cache: bool = False) -> tuple[FakeApi, Syncer, ClusterCache | None]:
    api = FakeApi(body)
    counter = iter(range(1, 1000))
    kept = ClusterCache() if cache else None
    syncer = Syncer(api, OperatorSettings(), now=lambda: NOW, new_name=lambda p: f"{p}p{next(counter):04d}",
                    new_secrets=lambda: ("tok", "pw"), cache=kept)
    return api, syncer, kept


def workers(api: FakeApi) -> list[str]:
    return sorted(n for (kind, n), obj in api.objects.items() if kind == "Pod"
                  and obj["metadata"]["labels"][names.LABEL_NODE_TYPE] == names.WORKER)


def events(api: FakeApi, reason: str) -> list[str]:
    return [e["message"] for e in api.events if e["reason"] == reason]


def set_group(api: FakeApi, **fields: Any) -> None:
    """What the autoscaler's patch does to the cpu group (and the cluster's resourceVersion)."""
    assert api.cluster is not None
    api.cluster["spec"]["workerGroups"][0].update(fields)
    api.cluster["metadata"]["resourceVersion"] = str(int(api.cluster["metadata"]["resourceVersion"]) + 1)


def test_children_first_then_pods_then_a_resync_writes_nothing() -> None:
    api, syncer, _ = make(autoscaled())
    syncer.sync(NS, NAME)
    made = [(c[1], c[2]) for c in api.writes() if c[0] == "create"]
    assert made[0][0] == "Secret" and made[1:5] == [(kind, AUTOSCALER) for kind in KINDS]  # the Service: applied
    assert made[5][0] == "Pod"
    api.calls.clear()
    assert syncer.sync(NS, NAME) is not None
    assert api.writes() == []
    assert [c for c in api.calls if c[0] == "get"] == [("get", kind, AUTOSCALER) for kind in KINDS]


def test_cached_passes_read_the_children_once_and_the_resync_again() -> None:
    api, syncer, cache = make(autoscaled(), cache=True)
    assert cache is not None
    cache.put_cluster(api.cluster or {})
    syncer.sync(NS, NAME)
    deliver(api, cache)
    api.calls.clear()
    syncer.sync(NS, NAME)
    assert api.calls == []  # learned from its own writes
    syncer.sync(NS, NAME, fresh=True)
    assert [c for c in api.calls if c[0] == "get"] == [("get", kind, AUTOSCALER) for kind in KINDS]
    assert api.writes() == []


def test_turning_autoscaling_off_deletes_the_four_then_leaves_them_be() -> None:
    api, syncer, _ = make(autoscaled())
    syncer.sync(NS, NAME)
    assert api.cluster is not None
    api.cluster["spec"]["autoscaling"]["enabled"] = False
    api.calls.clear()
    syncer.sync(NS, NAME)
    assert [c for c in api.writes() if c[0] == "delete"] == [
        ("delete", kind, AUTOSCALER) for kind in ("RoleBinding", "Role", "ServiceAccount", "ConfigMap")]
    assert not any(kind in KINDS for kind, _ in api.objects)
    api.calls.clear()
    syncer.sync(NS, NAME)  # the head, which never started, was replaced: no sidecar, nothing to look for
    assert api.writes() == [] and [c for c in api.calls if c[0] == "get"] == []


def test_after_a_restart_leftovers_are_found_by_the_heads_sidecar_and_deleted_once() -> None:
    api, syncer, _ = make(autoscaled())
    syncer.sync(NS, NAME)
    assert api.cluster is not None
    api.cluster["spec"]["autoscaling"]["enabled"] = False  # while no operator ran
    _, restarted, cache = make(api.cluster, cache=True)
    assert cache is not None
    restarted.api = api
    deliver(api, cache)
    restarted.sync(NS, NAME)
    assert ("get", "ConfigMap", AUTOSCALER) in api.calls
    assert not any(kind in KINDS for kind, _ in api.objects)
    deliver(api, cache)
    api.calls.clear()
    restarted.sync(NS, NAME)
    restarted.sync(NS, NAME, fresh=True)
    assert [c for c in api.calls if c[0] in ("get", "delete")] == []  # known gone: not looked for again


def test_workers_to_delete_removes_exactly_the_named_pods_then_clears_the_list() -> None:
    api, syncer, _ = make(autoscaled())
    set_group(api, replicas=3)
    syncer.sync(NS, NAME)
    first, second, third = workers(api)
    set_group(api, replicas=1, workersToDelete=[first, third, "gone-pod"])
    rv = api.cluster["metadata"]["resourceVersion"]  # type: ignore[index]
    api.calls.clear()
    syncer.sync(NS, NAME)
    writes = [c for c in api.writes() if c[0] != "event"]
    assert writes[:3] == [("delete_pod", first), ("delete_pod", third), ("patch_cluster", NAME)]
    assert workers(api) == [second]
    group = api.cluster["spec"]["workerGroups"][0]  # type: ignore[index]
    assert "workersToDelete" not in group and group["replicas"] == 1
    assert api.cluster["metadata"]["resourceVersion"] != rv  # type: ignore[index]
    assert events(api, "WorkersToDeleteIgnored") == [
        "workersToDelete of group cpu names pods that are not its own, ignored: gone-pod (no such pod)"]
    assert events(api, "ScaledDown") == ["group cpu: 3 -> 1 (spec changed)"]
    api.calls.clear()
    syncer.sync(NS, NAME)
    assert api.writes() == []


def test_a_conflict_on_the_clear_reads_again_and_clears_what_it_consumed() -> None:
    api, syncer, cache = make(autoscaled(), cache=True)
    assert cache is not None
    set_group(api, replicas=2)
    cache.put_cluster(api.cluster or {})
    syncer.sync(NS, NAME)
    deliver(api, cache)
    first, _ = workers(api)
    set_group(api, replicas=1, workersToDelete=[first])
    deliver(api, cache)
    api.cluster["metadata"]["resourceVersion"] = "99"  # type: ignore[index]  # a write the watch has not delivered
    api.calls.clear()
    syncer.sync(NS, NAME)
    assert [c for c in api.calls if c[0] in ("patch_cluster", "get_cluster")] == [
        ("patch_cluster", NAME), ("get_cluster", NAME), ("patch_cluster", NAME)]
    assert "workersToDelete" not in api.cluster["spec"]["workerGroups"][0]  # type: ignore[index]


def test_a_conflict_with_new_names_leaves_them_to_the_next_pass() -> None:
    api, syncer, cache = make(autoscaled(), cache=True)
    assert cache is not None
    set_group(api, replicas=3)
    cache.put_cluster(api.cluster or {})
    syncer.sync(NS, NAME)
    deliver(api, cache)
    first, second, _ = workers(api)
    set_group(api, replicas=2, workersToDelete=["gone-pod", first])
    deliver(api, cache)
    set_group(api, replicas=1, workersToDelete=["gone-pod", first, second])  # not delivered yet
    api.calls.clear()
    result = syncer.sync(NS, NAME)
    assert result is not None and result.error is None
    listed = api.cluster["spec"]["workerGroups"][0]["workersToDelete"]  # type: ignore[index]
    assert listed == ["gone-pod", first, second]
    assert events(api, "WorkersToDeleteIgnored") == []  # posted with the clear, not before
    deliver(api, cache)
    syncer.sync(NS, NAME)
    assert "workersToDelete" not in api.cluster["spec"]["workerGroups"][0]  # type: ignore[index]
    assert not {first, second} & set(workers(api))
    assert len(events(api, "WorkersToDeleteIgnored")) == 1


def test_a_refused_clear_is_the_pass_failure() -> None:
    api, syncer, _ = make(autoscaled())
    set_group(api, replicas=2)
    syncer.sync(NS, NAME)
    set_group(api, replicas=1, workersToDelete=[workers(api)[0]])
    api.refuse[("patch", "RayCluster")] = "rayclusters is forbidden"
    result = syncer.sync(NS, NAME)
    assert result is not None and result.error is not None and "forbidden" in result.error
    assert api.cluster["status"]["phase"] == "Failed"  # type: ignore[index]


def test_scaled_up_says_why_once_also_after_a_restart() -> None:
    api, syncer, _ = make(autoscaled())
    syncer.sync(NS, NAME)
    set_group(api, replicas=3)
    assert api.cluster is not None
    api.cluster["metadata"]["annotations"] = {ANNOTATION_SCALE_REASON: json.dumps({"cpu": "pending demand"})}
    syncer.sync(NS, NAME)
    syncer.sync(NS, NAME)
    _, restarted, _ = make(api.cluster)
    restarted.api = api
    restarted.sync(NS, NAME)
    assert events(api, "ScaledUp") == ["group cpu: 1 -> 3 (pending demand)"]
    assert api.cluster["status"]["workerGroups"][0]["desired"] == 3
    assert [e for e in api.events if e["reason"] == "ScaledUp"][0]["type"] == "Normal"


def test_suspend_deletes_every_pod_keeps_the_rest_and_resume_brings_them_back() -> None:
    api, syncer, _ = make(autoscaled())
    syncer.sync(NS, NAME)
    kept = {k for k in api.objects if k[0] != "Pod"}
    assert api.cluster is not None
    api.cluster["spec"]["suspend"] = True
    syncer.sync(NS, NAME)
    syncer.sync(NS, NAME)
    assert [k for k in api.objects if k[0] == "Pod"] == [] and set(api.objects) == kept
    status = api.cluster["status"]
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert status["phase"] == "Suspended" and (ready["status"], ready["reason"]) == ("False", "Suspended")
    assert len(events(api, "Suspended")) == 1
    before = copy.deepcopy(api.cluster)
    api.calls.clear()
    syncer.sync(NS, NAME)
    assert api.writes() == [] and api.cluster == before
    api.cluster["spec"]["suspend"] = False
    syncer.sync(NS, NAME)
    syncer.sync(NS, NAME)
    assert len([k for k in api.objects if k[0] == "Pod"]) == 2  # the head and cpu x1
    assert api.cluster["status"]["phase"] == "Pending"
    assert events(api, "Resumed") == ["spec.suspend is false: the pods are created again"]
    assert len(events(api, "Suspended")) == 1


def test_a_refused_child_stops_the_pass_before_any_pod() -> None:
    api, syncer, _ = make(autoscaled())
    api.refuse[("create", "Role")] = "roles is forbidden: attempting to grant RBAC permissions not currently held"
    result = syncer.sync(NS, NAME)
    assert result is not None and result.error is not None and "grant RBAC" in result.error
    assert not any(kind == "Pod" for kind, _ in api.objects)

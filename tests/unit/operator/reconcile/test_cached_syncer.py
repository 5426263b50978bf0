"""Syncer with a ClusterCache: passes read the watches' cache, never act twice on one write
while the watch lags, and the resync pass reads the API and repairs what a watch missed.

The "watch" here is `deliver`: it copies the fake API's objects into the cache, as kopf's index
handlers would; a test that does not call it is a watch that has not delivered yet."""

from __future__ import annotations

import copy
from typing import Any

from rayguard_operator import names
from rayguard_operator.reconcile.cache import ClusterCache
from rayguard_operator.reconcile.syncer import Syncer
from rayguard_operator.settings import OperatorSettings

from tests.unit.operator.reconcile.test_syncer import (CPU_POD, HEAD_POD, NAME, NOW, NS, SECRET, SERVICE, FakeApi,
                                                       cluster_body, fixed_name)
from tests.unit.operator.reconcile.fake_api import deliver

READS = ("get_cluster", "get_secret", "get_service", "list_pods", "get")
# "get": the autoscaler's children, which a cluster that never autoscaled never reads.


def make(body: dict[str, Any] | None = None) -> tuple[FakeApi, ClusterCache, Syncer]:
    api = FakeApi(cluster_body() if body is None else body)
    cache = ClusterCache()
    counter = iter(range(1, 1000))
    syncer = Syncer(api, OperatorSettings(), now=lambda: NOW, new_name=lambda p: f"{p}p{next(counter):04d}",
                    new_secrets=lambda: ("tok", "pw"), cache=cache)
    cache.put_cluster(api.cluster or {})
    return api, cache, syncer


def pods_of(api: FakeApi, group: str | None = None) -> list[str]:
    return sorted(name for (kind, name), obj in api.objects.items() if kind == "Pod"
                  and (group is None or obj["metadata"]["labels"][names.LABEL_GROUP] == group))


def set_phase(api: FakeApi, pod: str, phase: str, ready: bool = False) -> None:
    api.objects[("Pod", pod)]["status"] = {"phase": phase, "podIP": "10.0.0.1", "conditions": [
        {"type": "Ready", "status": "True" if ready else "False"}]}


def reads(api: FakeApi) -> list[tuple[str, ...]]:
    return [c for c in api.calls if c[0] in READS]


def test_a_first_pass_reads_only_what_no_watch_delivers() -> None:
    api, _cache, syncer = make()
    result = syncer.sync(NS, NAME)
    assert reads(api) == [("get_secret", SECRET), ("get_service", SERVICE)]
    assert result is not None and len(result.actions) == 4 and result.status_patched
    assert api.cluster["status"]["phase"] == "Pending"
    assert api.cluster["status"]["head"]["podName"] == f"{names.head_pod_prefix(NAME)}p0001"


def test_while_the_watch_lags_a_second_pass_reads_nothing_and_writes_nothing() -> None:
    api, cache, syncer = make()
    syncer.sync(NS, NAME)
    api.calls.clear()
    # Nothing delivered yet: not the pods created, not the status written.
    assert syncer.sync(NS, NAME) is not None
    assert api.calls == []
    deliver(api, cache)
    assert syncer.sync(NS, NAME) is not None
    assert api.calls == [] and cache.expecting(NS, NAME) == 0
    assert len(pods_of(api)) == 2  # the head and cpu x1 (highmem x0): each created once


def test_pods_becoming_ready_are_one_status_write_and_no_read() -> None:
    api, cache, syncer = make()
    syncer.sync(NS, NAME)
    deliver(api, cache)
    for pod in pods_of(api):
        set_phase(api, pod, "Running", ready=True)
    deliver(api, cache)
    api.calls.clear()
    syncer.sync(NS, NAME)
    assert api.calls == [("patch_cluster_status", NAME)]
    assert api.cluster["status"]["phase"] == "Ready"
    api.calls.clear()
    syncer.sync(NS, NAME)  # the watch has not delivered the status written: still nothing to write
    assert api.calls == []


def test_a_failed_pod_is_replaced_once_though_the_watch_still_shows_it_running() -> None:
    api, cache, syncer = make()
    syncer.sync(NS, NAME)
    deliver(api, cache)
    [worker] = pods_of(api, "cpu")
    set_phase(api, worker, "Failed")
    deliver(api, cache)
    failed = copy.deepcopy(api.objects[("Pod", worker)])
    api.calls.clear()
    syncer.sync(NS, NAME)
    [replacement] = pods_of(api, "cpu")
    assert [c for c in api.writes() if c[0] != "event"] == [("delete_pod", worker), ("create", "Pod", replacement)]
    cache.put_pod(failed)  # an event from before the delete, delivered after it
    api.calls.clear()
    syncer.sync(NS, NAME)  # the replacement not delivered, the Failed pod shown alive: nothing to do
    assert api.calls == []
    deliver(api, cache)
    syncer.sync(NS, NAME)
    assert api.calls == [] and pods_of(api, "cpu") == [replacement]


def test_scaling_down_deletes_once_while_the_watch_lags() -> None:
    body = cluster_body()
    body["spec"]["workerGroups"][0].update(replicas=3, maxReplicas=3)
    api, cache, syncer = make(body)
    syncer.sync(NS, NAME)
    deliver(api, cache)
    assert len(pods_of(api, "cpu")) == 3
    api.cluster["spec"]["workerGroups"][0]["replicas"] = 1
    api.cluster["metadata"]["generation"] = 2
    cache.put_cluster(api.cluster)  # the update, delivered; the pods' deletions not yet
    api.calls.clear()
    syncer.sync(NS, NAME)
    assert sum(1 for c in api.calls if c[0] == "delete_pod") == 2
    api.calls.clear()
    syncer.sync(NS, NAME)
    assert api.calls == [] and len(pods_of(api, "cpu")) == 1


def test_the_resync_pass_reads_everything_and_repairs_what_a_watch_missed() -> None:
    api, cache, syncer = make()
    syncer.sync(NS, NAME)
    deliver(api, cache)
    [worker] = pods_of(api, "cpu")
    del api.objects[("Pod", worker)]  # deleted while the watch was down: the cache still has it
    api.calls.clear()
    syncer.sync(NS, NAME)
    assert api.calls == []  # an event-driven pass trusts the cache
    result = syncer.sync(NS, NAME, fresh=True)
    assert reads(api) == [("get_cluster", NAME), ("get_secret", SECRET), ("get_service", SERVICE),
                          ("list_pods", f"{names.LABEL_CLUSTER}={NAME}")]
    assert result is not None and [(a.verb, a.kind) for a in result.actions] == [("create", "Pod")]
    assert worker not in cache.pod_names(NS, NAME)
    api.calls.clear()
    syncer.sync(NS, NAME)
    assert api.calls == [] and len(pods_of(api, "cpu")) == 1


def test_a_child_deleted_behind_the_operators_back_is_made_again_at_the_resync() -> None:
    api, cache, syncer = make()
    syncer.sync(NS, NAME)
    deliver(api, cache)
    del api.objects[("Service", SERVICE)]  # no watch on Services
    api.calls.clear()
    syncer.sync(NS, NAME)
    assert api.calls == []
    syncer.sync(NS, NAME, fresh=True)
    assert ("apply", "Service", SERVICE) in api.calls
    api.calls.clear()
    syncer.sync(NS, NAME)
    assert api.calls == []


def test_a_cluster_the_cache_lacks_is_read_and_one_the_api_lacks_is_forgotten() -> None:
    api, cache, syncer = make()
    cache.forget_cluster(NS, NAME)
    syncer.sync(NS, NAME)
    assert reads(api)[:1] == [("get_cluster", NAME)]
    deliver(api, cache)
    api.cluster = None
    assert syncer.sync(NS, NAME, fresh=True) is None
    assert cache.cluster(NS, NAME) is None


def test_a_cluster_being_deleted_is_left_alone_from_the_cache() -> None:
    api, cache, syncer = make()
    body = cluster_body()
    body["metadata"]["deletionTimestamp"] = NOW
    cache.put_cluster(body)
    assert syncer.sync(NS, NAME) is None and api.calls == []


def test_without_a_cache_every_pass_reads_the_api() -> None:
    api = FakeApi(cluster_body())
    syncer = Syncer(api, OperatorSettings(), now=lambda: NOW, new_name=fixed_name, new_secrets=lambda: ("t", "p"))
    syncer.sync(NS, NAME)
    api.calls.clear()
    syncer.sync(NS, NAME)
    assert reads(api) == [("get_cluster", NAME), ("get_secret", SECRET), ("get_service", SERVICE),
                          ("list_pods", f"{names.LABEL_CLUSTER}={NAME}")]
    assert {HEAD_POD, CPU_POD} <= set(pods_of(api))

"""oom.tracker: a batch of reports is counted into status.oom first and the RayCluster's Events
go out with it (`count_reports`); each report's pod is read for the Event on it only in
`post_pod_events`, the report follower's next call. With a fake API that records every call
in order."""

from __future__ import annotations

import copy
from typing import Any

from rayguard_node.contract.reports import GUARD_KILL, Identity, NodeUsage, Report, TopEntry, Victim, new_report
from rayguard_operator.errors import KubeApiError
from rayguard_operator.oom.events import EventAggregator
from rayguard_operator.oom.tracker import OomTracker
from rayguard_operator.names import LABEL_CLUSTER
from rayguard_operator.reconcile.cache import ClusterCache

NS = "default"
GiB = 1024**3


class FakeApi:
    """TrackerApi and EventApi at once, as KubeApi is."""

    def __init__(self, pod_error: Exception | None = None) -> None:
        self.calls: list[tuple[str, str]] = []
        self.cluster: dict[str, Any] = {"apiVersion": "rayguard.dev/v1", "kind": "RayCluster",
                                        "metadata": {"name": "demo", "namespace": NS, "uid": "u-demo"}}
        self.pod_error = pod_error

    def get_cluster(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.calls.append(("get_cluster", name))
        return copy.deepcopy(self.cluster)

    def patch_cluster_status(self, namespace: str, name: str, patch: dict[str, Any]) -> None:
        self.calls.append(("patch_status", name))
        self.cluster["status"] = {**(self.cluster.get("status") or {}), **patch}

    def get_pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.calls.append(("get_pod", name))
        if self.pod_error is not None:
            raise self.pod_error
        return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": NS, "uid": f"u-{name}"},
                "spec": {"containers": []}}

    def patch(self, kind: str, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        raise AssertionError("no pod annotation for a report")

    def create(self, obj: dict[str, Any]) -> dict[str, Any] | None:
        self.calls.append(("create_event", obj["involvedObject"]["kind"]))
        return obj

    def patch_event(self, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        raise AssertionError("every Event here is new")


def report(pod: str, victim: str) -> Report:
    return new_report(GUARD_KILL, Identity("demo", NS, pod, "cpu", "worker"),
                      Victim(42, victim, rss_bytes=GiB, shared_bytes=0),
                      NodeUsage(used_bytes=2 * GiB, limit_bytes=2 * GiB, fraction=0.97, threshold=0.95),
                      [TopEntry(42, victim, GiB)])


def test_status_then_the_clusters_events_then_the_pods() -> None:
    api = FakeApi()
    tracker = OomTracker(api, EventAggregator(api))
    entries = [("1-0", report("demo-worker-a", "ray::one")), ("2-0", report("demo-worker-b", "ray::two")),
               ("3-0", report("demo-worker-a", "ray::three"))]
    assert tracker.count_reports(NS, "demo", entries) is True
    assert api.calls == [
        ("get_cluster", "demo"), ("patch_status", "demo"),
        ("create_event", "RayCluster"), ("create_event", "RayCluster"), ("create_event", "RayCluster")]
    oom = api.cluster["status"]["oom"]
    assert (oom["total"], oom["byKind"], oom["lastReportId"]) == (3, {GUARD_KILL: 3}, "3-0")
    assert tracker.aggregator.pending_count == 0
    del api.calls[:]
    tracker.post_pod_events(NS, "demo", entries)
    assert api.calls == [("get_pod", "demo-worker-a"), ("get_pod", "demo-worker-b"),  # each pod read once
                         ("create_event", "Pod"), ("create_event", "Pod"), ("create_event", "Pod")]
    assert tracker.aggregator.pending_count == 0 and api.cluster["status"]["oom"]["total"] == 3


def test_a_pod_that_cannot_be_read_costs_only_its_event() -> None:
    api = FakeApi(pod_error=KubeApiError("get", "Pod default/demo-worker-a", 500, "Internal Server Error"))
    tracker = OomTracker(api, EventAggregator(api))
    entries = [("1-0", report("demo-worker-a", "ray::one"))]
    assert tracker.count_reports(NS, "demo", entries) is True
    tracker.post_pod_events(NS, "demo", entries)  # does not raise
    assert api.calls == [("get_cluster", "demo"), ("patch_status", "demo"), ("create_event", "RayCluster"),
                         ("get_pod", "demo-worker-a")]
    assert api.cluster["status"]["oom"]["total"] == 1


def test_a_cluster_that_is_gone_counts_nothing() -> None:
    api = FakeApi()
    api.get_cluster = lambda namespace, name: api.calls.append(("get_cluster", name))  # type: ignore[method-assign]
    tracker = OomTracker(api, EventAggregator(api))
    assert tracker.count_reports(NS, "demo", [("1-0", report("demo-worker-a", "ray::one"))]) is False
    assert api.calls == [("get_cluster", "demo")]


def cached(api: FakeApi, *pods: str) -> ClusterCache:
    cache = ClusterCache()
    cache.put_cluster(api.cluster)
    for pod in pods:
        cache.put_pod({"apiVersion": "v1", "kind": "Pod",
                       "metadata": {"name": pod, "namespace": NS, "uid": f"u-{pod}",
                                    "labels": {LABEL_CLUSTER: "demo"}},
                       "spec": {"containers": [{"name": "ray"}]}})
    return cache


def test_with_the_cache_only_the_first_count_reads_the_cluster_and_no_pod_is_read() -> None:
    api = FakeApi()
    tracker = OomTracker(api, EventAggregator(api), cache=cached(api, "demo-worker-a"))
    first = [("1-0", report("demo-worker-a", "ray::one"))]
    assert tracker.count_reports(NS, "demo", first)
    tracker.post_pod_events(NS, "demo", first)
    assert api.calls == [("get_cluster", "demo"), ("patch_status", "demo"),
                         ("create_event", "RayCluster"), ("create_event", "Pod")]
    del api.calls[:]
    second = [("2-0", report("demo-worker-a", "ray::two")), ("3-0", report("demo-worker-b", "ray::three"))]
    assert tracker.count_reports(NS, "demo", second)
    tracker.post_pod_events(NS, "demo", second)
    # the status from its own last write; demo-worker-b is not in the cache yet: read
    assert api.calls == [("patch_status", "demo"), ("create_event", "RayCluster"), ("create_event", "RayCluster"),
                         ("get_pod", "demo-worker-b"), ("create_event", "Pod"), ("create_event", "Pod")]
    oom = api.cluster["status"]["oom"]
    assert (oom["total"], oom["lastReportId"]) == (3, "3-0")


def test_a_new_cluster_of_the_same_name_or_a_failed_write_reads_the_status_again() -> None:
    api = FakeApi()
    cache = cached(api)
    tracker = OomTracker(api, EventAggregator(api), cache=cache)
    assert tracker.count_reports(NS, "demo", [("1-0", report("demo-worker-a", "ray::one"))])
    # deleted and made again: a new uid, a fresh status
    api.cluster = {**api.cluster, "metadata": {**api.cluster["metadata"], "uid": "u-demo-2"}, "status": {}}
    cache.put_cluster(api.cluster)
    del api.calls[:]
    assert tracker.count_reports(NS, "demo", [("2-0", report("demo-worker-a", "ray::two"))])
    assert api.calls[:2] == [("get_cluster", "demo"), ("patch_status", "demo")]
    assert api.cluster["status"]["oom"]["total"] == 1

    def failing(namespace: str, name: str, patch: dict[str, Any]) -> None:
        api.calls.append(("patch_status", name))
        raise KubeApiError("patch", "RayCluster default/demo", 500, "Internal Server Error")

    real_patch, api.patch_cluster_status = api.patch_cluster_status, failing  # type: ignore[method-assign]
    try:
        tracker.count_reports(NS, "demo", [("3-0", report("demo-worker-a", "ray::three"))])
    except KubeApiError:
        pass
    else:
        raise AssertionError("the failed status write must reach the follower, which reads the batch again")
    api.patch_cluster_status = real_patch  # type: ignore[method-assign]
    del api.calls[:]
    assert tracker.count_reports(NS, "demo", [("3-0", report("demo-worker-a", "ray::three"))])
    assert api.calls[:2] == [("get_cluster", "demo"), ("patch_status", "demo")]
    assert api.cluster["status"]["oom"]["total"] == 2

    tracker.forget(NS, "demo")  # its follower stopped: the next count reads again
    del api.calls[:]
    assert tracker.count_reports(NS, "demo", [("4-0", report("demo-worker-a", "ray::four"))])
    assert api.calls[0] == ("get_cluster", "demo") and api.cluster["status"]["oom"]["total"] == 3

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

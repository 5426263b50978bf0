"""oom_events: aggregated, rate-limited OOM Events, with a fake Event API and a fake clock.

The fake has no `get`: the chart grants events only create and patch, so a read would be a
403 in a cluster. A patch of `{}` (the read after a 409) is recorded as "read"."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from rayguard_operator.errors import KubeApiError
from rayguard_operator.manifests.events import EventNote
from rayguard_node.contract.rfc3339 import format_seconds as format_time
from rayguard_node.contract.rfc3339 import parse as parse_time
from rayguard_operator.oom.events import EVENT_TTL_S, EventAggregator, event_name
from rayguard_operator.oom.messages import AggregationKey

T0 = 1_700_000_000.0  # 2023-11-14T22:13:20Z
NS = "default"


class Clock:
    now = T0

    def __call__(self) -> float:
        return self.now


class FakeEventApi:
    """Events by (namespace, name); every call is recorded. Like the API server, create and
    patch answer the stored object; patching a missing Event is a 404."""
    def __init__(self) -> None:
        self.events: dict[tuple[str, str], dict[str, Any]] = {}
        self.calls: list[tuple[str, str]] = []
        self.fail_create: Exception | None = None
        self.created_meanwhile: dict[str, Any] | None = None

    def create(self, obj: dict[str, Any]) -> dict[str, Any] | None:
        self.calls.append(("create", obj["metadata"]["name"]))
        if self.fail_create is not None:
            raise self.fail_create
        slot = (obj["metadata"]["namespace"], obj["metadata"]["name"])
        if self.created_meanwhile is not None:
            self.events[slot], self.created_meanwhile = self.created_meanwhile, None
        if slot in self.events:
            return None  # 409
        self.events[slot] = copy.deepcopy(obj)
        return copy.deepcopy(obj)

    def patch_event(self, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(("patch" if patch else "read", name))
        if (namespace, name) not in self.events:
            raise KubeApiError("patch", f"Event {namespace}/{name}", 404, "NotFound")
        merged = {**self.events[(namespace, name)], **copy.deepcopy(patch)}  # a merge patch: None deletes
        self.events[(namespace, name)] = {k: v for k, v in merged.items() if v is not None}
        return copy.deepcopy(self.events[(namespace, name)])


def cluster_obj(name: str = "demo") -> dict[str, Any]:
    return {"apiVersion": "rayguard.dev/v1", "kind": "RayCluster",
            "metadata": {"name": name, "namespace": NS, "uid": f"uid-{name}"}}


def key(victim: str = "ray::allocate_memory", cluster: str = "demo") -> AggregationKey:
    return AggregationKey(cluster, f"{cluster}-worker-cpu-x7k2p", "MemoryMonitorKill", victim)


def note(message: str = "killed") -> EventNote:
    return EventNote("Warning", "MemoryMonitorKill", message)


def make(**kwargs: Any) -> tuple[FakeEventApi, Clock, EventAggregator]:
    api, clock = FakeEventApi(), Clock()
    return api, clock, EventAggregator(api, clock, **kwargs)


def only_event(api: FakeEventApi) -> dict[str, Any]:
    [event] = api.events.values()
    return event


def test_first_kill_creates_one_event_with_a_stable_name() -> None:
    assert (format_time(T0), parse_time("2023-11-14T22:13:20Z")) == ("2023-11-14T22:13:20Z", T0)
    api, clock, agg = make()
    agg.add("demo", cluster_obj(), key(), note("first"))
    assert api.calls == [] and agg.pending_count == 1
    assert agg.flush() == 1
    name = f"demo.oom-{key().digest()}"
    assert event_name(cluster_obj(), key()) == name and list(api.events) == [(NS, name)]
    assert api.calls == [("create", name)]
    event = only_event(api)
    assert [event[k] for k in ("count", "message", "reason", "type", "firstTimestamp", "lastTimestamp")] == [
        1, "first", "MemoryMonitorKill", "Warning", "2023-11-14T22:13:20Z", "2023-11-14T22:13:20Z"]
    assert (event["involvedObject"]["name"], event["involvedObject"]["kind"]) == ("demo", "RayCluster")
    assert (agg.pending_count, agg.writes_total, agg.flush()) == (0, 1, 0)


def test_repeat_within_window_patches_count_and_series() -> None:
    api, clock, agg = make()
    agg.add("demo", cluster_obj(), key(), note("first"))
    agg.flush()
    clock.now = T0 + 599
    agg.add("demo", cluster_obj(), key(), note("second"))
    assert agg.flush() == 1
    name = f"demo.oom-{key().digest()}"
    assert api.calls[1:] == [("patch", name)]  # the count comes from the answer to the create
    event = only_event(api)
    assert event["count"] == 2 and event["message"] == "second"
    assert (event["firstTimestamp"], event["lastTimestamp"]) == ("2023-11-14T22:13:20Z", "2023-11-14T22:23:19Z")
    assert event["series"] == {"count": 2, "lastObservedTime": "2023-11-14T22:23:19.000000Z"}


def test_window_counts_from_the_last_repeat() -> None:
    api, clock, agg = make()
    for offset in (0, 500, 1000, 1500):
        clock.now = T0 + offset
        agg.add("demo", cluster_obj(), key(), note())
        agg.flush()
    [event] = api.events.values()
    assert (event["count"], event["series"]["count"], event["firstTimestamp"], event["lastTimestamp"]) == (
        4, 4, "2023-11-14T22:13:20Z", format_time(T0 + 1500))


def test_repeat_after_window_restarts_the_same_object() -> None:
    api, clock, agg = make()
    for offset in (0, 300):  # a run of two, then a pause longer than the window
        clock.now = T0 + offset
        agg.add("demo", cluster_obj(), key(), note())
        agg.flush()
    clock.now = T0 + 300 + 601
    agg.add("demo", cluster_obj(), key(), note("again"))
    assert agg.flush() == 1
    event = only_event(api)
    assert (event["count"], event["message"], "series" in event) == (1, "again", False)
    assert event["firstTimestamp"] == event["lastTimestamp"] == "2023-11-14T22:28:21Z"
    assert [c[0] for c in api.calls].count("create") == 1


def test_pod_and_cluster_events_are_separate() -> None:
    api, _, agg = make()
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "demo-worker-cpu-x7k2p", "namespace": NS}}
    agg.add("demo", cluster_obj(), key(), note())
    agg.add("demo", pod, key(), note())
    assert agg.pending_count == 2 and agg.flush() == 2
    assert {n: e["involvedObject"]["kind"] for (_, n), e in api.events.items()} == {
        f"demo-worker-cpu-x7k2p.oom-{key().digest()}": "Pod", f"demo.oom-{key().digest()}": "RayCluster"}


def test_many_adds_before_a_flush_are_one_write() -> None:
    api, clock, agg = make()
    for i in range(4):
        clock.now = T0 + i
        agg.add("demo", cluster_obj(), key(), note(f"kill {i}"))
    assert agg.pending_count == 1 and agg.flush() == 1
    assert [c[0] for c in api.calls] == ["create"]
    event = only_event(api)
    assert (event["count"], event["message"], event["lastTimestamp"]) == (4, "kill 3", format_time(T0 + 3))


def test_merged_adds_keep_the_first_time() -> None:
    api, clock, agg = make()
    agg.add("demo", cluster_obj(), key(), note())
    clock.now = T0 + 100
    agg.add("demo", cluster_obj(), key(), note())
    agg.flush()
    event = only_event(api)
    assert (event["count"], event["firstTimestamp"], event["lastTimestamp"]) == (
        2, "2023-11-14T22:13:20Z", "2023-11-14T22:15:00Z")


def test_rate_limit_defers_and_loses_nothing() -> None:
    api, clock, agg = make(writes_per_minute=2)
    for i in range(5):
        agg.add("demo", cluster_obj(), key(f"ray::v{i}"), note())
    assert (agg.flush(), len(api.events), agg.pending_count) == (2, 2, 3)
    agg.add("demo", cluster_obj(), key("ray::v4"), note())  # merged into a pending one
    agg.add("demo", cluster_obj(), key("ray::v4"), note())
    assert agg.flush() == 0 and agg.pending_count == 3
    clock.now = T0 + 30  # 2/60 per second: one token
    assert agg.flush() == 1 and agg.pending_count == 2
    clock.now = T0 + 90
    assert agg.flush() == 2 and agg.pending_count == 0
    assert len(api.events) == 5 and agg.writes_total == 5
    counts = sorted(e["count"] for e in api.events.values())
    assert (counts, sum(counts)) == ([1, 1, 1, 1, 3], 7)  # 7 adds, none lost
    clock.now = T0 + 3600  # the budget refills up to its size, no more
    for i in range(5):
        agg.add("demo", cluster_obj(), key(f"ray::w{i}"), note())
    assert (agg.flush(), agg.pending_count) == (2, 3)


def test_per_cluster_budgets_are_independent() -> None:
    api, clock, agg = make(writes_per_minute=1)
    agg.add("a", cluster_obj("a"), key("ray::1", "a"), note())
    agg.add("a", cluster_obj("a"), key("ray::2", "a"), note())
    agg.add("b", cluster_obj("b"), key("ray::3", "b"), note())
    assert (agg.flush(), agg.pending_count) == (2, 1)
    assert sorted(e["involvedObject"]["name"] for e in api.events.values()) == ["a", "b"]


def test_flush_of_one_cluster_touches_only_it() -> None:
    api, clock, agg = make()
    agg.add("a", cluster_obj("a"), key(cluster="a"), note())
    agg.add("b", cluster_obj("b"), key(cluster="b"), note())
    assert agg.flush("a") == 1
    name_a = f"a.oom-{key(cluster='a').digest()}"
    assert api.calls == [("create", name_a)] and agg.pending_count == 1
    assert agg.flush("c") == 0 and len(api.calls) == 1
    assert agg.flush("b") == 1 and agg.pending_count == 0


def test_pending_is_told_per_cluster() -> None:
    """Each cluster's report follower flushes only when its own cluster has Events waiting."""
    api, clock, agg = make(writes_per_minute=1)
    agg.add("a", cluster_obj("a"), key("ray::1", "a"), note())
    agg.add("a", cluster_obj("a"), key("ray::2", "a"), note())
    agg.add("b", cluster_obj("b"), key("ray::3", "b"), note())
    assert (agg.pending_for("a"), agg.pending_for("b"), agg.pending_for("c")) == (2, 1, 0)
    agg.flush()  # one write each: the budget holds back a's second
    assert (agg.pending_for("a"), agg.pending_for("b"), agg.pending_count) == (1, 0, 1)


def test_create_conflict_falls_back_to_patching() -> None:
    api, clock, agg = make()
    name = f"demo.oom-{key().digest()}"
    api.created_meanwhile = {"metadata": {"name": name, "namespace": NS}, "count": 3,
                             "firstTimestamp": format_time(T0 - 60), "lastTimestamp": format_time(T0 - 10)}
    agg.add("demo", cluster_obj(), key(), note("mine"))
    assert agg.flush() == 1
    assert api.calls == [("create", name), ("read", name), ("patch", name)]
    event = only_event(api)
    assert (event["count"], event["message"], event["firstTimestamp"], event["lastTimestamp"]) == (
        4, "mine", format_time(T0 - 60), "2023-11-14T22:13:20Z")
    assert event["series"] == {"count": 4, "lastObservedTime": "2023-11-14T22:13:20.000000Z"}


def test_api_error_leaves_the_item_pending() -> None:
    api, clock, agg = make()
    agg.add("demo", cluster_obj(), key(), note())
    api.fail_create = RuntimeError("503")
    with pytest.raises(RuntimeError):
        agg.flush()
    assert agg.pending_count == 1 and api.events == {}
    agg.add("demo", cluster_obj(), key(), note())
    api.fail_create = None
    assert agg.flush() == 1 and only_event(api)["count"] == 2 and agg.pending_count == 0


def test_writes_total_counts_writes_before_an_error() -> None:
    api, clock, agg = make()
    agg.add("demo", cluster_obj(), key("ray::ok"), note())
    agg.flush()
    agg.add("demo", cluster_obj(), key("ray::ok"), note())  # a patch: succeeds
    agg.add("demo", cluster_obj(), key("ray::new"), note())  # a create: fails
    api.fail_create = RuntimeError("503")
    with pytest.raises(RuntimeError):
        agg.flush()
    assert (only_event(api)["count"], agg.writes_total) == (2, 2)


def test_after_a_restart_the_event_is_found_by_creating_it() -> None:
    """A new aggregator (the operator restarted) knows nothing: its create meets 409, a patch
    of `{}` answers the stored Event, and the count goes on from there. Then it remembers."""
    api, clock, agg = make()
    for offset in (0, 60):
        clock.now = T0 + offset
        agg.add("demo", cluster_obj(), key(), note())
        agg.flush()
    restarted = EventAggregator(api, clock)
    clock.now = T0 + 120
    restarted.add("demo", cluster_obj(), key(), note("after"))
    assert restarted.flush() == 1
    name = f"demo.oom-{key().digest()}"
    assert api.calls[-3:] == [("create", name), ("read", name), ("patch", name)]
    event = only_event(api)
    assert (event["count"], event["message"], event["firstTimestamp"]) == (3, "after", format_time(T0))
    clock.now = T0 + 180
    restarted.add("demo", cluster_obj(), key(), note())
    restarted.flush()
    assert api.calls[-1] == ("patch", name) and only_event(api)["count"] == 4


def test_an_expired_event_is_created_afresh() -> None:
    api, clock, agg = make()
    agg.add("demo", cluster_obj(), key(), note())
    agg.flush()
    api.events.clear()  # the API server's event TTL
    clock.now = T0 + 60
    agg.add("demo", cluster_obj(), key(), note("later"))
    assert agg.flush() == 1
    name = f"demo.oom-{key().digest()}"
    assert api.calls == [("create", name), ("patch", name), ("create", name)]
    event = only_event(api)
    assert (event["count"], event["message"], event["firstTimestamp"]) == (1, "later", format_time(T0 + 60))


def test_what_was_written_is_forgotten_after_the_window_and_ttl() -> None:
    api, clock, agg = make()
    agg.add("demo", cluster_obj(), key("ray::old"), note())
    agg.flush()
    assert len(agg._written) == 1
    clock.now = T0 + agg.window_s + EVENT_TTL_S + 1
    agg.add("demo", cluster_obj(), key("ray::new"), note())
    agg.flush()
    assert [n for (_, n) in agg._written] == [f"demo.oom-{key('ray::new').digest()}"]


def test_other_api_errors_are_not_taken_for_an_expired_event() -> None:
    api, clock, agg = make()
    agg.add("demo", cluster_obj(), key(), note())
    agg.flush()

    def forbidden(namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        raise KubeApiError("patch", f"Event {namespace}/{name}", 403, "Forbidden", "events is forbidden")

    api.patch_event = forbidden  # type: ignore[method-assign]
    agg.add("demo", cluster_obj(), key(), note())
    with pytest.raises(KubeApiError, match="403 Forbidden"):
        agg.flush()
    assert agg.pending_count == 1 and [c[0] for c in api.calls] == ["create"]

"""ClusterCache: what the watches delivered, and the syncer's expectations laid over it."""

from __future__ import annotations

from typing import Any

from rayguard_operator import names
from rayguard_operator.reconcile.cache import EXPECTATION_TTL_S, ClusterCache, Known, overlay, slim_pod

NS, CLUSTER = "default", "demo"


def pod(name: str, cluster: str = CLUSTER, **status: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": NS, "uid": f"uid-{name}", "labels": {names.LABEL_CLUSTER: cluster},
                         "annotations": {names.ANNOTATION_TEMPLATE_HASH: "h1"},
                         "creationTimestamp": "2030-01-01T00:00:00Z", "managedFields": [{"big": "x" * 100}]},
            "spec": {"containers": [{"name": "ray-node", "image": "img", "env": [{"name": "A", "value": "1"}],
                                     "resources": {"limits": {"memory": "2Gi"}}}],
                     "volumes": [{"name": "dshm"}]},
            "status": {"phase": "Pending", **status}}


def terminating(body: dict[str, Any]) -> dict[str, Any]:
    return {**body, "metadata": {**body["metadata"], "deletionTimestamp": "2030-01-01T00:01:00Z"}}


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def names_of(pods: tuple[dict[str, Any], ...]) -> list[str]:
    return [p["metadata"]["name"] for p in pods]


def live(pods: tuple[dict[str, Any], ...]) -> list[str]:
    return [p["metadata"]["name"] for p in pods if not p["metadata"].get("deletionTimestamp")]


# --- pure parts -----------------------------------------------------------------------------

def test_a_slim_pod_keeps_what_reconcile_status_and_oom_counting_read() -> None:
    body = pod("a", podIP="10.0.0.1", conditions=[{"type": "Ready", "status": "True"}],
               containerStatuses=[{"name": "ray-node", "restartCount": 1}], hostIP="10.1.1.1")
    slim = slim_pod(body)
    assert slim["metadata"] == {k: v for k, v in body["metadata"].items() if k != "managedFields"}
    assert slim["spec"] == {"containers": [{"name": "ray-node", "resources": {"limits": {"memory": "2Gi"}}}]}
    assert slim["status"] == {"phase": "Pending", "podIP": "10.0.0.1",
                              "conditions": [{"type": "Ready", "status": "True"}],
                              "containerStatuses": [{"name": "ray-node", "restartCount": 1}]}
    body["metadata"]["labels"]["changed"] = "later"  # a copy: the watch's dicts are not kept
    assert "changed" not in slim["metadata"]["labels"]


def test_overlay_adds_what_is_not_there_yet_and_marks_what_goes() -> None:
    a, b, c = pod("a"), pod("b"), pod("c")
    view = overlay({"b": b, "a": a}, {"c": c, "a": pod("a", phase="Running")}, {"b": "T", "zz": "T"})
    assert names_of(view) == ["a", "b", "c"]  # sorted by name, as a list read returns them
    assert view[0] is a  # the watch's copy wins over the create response
    assert view[1]["metadata"]["deletionTimestamp"] == "T" and "deletionTimestamp" not in b["metadata"]
    assert view[2] is c
    assert overlay({"b": terminating(b)}, {}, {"b": "T"})[0]["metadata"]["deletionTimestamp"] != "T"


# --- fed by the watches -----------------------------------------------------------------------

def test_pods_are_kept_per_cluster_and_follow_their_label() -> None:
    cache = ClusterCache()
    cache.put_pod(pod("a"))
    cache.put_pod(pod("b"))
    cache.put_pod(pod("x", cluster="other"))
    assert names_of(cache.pods(NS, CLUSTER)) == ["a", "b"] and names_of(cache.pods(NS, "other")) == ["x"]
    cache.put_pod(pod("b", cluster="other"))  # relabelled
    assert names_of(cache.pods(NS, CLUSTER)) == ["a"] and names_of(cache.pods(NS, "other")) == ["b", "x"]
    cache.remove_pod(pod("a"))
    assert cache.pods(NS, CLUSTER) == () and cache.pod_names(NS, CLUSTER) == frozenset()
    unlabelled = pod("b")
    del unlabelled["metadata"]["labels"][names.LABEL_CLUSTER]
    cache.put_pod(unlabelled)
    assert names_of(cache.pods(NS, "other")) == ["x"]


def test_clusters_are_copied_in_and_forgotten_with_what_was_learned() -> None:
    cache = ClusterCache()
    body = {"metadata": {"namespace": NS, "name": CLUSTER, "uid": "u1"}, "spec": {"x": 1}}
    cache.put_cluster(body)
    body["spec"]["x"] = 2
    assert cache.cluster(NS, CLUSTER) == {"metadata": {"namespace": NS, "name": CLUSTER, "uid": "u1"}, "spec": {"x": 1}}
    cache.learn(NS, CLUSTER, "u1", secret=True)
    cache.forget_cluster(NS, CLUSTER)
    assert cache.cluster(NS, CLUSTER) is None and cache.known(NS, CLUSTER, "u1") == Known()


def test_what_was_learned_belongs_to_one_cluster_uid() -> None:
    cache = ClusterCache()
    cache.learn(NS, CLUSTER, "u1", secret=True, service={"spec": {}}, service_known=True)
    cache.learn(NS, CLUSTER, "u1", status={"phase": "Ready"})
    assert cache.known(NS, CLUSTER, "u1") == Known(True, {"spec": {}}, True, {"phase": "Ready"})
    assert cache.known(NS, CLUSTER, "u2") == Known()  # deleted and created again under the same name
    cache.learn(NS, CLUSTER, "u2", secret=False)
    assert cache.known(NS, CLUSTER, "u1") == Known()


# --- expectations -----------------------------------------------------------------------------

def test_a_created_pod_counts_until_the_watch_delivers_it() -> None:
    cache = ClusterCache()
    cache.expect_created(NS, CLUSTER, "u1", pod("a"))
    assert names_of(cache.pods(NS, CLUSTER)) == ["a"] and cache.expecting(NS, CLUSTER) == 1
    assert cache.pods(NS, CLUSTER)[0]["spec"] == slim_pod(pod("a"))["spec"]  # kept slim
    cache.put_pod(pod("a", phase="Running"))
    assert cache.expecting(NS, CLUSTER) == 0
    assert cache.pods(NS, CLUSTER)[0]["status"]["phase"] == "Running"


def test_a_create_the_watch_delivered_first_is_not_expected() -> None:
    cache = ClusterCache()
    cache.put_pod(pod("a"))
    cache.expect_created(NS, CLUSTER, "u1", pod("a"))
    assert cache.expecting(NS, CLUSTER) == 0


def test_a_deleted_pod_is_terminating_until_the_watch_says_so_and_a_late_event_does_not_revive_it() -> None:
    cache = ClusterCache()
    cache.put_pod(pod("a"))
    cache.expect_deleted(NS, CLUSTER, "u1", "a", "T")
    assert live(cache.pods(NS, CLUSTER)) == [] and names_of(cache.pods(NS, CLUSTER)) == ["a"]
    cache.put_pod(pod("a", phase="Running"))  # an event from before the delete, delivered after it
    assert live(cache.pods(NS, CLUSTER)) == []
    cache.put_pod(terminating(pod("a")))
    assert cache.expecting(NS, CLUSTER) == 0 and live(cache.pods(NS, CLUSTER)) == []
    cache.remove_pod(pod("a"))
    assert cache.pods(NS, CLUSTER) == ()


def test_a_pod_deleted_before_the_watch_delivered_its_creation_never_counts_as_live() -> None:
    cache = ClusterCache()
    cache.expect_created(NS, CLUSTER, "u1", pod("a"))
    cache.expect_deleted(NS, CLUSTER, "u1", "a", "T")
    assert cache.pods(NS, CLUSTER) == ()
    cache.put_pod(pod("a"))  # its creation, delivered late
    assert live(cache.pods(NS, CLUSTER)) == []
    cache.remove_pod(pod("a"))
    assert cache.expecting(NS, CLUSTER) == 0 and cache.pods(NS, CLUSTER) == ()


def test_expectations_expire() -> None:
    clock = Clock()
    cache = ClusterCache(clock=clock)
    cache.put_pod(pod("b"))
    cache.expect_created(NS, CLUSTER, "u1", pod("a"))
    cache.expect_deleted(NS, CLUSTER, "u1", "b", "T")
    clock.t += EXPECTATION_TTL_S - 1
    assert names_of(cache.pods(NS, CLUSTER)) == ["a", "b"] and live(cache.pods(NS, CLUSTER)) == ["a"]
    clock.t += 2
    assert live(cache.pods(NS, CLUSTER)) == ["b"] and cache.expecting(NS, CLUSTER) == 0


def test_a_full_list_drops_pods_and_expectations_the_api_no_longer_has() -> None:
    cache = ClusterCache()
    for name in ("a", "b", "c"):
        cache.put_pod(pod(name))
    cache.expect_created(NS, CLUSTER, "u1", pod("new"))  # listed: the watch is just late
    cache.expect_created(NS, CLUSTER, "u1", pod("gone"))  # created, then deleted by someone
    cache.expect_deleted(NS, CLUSTER, "u1", "c", "T")  # deleted and gone: not listed
    before = cache.pod_names(NS, CLUSTER)
    cache.put_pod(pod("d"))  # delivered while the list was under way: not in `before`
    cache.listed(NS, CLUSTER, before, ["a", "new"])  # b was deleted while a watch was down
    assert names_of(cache.pods(NS, CLUSTER)) == ["a", "d", "new"]
    assert cache.expecting(NS, CLUSTER) == 1

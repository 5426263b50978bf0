"""Local mode's autoscaling seam: the target the autoscaler thread sees, and the plan a
request makes for the pods (pure)."""

from __future__ import annotations

import pytest

from rayguard_operator.local.autoscaling import (STATUS_PENDING, STATUS_UP, LocalNodeState, LocalScaler,
                                                 LocalTarget, ScaleRequest, local_target, node_ip, plan_request)

HEAD = LocalNodeState("c-head-0", "head", True, "127.0.0.1", STATUS_UP)


def worker(name: str, status: str = STATUS_UP, ip: str = "127.0.0.2") -> LocalNodeState:
    return LocalNodeState(name, "cpu", False, ip, status)


def test_each_pod_gets_its_own_loopback_address() -> None:
    assert [node_ip(i) for i in (0, 1, 254, 255, 256)] == [
        "127.0.0.1", "127.0.0.2", "127.0.0.255", "127.0.1.0", "127.0.1.1"]
    assert len({node_ip(i) for i in range(1000)}) == 1000
    with pytest.raises(ValueError):
        node_ip(-1)


def test_the_target_reports_nodes_as_rays_provider_expects() -> None:
    target = LocalTarget("c")
    target.publish([HEAD, worker("c-worker-cpu-0"), worker("c-worker-cpu-1", STATUS_PENDING, "127.0.0.3")])
    nodes = target.nodes()
    assert set(nodes) == {"c-head-0", "c-worker-cpu-0", "c-worker-cpu-1"}
    assert (nodes["c-head-0"].kind, nodes["c-head-0"].type) == ("head", "head")
    assert (nodes["c-worker-cpu-1"].kind, nodes["c-worker-cpu-1"].type, nodes["c-worker-cpu-1"].ip,
            nodes["c-worker-cpu-1"].status) == ("worker", "cpu", "127.0.0.3", "pending")


def test_a_submitted_deletion_hides_the_pod_until_it_is_gone() -> None:
    target = LocalTarget("c")
    target.publish([HEAD, worker("c-worker-cpu-0")])
    target.submit({"cpu": 0}, {"c-worker-cpu-0"}, {"cpu": "idle"})
    # Ray's consistency rule: once submitted, a deleted node is no longer listed.
    assert "c-worker-cpu-0" not in target.nodes()
    assert target.unconsumed_deletions() == {"c-worker-cpu-0"}
    target.publish([HEAD, worker("c-worker-cpu-0")])  # still stopping
    assert target.unconsumed_deletions() == {"c-worker-cpu-0"}
    target.publish([HEAD])  # stopped
    assert target.unconsumed_deletions() == frozenset()
    assert target.take() == [ScaleRequest({"cpu": 0}, frozenset({"c-worker-cpu-0"}), {"cpu": "idle"})]
    assert target.take() == []


def test_a_request_stops_the_named_pods_and_starts_up_to_the_desired_count() -> None:
    running = {"cpu": ["w0", "w1"], "gpu": []}
    bounds = {"cpu": (0, 3), "gpu": (0, 2)}
    up = plan_request(ScaleRequest({"cpu": 3, "gpu": 2}, frozenset(), {"cpu": "pending demand"}), running, bounds)
    assert up.stop == () and dict(up.start) == {"cpu": 1, "gpu": 2}
    assert up.changes == (("cpu", 2, 3, "pending demand"), ("gpu", 0, 2, "pending demand"))
    down = plan_request(ScaleRequest({"cpu": 1}, frozenset({"w1", "not-a-pod"}), {}), running, bounds)
    assert down.stop == ("w1",) and dict(down.start) == {}
    assert down.changes == (("cpu", 2, 1, "idle"),)


def test_a_desired_count_outside_the_groups_bounds_is_clamped() -> None:
    plan = plan_request(ScaleRequest({"cpu": 9}, frozenset(), {}), {"cpu": []}, {"cpu": (0, 2)})
    assert dict(plan.start) == {"cpu": 2}
    plan = plan_request(ScaleRequest({"cpu": 0}, frozenset(), {}), {"cpu": []}, {"cpu": (1, 2)})
    assert dict(plan.start) == {"cpu": 1}


def test_the_scaler_applies_requests_and_says_so_as_events() -> None:
    target = LocalTarget("scaler-test")
    pods: dict[str, list[str]] = {"cpu": ["w0"]}
    events: list[tuple[str, str]] = []

    def start(group: str) -> None:
        pods[group].append(f"w{len(pods[group])}")

    scaler = LocalScaler(target, {"cpu": (0, 2)}, lambda: pods, lambda p: pods["cpu"].remove(p), start,
                         lambda reason, message: events.append((reason, message)))
    scaler.register()
    try:
        assert local_target({}, "scaler-test") is target
        target.submit({"cpu": 2}, set(), {"cpu": "pending demand"})
        scaler.step([HEAD, worker("w0")])
        assert pods["cpu"] == ["w0", "w1"]
        target.submit({"cpu": 1}, {"w0"}, {"cpu": "idle"})
        scaler.step([HEAD, worker("w0"), worker("w1")])
        assert pods["cpu"] == ["w1"]
        assert events == [("ScaledUp", "group cpu: 1 -> 2 (pending demand)"),
                          ("ScaledDown", "group cpu: 2 -> 1 (idle)")]
    finally:
        scaler.unregister()
    with pytest.raises(LookupError):
        local_target({}, "scaler-test")


def test_rays_scheduler_picks_the_group_whose_planned_heap_fits_where_the_limit_would_mislead() -> None:
    """The choice tests/integration/test_local_autoscaling.py sees end to end, made by Ray
    2.60's own resource-demand scheduler from the config, with either advertisement."""
    import functools

    from ray.autoscaler._private.node_provider_availability_tracker import NodeAvailabilitySummary
    from ray.autoscaler._private.resource_demand_scheduler import _default_utilization_scorer, get_nodes_for

    from rayguard_operator.manifests.autoscaler import ADVERTISE_LIMIT, autoscaling_config
    from rayguard_operator.settings import OperatorSettings
    from rayguard_operator.spec.model import parse_cluster

    group = lambda name, memory: {"name": name, "replicas": 0, "minReplicas": 0, "maxReplicas": 1,  # noqa: E731
                                  "resources": {"limits": {"cpu": "1", "memory": memory}}}
    cluster = parse_cluster({"apiVersion": "rayguard.dev/v1", "kind": "RayCluster", "metadata": {"name": "fit"},
                             "spec": {"autoscaling": {"enabled": True},
                                      "head": {"resources": {"limits": {"cpu": "1", "memory": "2Gi"}}},
                                      "workerGroups": [group("small", "1Gi"), group("big", "3Gi")]}},
                            OperatorSettings())
    demand = [{"CPU": 1, "memory": 600 * 1024**2}]
    scorer = functools.partial(_default_utilization_scorer, node_availability_summary=NodeAvailabilitySummary({}))
    chosen = {}
    for advertise in ("heap", ADVERTISE_LIMIT):
        types = autoscaling_config(cluster, advertise)["available_node_types"]
        chosen[advertise] = dict(get_nodes_for(types, {}, "head", 10, demand, scorer)[0])
    assert chosen == {"heap": {"big": 1}, ADVERTISE_LIMIT: {"small": 1}}
    assert cluster.group("small").plan.heap_bytes < 600 * 1024**2 < cluster.group("big").plan.heap_bytes

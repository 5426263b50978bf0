"""RayguardNodeProvider driven as Ray 2.60's StandardAutoscaler drives it (non_terminated_nodes,
safe_to_scale, create_node / terminate_node, post_process), over an in-memory ScaleTarget."""

from __future__ import annotations

import pytest
from ray.autoscaler.tags import TAG_RAY_NODE_KIND

from rayguard_node.autoscaler.provider import RayguardNodeProvider, load_target
from rayguard_node.autoscaler.target import TargetUnavailable
from rayguard_node.contract.autoscaler import REASON_IDLE, REASON_PENDING
from tests.unit.node.autoscaler.fake_target import FakeTarget, update

CONFIG = {"type": "external", "disable_node_updaters": True, "disable_launch_config_check": True,
          "foreground_node_launch": True, "worker_liveness_check": False, "namespace": "default"}


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def provider(target: FakeTarget, clock: Clock | None = None) -> RayguardNodeProvider:
    return RayguardNodeProvider(CONFIG, "demo", target=target, clock=clock or Clock())


def test_pending_demand_raises_replicas_with_its_reason() -> None:
    target = FakeTarget({"cpu": (0, 0, 4), "gpu": (0, 0, 2)})
    p = provider(target)
    assert update(p, launch={"cpu": 2})
    assert target.submits == [({"cpu": 2}, frozenset(), {"cpu": REASON_PENDING})]
    assert (target.group("cpu")["replicas"], target.group("gpu")["replicas"]) == (2, 0)
    target.operator_pass()
    assert update(p) and len(target.submits) == 1  # nothing to change: nothing submitted
    assert p.cur_num_workers() == {"cpu": 2}


def test_the_head_is_a_node_but_not_a_worker() -> None:
    target = FakeTarget({"cpu": (0, 0, 4)})
    p = provider(target)
    assert p.non_terminated_nodes({}) == ["demo-head"]
    assert p.node_tags("demo-head")[TAG_RAY_NODE_KIND] == "head" and p.cur_num_workers() == {}
    assert p.internal_ip("demo-head") == "10.0.0.1"


def test_idle_workers_are_named_and_the_next_update_waits_for_the_operator() -> None:
    target = FakeTarget({"cpu": (2, 0, 4)})
    target.operator_pass()
    p = provider(target)
    idle = sorted(target.workers("cpu"))[0]
    assert update(p, terminate=(idle,))
    assert target.submits[-1] == ({"cpu": 1}, frozenset({idle}), {"cpu": REASON_IDLE})
    assert target.group("cpu")["replicas"] == 1 and target.group("cpu")["workersToDelete"] == [idle]
    # Until the operator deletes it and clears the list, no update runs: no double delete.
    assert not update(p, launch={"cpu": 1})
    assert len(target.submits) == 1
    target.operator_pass()
    assert idle not in target.pods and len(target.workers("cpu")) == 1
    assert update(p)


def test_a_cleared_list_whose_pod_still_exists_still_waits() -> None:
    target = FakeTarget({"cpu": (2, 0, 4)})
    target.operator_pass()
    p = provider(target)
    idle = sorted(target.workers("cpu"))[0]
    assert update(p, terminate=(idle,))
    target.group("cpu").pop("workersToDelete")  # cleared, but the pod is not gone yet
    assert not update(p)
    target.pods.pop(idle)
    assert update(p)


def test_a_failed_read_scales_nothing_and_backs_off() -> None:
    target = FakeTarget({"cpu": (2, 0, 4)})
    target.operator_pass()
    clock = Clock()
    p = provider(target, clock)
    target.failing = True
    with pytest.raises(TargetUnavailable):
        p.non_terminated_nodes({})
    with pytest.raises(TargetUnavailable, match="backing off"):
        p.non_terminated_nodes({})  # within the backoff: not even asked
    assert target.reads == 1 and target.submits == []
    clock.now += 1.5
    with pytest.raises(TargetUnavailable):
        p.non_terminated_nodes({})
    assert target.reads == 2
    clock.now += 1.5  # the second delay is 2 s
    with pytest.raises(TargetUnavailable, match="backing off"):
        p.non_terminated_nodes({})
    target.failing = False
    clock.now += 1.0
    assert update(p) and target.reads == 3
    assert target.group("cpu")["replicas"] == 2 and target.submits == []


def test_pods_not_created_yet_are_not_cancelled_by_another_groups_launch() -> None:
    target = FakeTarget({"cpu": (3, 0, 4), "gpu": (0, 0, 2)})  # the operator has made no cpu pod yet
    p = provider(target)
    assert update(p, launch={"gpu": 1})
    assert target.submits[-1][0] == {"gpu": 1}
    assert (target.group("cpu")["replicas"], target.group("gpu")["replicas"]) == (3, 1)


def test_targets_are_named_in_the_provider_config() -> None:
    target = load_target({**CONFIG, "target": "tests.unit.node.autoscaler.test_provider:make_fake"}, "demo")
    assert isinstance(target, FakeTarget)
    for bad, why in (("nocolon", "neither"), ("tests.unit.node.autoscaler.test_provider:CONFIG", "nothing callable")):
        with pytest.raises(ValueError, match=why):
            load_target({**CONFIG, "target": bad}, "demo")
    with pytest.raises(ModuleNotFoundError):
        load_target({**CONFIG, "target": "no.such.module:f"}, "demo")


def make_fake(provider_config: dict[str, object], cluster_name: str) -> FakeTarget:
    assert cluster_name == "demo" and provider_config["namespace"] == "default"
    return FakeTarget({"cpu": (0, 0, 1)})

"""Which pods go when a group shrinks, workersToDelete, suspend, and the scaling Events: the
pure decisions (reconcile/scale.py, and plan_actions over snapshots)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from rayguard_node.contract.autoscaler import ANNOTATION_SCALE_REASON

from rayguard_operator import names
from rayguard_operator.reconcile.actions import Action, Observed
from rayguard_operator.reconcile.autoscaler import KINDS
from rayguard_operator.reconcile.scale import clear_patch, named_pods, scale_notes, scale_reasons, victims
from rayguard_operator.spec.model import ClusterModel
from tests.unit.operator.reconcile.test_actions import World as PodWorld
from tests.unit.operator.reconcile.test_actions import body, model

CPU = names.worker_pod_prefix("minimal", "cpu")


class World(PodWorld):
    """test_actions' World, which also keeps the autoscaler's children."""

    def __init__(self) -> None:
        super().__init__()
        self.children: dict[str, dict[str, Any]] = {}

    def observed(self) -> Observed:
        seen = super().observed()
        return Observed(seen.secret, seen.service, seen.pods,
                        {kind: self.children.get(kind) for kind in KINDS})

    def apply(self, actions: list[Action]) -> None:
        own = [a for a in actions if a.kind in KINDS]
        for action in own:
            if action.verb == "create":
                self.children[action.kind] = dict(action.body or {})
            elif action.verb == "delete":
                self.children.pop(action.kind, None)
        super().apply([a for a in actions if a.kind not in KINDS])


def cluster(workers: int = 3, autoscaling: bool = False, to_delete: tuple[str, ...] = (),
            suspend: bool = False, groups: tuple[str, ...] = ("cpu",)) -> dict[str, Any]:
    data = body(workers)
    first = data["spec"]["workerGroups"][0]
    first["maxReplicas"] = 10
    for name in groups[1:]:
        data["spec"]["workerGroups"].append({**first, "name": name, "replicas": 1})
    if to_delete:
        first["workersToDelete"] = list(to_delete)
    if autoscaling:
        data["spec"]["autoscaling"] = {"enabled": True}
    if suspend:
        data["spec"]["suspend"] = True
    return data


def running(workers: int = 3, **kwargs: Any) -> tuple[World, ClusterModel]:
    """A world where the cluster's pods exist and are ready (the autoscaler's children too)."""
    world = World()
    base = model(cluster(workers, **kwargs))
    for _ in range(3):
        world.sync(base)
    world.ready()
    return world, base


def deletes(actions: list[Any]) -> list[tuple[str, str]]:
    return [(a.name, a.why) for a in actions if a.verb == "delete" and a.kind == "Pod"]


def creates(actions: list[Any]) -> list[str]:
    return [a.name for a in actions if a.verb == "create" and a.kind == "Pod"]


# --- workersToDelete ------------------------------------------------------------------------

def test_the_named_pods_go_first_then_the_surplus_in_scale_down_order() -> None:
    world, _ = running(4)
    pods = world.group_pods("cpu")
    oldest = pods[0]
    actions = world.plan(model(cluster(2, to_delete=(oldest,))))
    # The oldest, ready pod is named: it goes, though scale_down_order would keep it; then the
    # newest of the rest makes up the surplus (autoscaling off).
    assert deletes(actions) == [(oldest, "named in workersToDelete of group cpu"),
                                (pods[-1], "scaling cpu down to 2")]
    assert creates(actions) == []


def test_a_named_pod_with_replicas_unchanged_is_replaced() -> None:
    world, _ = running(2)
    gone = world.group_pods("cpu")[1]
    actions = world.plan(model(cluster(2, to_delete=(gone,))))
    assert deletes(actions) == [(gone, "named in workersToDelete of group cpu")]
    assert len(creates(actions)) == 1


def test_names_that_are_not_the_groups_are_ignored_with_one_note() -> None:
    world, _ = running(2, groups=("cpu", "gpu"))
    gpu_pod = world.group_pods("gpu")[0]
    [head] = world.group_pods("head")
    mine = world.group_pods("cpu")[0]
    target = model(cluster(1, to_delete=("nope-123", gpu_pod, head, mine), groups=("cpu", "gpu")))
    named = named_pods(target, world.observed().pods)
    assert set(named) == {"cpu"}
    assert [p["metadata"]["name"] for p in named["cpu"].delete] == [mine]
    assert named["cpu"].ignored == (("nope-123", "no such pod"), (gpu_pod, "a pod of group gpu"),
                                    (head, "the head pod"))
    note = named["cpu"].note
    assert note is not None and (note.type, note.reason) == ("Normal", "WorkersToDeleteIgnored")
    assert note.message == (f"workersToDelete of group cpu names pods that are not its own, ignored: nope-123 (no"
                            f" such pod), {gpu_pod} (a pod of group gpu), {head} (the head pod)")
    assert [name for name, _ in deletes(world.plan(target))] == [mine]  # exactly the named one


def test_a_named_pod_already_going_is_consumed_and_not_deleted_again() -> None:
    world, _ = running(2)
    gone, dead = world.group_pods("cpu")
    world.pods[gone]["metadata"]["deletionTimestamp"] = "2030-01-01T00:01:00Z"
    world.pods[dead]["status"] = {"phase": "Failed"}
    target = model(cluster(0, to_delete=(gone, dead)))
    named = named_pods(target, world.observed().pods)["cpu"]
    assert named.delete == () and named.ignored == ()
    assert deletes(world.plan(target)) == [(dead, "phase Failed, replacing it")]


# --- autoscaling on: nobody's pod goes unnamed -------------------------------------------------

def test_with_autoscaling_a_surplus_nobody_named_is_kept() -> None:
    world, _ = running(3, autoscaling=True)
    assert world.plan(model(cluster(1, autoscaling=True))) == []


def test_with_autoscaling_exactly_the_named_pods_go() -> None:
    world, _ = running(3, autoscaling=True)
    pods = world.group_pods("cpu")
    actions = world.plan(model(cluster(1, autoscaling=True, to_delete=(pods[1],))))
    assert deletes(actions) == [(pods[1], "named in workersToDelete of group cpu")]  # one of two extra
    assert creates(actions) == []


def test_with_autoscaling_dead_pods_are_still_replaced_and_scale_up_still_creates() -> None:
    world, _ = running(2, autoscaling=True)
    dead = world.group_pods("cpu")[0]
    world.pods[dead]["status"] = {"phase": "Failed"}
    actions = world.plan(model(cluster(4, autoscaling=True)))
    assert deletes(actions) == [(dead, "phase Failed, replacing it")]
    assert len(creates(actions)) == 3


def test_the_head_surplus_goes_whatever_the_autoscaling() -> None:
    world, base = running(0, autoscaling=True)
    [head] = world.group_pods("head")
    extra = dict(world.pods[head], metadata={**world.pods[head]["metadata"], "name": head + "x",
                                             "creationTimestamp": "2030-01-01T00:09:00Z"})
    live = [world.pods[head], extra]
    assert [(p["metadata"]["name"], why) for p, why in victims(base.head, live, None, True)] == [
        (head + "x", "extra head pod")]


@pytest.mark.parametrize("autoscaling", [False, True])
def test_a_pass_after_the_named_pods_went_plans_nothing(autoscaling: bool) -> None:
    world, _ = running(3, autoscaling=autoscaling)
    gone = world.group_pods("cpu")[0]
    world.sync(model(cluster(2, autoscaling=autoscaling, to_delete=(gone,))))
    assert world.plan(model(cluster(2, autoscaling=autoscaling))) == []  # the list cleared


# --- suspend ----------------------------------------------------------------------------------

def test_suspend_deletes_every_pod_and_creates_none_and_resume_recreates_them() -> None:
    world, _ = running(2)
    everyone = sorted(world.pods)
    actions = world.sync(model(cluster(2, suspend=True)))
    assert sorted(a.name for a in actions) == everyone
    assert {(a.verb, a.kind, a.why) for a in actions} == {("delete", "Pod", "spec.suspend is true")}
    assert world.plan(model(cluster(2, suspend=True))) == []
    assert world.secret is not None and world.service is not None
    assert len(creates(world.plan(model(cluster(2))))) == 3  # the head and both workers


# --- clearing the list ------------------------------------------------------------------------

def test_the_clear_patch_drops_only_the_consumed_lists_and_carries_the_resource_version() -> None:
    data = cluster(2, to_delete=("a", "b"), groups=("cpu", "gpu"))
    data["spec"]["workerGroups"][1]["workersToDelete"] = ["c"]
    data["metadata"]["resourceVersion"] = "42"
    patch = clear_patch(data, {"cpu"})
    assert patch is not None and patch["metadata"] == {"resourceVersion": "42"}
    cpu, gpu = patch["spec"]["workerGroups"]
    assert "workersToDelete" not in cpu and gpu["workersToDelete"] == ["c"]
    assert {k: v for k, v in cpu.items()} == {k: v for k, v in data["spec"]["workerGroups"][0].items()
                                              if k != "workersToDelete"}
    assert data["spec"]["workerGroups"][0]["workersToDelete"] == ["a", "b"]  # the body is not changed
    assert clear_patch(cluster(2), {"cpu"}) is None


# --- the scaling Events -----------------------------------------------------------------------

def status(**desired: int) -> dict[str, Any]:
    return {"workerGroups": [{"name": n, "desired": d, "ready": 0} for n, d in desired.items()]}


def test_scaled_up_and_down_name_the_group_the_counts_and_why() -> None:
    reasons = {"cpu": "pending demand", "gpu": "idle"}
    notes = scale_notes(status(cpu=0, gpu=3, mem=1), status(cpu=2, gpu=1, mem=1), reasons, autoscaling=True)
    assert [(n.type, n.reason, n.message) for n in notes] == [
        ("Normal", "ScaledUp", "group cpu: 0 -> 2 (pending demand)"),
        ("Normal", "ScaledDown", "group gpu: 3 -> 1 (idle)")]


def test_without_a_reason_or_without_autoscaling_the_why_is_a_spec_change() -> None:
    [note] = scale_notes(status(cpu=1), status(cpu=2), {}, autoscaling=True)
    assert note.message == "group cpu: 1 -> 2 (spec changed)"
    [note] = scale_notes(status(cpu=1), status(cpu=2), {"cpu": "pending demand"}, autoscaling=False)
    assert note.message == "group cpu: 1 -> 2 (spec changed)"


def test_no_event_for_a_group_the_status_never_recorded() -> None:
    assert scale_notes({}, status(cpu=2), {}, True) == []  # a new cluster
    assert scale_notes(status(cpu=2), status(cpu=2, gpu=1), {}, True) == []  # a new group


def test_the_reason_annotation_is_read_leniently() -> None:
    def with_annotation(text: str | None) -> dict[str, Any]:
        return {"metadata": {"annotations": {} if text is None else {ANNOTATION_SCALE_REASON: text}}}

    assert scale_reasons(with_annotation(json.dumps({"cpu": "idle"}))) == {"cpu": "idle"}
    for bad in (None, "", "not json", "[1]", json.dumps({"cpu": 3})):
        assert scale_reasons(with_annotation(bad)) == {}

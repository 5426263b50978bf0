"""The pure rules every ScaleTarget shares: pods as Ray's NodeData, and a scale request as
replicas, workersToDelete and reasons in one merge patch."""

from __future__ import annotations

import json

import pytest

from rayguard_node.autoscaler.scaling import (GroupChange, GroupState, groups_of, node_status, nodes_of, plan_scale,
                                              reasons_for, scale_patch)
from rayguard_node.contract import autoscaler as contract
from tests.unit.node.autoscaler.fake_target import pod


@pytest.mark.parametrize("phase, ready, status", [
    ("Running", True, "up-to-date"), ("Running", False, "pending"), ("Pending", False, "pending"),
    ("Failed", False, "update-failed"), ("Succeeded", False, "update-failed"), ("Unknown", False, "update-failed"),
])
def test_node_status(phase: str, ready: bool, status: str) -> None:
    assert node_status(phase, ready) == status


def test_nodes_are_pods_by_name_without_those_being_deleted() -> None:
    nodes = nodes_of([pod("h", None, ip="10.0.0.9"), pod("w1", "cpu", phase="Pending", ready=False, ip=""),
                      pod("w2", "cpu", deleting=True), {"metadata": {"name": "stray", "labels": {}}}])
    assert sorted(nodes) == ["h", "w1"]
    assert (nodes["h"].kind, nodes["h"].type, nodes["h"].ip, nodes["h"].status) == \
        ("head", contract.HEAD_NODE_TYPE, "10.0.0.9", "up-to-date")
    assert (nodes["w1"].kind, nodes["w1"].type, nodes["w1"].ip, nodes["w1"].status) == ("worker", "cpu", None, "pending")


def test_the_contract_labels_are_the_operators() -> None:
    from rayguard_operator import names

    assert (contract.LABEL_CLUSTER, contract.LABEL_NODE_TYPE, contract.LABEL_GROUP) == \
        (names.LABEL_CLUSTER, names.LABEL_NODE_TYPE, names.LABEL_GROUP)
    assert (contract.RAYCLUSTER_GROUP, contract.RAYCLUSTER_VERSION, contract.RAYCLUSTER_PLURAL) == \
        (names.GROUP, names.VERSION, names.PLURAL)


GROUPS = {"cpu": GroupState("cpu", 2, 1, 4), "gpu": GroupState("gpu", 0, 0, 2)}
TYPES = {"c1": "cpu", "c2": "cpu", "g1": "gpu"}


@pytest.mark.parametrize("desired, to_delete, expected", [
    ({"cpu": 2, "gpu": 0}, set(), {}),  # nothing changes
    ({"cpu": 3}, set(), {"cpu": GroupChange(3, (), contract.REASON_PENDING)}),
    ({"cpu": 9}, set(), {"cpu": GroupChange(4, (), contract.REASON_PENDING)}),  # capped at maxReplicas
    ({"cpu": 1}, {"c1"}, {"cpu": GroupChange(1, ("c1",), contract.REASON_IDLE)}),
    ({"cpu": 0}, {"c1", "c2"}, {"cpu": GroupChange(1, ("c1", "c2"), contract.REASON_IDLE)}),  # not below min
    ({"cpu": 0}, set(), {}),  # lower without naming a pod: the pods not created yet stay
    ({"cpu": 1}, {"nope"}, {}),  # a pod the request was not computed from: ignored
])
def test_plan_scale(desired: dict[str, int], to_delete: set[str], expected: dict[str, GroupChange]) -> None:
    assert plan_scale(GROUPS, TYPES, desired, to_delete, {}) == expected


def test_names_still_listed_are_kept_and_given_reasons_win() -> None:
    groups = {"cpu": GroupState("cpu", 2, 0, 4, ("old",))}
    assert plan_scale(groups, TYPES, {"cpu": 1}, {"c1"}, {"cpu": "why"}) == {"cpu": GroupChange(1, ("old", "c1"), "why")}


def test_reasons() -> None:
    assert reasons_for({"cpu": 2, "gpu": 1}, {"cpu": 3, "gpu": 0}, {"gpu": 1}) == \
        {"cpu": contract.REASON_PENDING, "gpu": contract.REASON_IDLE}
    assert reasons_for({"cpu": 2}, {"cpu": 2}, {}) == {}


def test_the_patch_keeps_every_other_field_and_carries_the_version_read() -> None:
    raycluster = {"metadata": {"name": "demo", "resourceVersion": "41", "annotations": {"a": "b"}},
                  "spec": {"image": "x", "workerGroups": [
                      {"name": "cpu", "replicas": 2, "resources": {"limits": {"memory": "1Gi"}}, "minReplicas": 1},
                      {"name": "gpu", "replicas": 0, "rayStartParams": {"k": "v"}}]}}
    patch = scale_patch(raycluster, {"gpu": GroupChange(1, (), contract.REASON_PENDING),
                                     "cpu": GroupChange(1, ("c1",), contract.REASON_IDLE)})
    assert patch == {
        "metadata": {"resourceVersion": "41", "annotations": {contract.ANNOTATION_SCALE_REASON: json.dumps(
            {"cpu": contract.REASON_IDLE, "gpu": contract.REASON_PENDING}, sort_keys=True)}},
        "spec": {"workerGroups": [
            {"name": "cpu", "replicas": 1, "resources": {"limits": {"memory": "1Gi"}}, "minReplicas": 1,
             "workersToDelete": ["c1"]},
            {"name": "gpu", "replicas": 1, "rayStartParams": {"k": "v"}}]}}
    assert raycluster["spec"]["workerGroups"][0]["replicas"] == 2  # not changed in place
    assert groups_of(raycluster)["gpu"] == GroupState("gpu", 0, 0, 1000)  # the CRD's defaults

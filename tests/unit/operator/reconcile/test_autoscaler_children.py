"""The autoscaler's ServiceAccount, Role, RoleBinding and ConfigMap: made before any pod, left
alone when equal, the ConfigMap patched when the config changes, a Role or RoleBinding that
drifted made again, all four deleted once autoscaling is off (reconcile/autoscaler.py)."""

from __future__ import annotations

import copy
import json
from typing import Any

from rayguard_node.contract.autoscaler import CONFIG_KEY

from rayguard_operator.manifests.autoscaler import build_autoscaler_children
from rayguard_operator.reconcile.actions import plan_actions
from rayguard_operator.reconcile.autoscaler import KINDS, autoscaler_steps
from tests.unit.operator.reconcile.test_actions import body, model
from tests.unit.operator.reconcile.test_scale import World

NAME = "minimal-autoscaler"


def autoscaled(idle_s: int = 60, enabled: bool = True) -> dict[str, Any]:
    data = body(1)
    data["spec"]["workerGroups"][0]["maxReplicas"] = 4
    data["spec"]["autoscaling"] = {"enabled": enabled, "idleTimeoutSeconds": idle_s}
    return data


def existing(**changes: Any) -> dict[str, dict[str, Any] | None]:
    """The four children as the server holds them: rayguard's, plus what the server adds."""
    held: dict[str, dict[str, Any] | None] = {}
    for child in build_autoscaler_children(model(autoscaled())):
        child = copy.deepcopy(child)
        child["metadata"].update(uid=f"uid-{child['kind']}", resourceVersion="7",
                                 creationTimestamp="2030-01-01T00:00:00Z")
        held[child["kind"]] = child
    held.update(changes)
    return held


def test_made_in_order_before_the_head_pod() -> None:
    actions = World().plan(model(autoscaled()))
    assert [(a.verb, a.kind) for a in actions][:7] == [
        ("create", "Secret"), ("create", "Service"), ("create", "ServiceAccount"), ("create", "Role"),
        ("create", "RoleBinding"), ("create", "ConfigMap"), ("create", "Pod")]
    assert {a.name for a in actions[2:6]} == {NAME}
    assert actions[6].body["spec"]["serviceAccountName"] == NAME  # type: ignore[index]


def test_equal_children_take_no_write() -> None:
    assert autoscaler_steps(model(autoscaled()), existing()) == []
    world = World()
    world.sync(model(autoscaled()))
    assert world.plan(model(autoscaled())) == []


def test_a_changed_config_patches_only_the_config_map() -> None:
    [action] = autoscaler_steps(model(autoscaled(idle_s=120)), existing())
    assert (action.verb, action.kind, action.name) == ("patch", "ConfigMap", NAME)
    assert action.why == "the autoscaler config changed"
    assert set(action.body or {}) == {"data"}
    assert json.loads((action.body or {})["data"][CONFIG_KEY])["idle_timeout_minutes"] == 2.0


def test_keys_and_labels_someone_else_added_are_left_alone_but_ours_come_back() -> None:
    config = existing()["ConfigMap"]
    assert config is not None
    config["data"]["extra"] = "theirs"
    config["metadata"]["labels"]["team"] = "theirs"
    assert autoscaler_steps(model(autoscaled()), {**existing(), "ConfigMap": config}) == []
    del config["metadata"]["labels"]["rayguard.dev/cluster"]
    [action] = autoscaler_steps(model(autoscaled()), {**existing(), "ConfigMap": config})
    assert action.body == {"metadata": {"labels": {"rayguard.dev/cluster": "minimal"}}}


def test_a_widened_role_or_a_rebound_binding_is_made_again_never_patched() -> None:
    role = existing()["Role"]
    assert role is not None
    role["rules"].append({"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]})
    actions = autoscaler_steps(model(autoscaled()), {**existing(), "Role": role})
    assert [(a.verb, a.kind) for a in actions] == [("delete", "Role"), ("create", "Role")]
    assert actions[1].body == build_autoscaler_children(model(autoscaled()))[1]
    binding = existing()["RoleBinding"]
    assert binding is not None
    binding["subjects"].append({"kind": "ServiceAccount", "name": "default", "namespace": "default"})
    actions = autoscaler_steps(model(autoscaled()), {**existing(), "RoleBinding": binding})
    assert [(a.verb, a.kind) for a in actions] == [("delete", "RoleBinding"), ("create", "RoleBinding")]


def test_what_the_server_fills_in_is_no_drift() -> None:
    binding = existing()["RoleBinding"]
    assert binding is not None
    binding["subjects"][0]["apiGroup"] = ""  # omitted, or empty: the same
    role = existing()["Role"]
    assert role is not None
    role["rules"][1]["resourceNames"] = []
    assert autoscaler_steps(model(autoscaled()), {**existing(), "Role": role, "RoleBinding": binding}) == []


def test_a_missing_child_is_made_again_alone() -> None:
    actions = autoscaler_steps(model(autoscaled()), existing(ServiceAccount=None))
    assert [(a.verb, a.kind) for a in actions] == [("create", "ServiceAccount")]


def test_turned_off_all_four_go_the_binding_first_the_config_map_last_then_nothing() -> None:
    off = model(autoscaled(enabled=False))
    actions = autoscaler_steps(off, existing())
    assert [(a.verb, a.kind, a.name) for a in actions] == [
        ("delete", "RoleBinding", NAME), ("delete", "Role", NAME), ("delete", "ServiceAccount", NAME),
        ("delete", "ConfigMap", NAME)]
    assert {a.why for a in actions} == {"spec.autoscaling.enabled is false"}
    assert autoscaler_steps(off, {kind: None for kind in KINDS}) == []


def test_turned_off_only_the_marker_is_looked_for() -> None:
    off = model(autoscaled(enabled=False))
    assert autoscaler_steps(off, {"ConfigMap": None}) == []  # none left: nothing to look at
    assert autoscaler_steps(off, {}) == []
    # The marker is there, the rest unknown: all four are deleted (a delete of a gone one is no error).
    marker = existing()["ConfigMap"]
    assert [a.kind for a in autoscaler_steps(off, {"ConfigMap": marker})] == [
        "RoleBinding", "Role", "ServiceAccount", "ConfigMap"]
    # Known gone ones are not deleted again.
    assert [a.kind for a in autoscaler_steps(off, {**existing(), "Role": None, "ServiceAccount": None})] == [
        "RoleBinding", "ConfigMap"]


def test_plan_actions_of_a_cluster_without_autoscaling_never_names_the_children() -> None:
    world = World()
    actions = plan_actions(model(body()), world.observed(), lambda p: p + "x", lambda: ("t", "p"))
    assert not any(a.kind in KINDS for a in actions)

"""Reconcile by difference, without a cluster: snapshots in, ordered actions out."""

from __future__ import annotations

import copy
import itertools
from pathlib import Path
from typing import Any

import pytest
import yaml

from rayguard_operator import names
from rayguard_operator.spec.model import ClusterModel, parse_cluster
from rayguard_operator.reconcile import actions as actions_module
from rayguard_operator.reconcile.actions import Action, Observed, plan_actions
from rayguard_operator.reconcile.pods import scale_down_order
from rayguard_operator.manifests.service import FIELD_MANAGER, build_head_service
from rayguard_operator.settings import OperatorSettings
from tests.paths import REPO_ROOT
from testkit.kube.apply import server_side_apply

REPO = REPO_ROOT


def body(workers: int = 2) -> dict[str, Any]:
    data = yaml.safe_load((REPO / "examples" / "raycluster-minimal.yaml").read_text())
    data["metadata"].update(uid="uid-1", namespace="default", generation=1)
    data["spec"]["workerGroups"][0]["replicas"] = workers
    return data


def model(data: dict[str, Any]) -> ClusterModel:
    return parse_cluster(data, OperatorSettings())


class World:
    """Applies actions the way the API server would, with a clock that ticks per create."""

    def __init__(self) -> None:
        self.secret: dict[str, Any] | None = None
        self.service: dict[str, Any] | None = None
        self.pods: dict[str, dict[str, Any]] = {}
        self.clock = itertools.count(1)
        self.names = (f"p{i:03d}" for i in itertools.count())

    def observed(self) -> Observed:
        return Observed(copy.deepcopy(self.secret), copy.deepcopy(self.service),
                        tuple(copy.deepcopy(p) for p in self.pods.values()))

    def plan(self, cluster: ClusterModel) -> list[Action]:
        return plan_actions(cluster, self.observed(), lambda prefix: prefix + next(self.names), lambda: ("tok-XYZZY", "pw-XYZZY"))

    def apply(self, actions: list[Action]) -> None:
        for action in actions:
            if action.kind == "Service":  # the syncer applies it, server-side, either way
                self.service = server_side_apply(self.service, action.body, FIELD_MANAGER, True, "v1", "2030-01-01T00:00:00Z")
            elif action.verb == "create":
                obj = copy.deepcopy(action.body)
                obj["metadata"]["creationTimestamp"] = f"2030-01-01T00:00:{next(self.clock):02d}Z"
                if action.kind == "Pod":
                    obj["status"] = {"phase": "Pending"}
                    self.pods[action.name] = obj
                else:
                    setattr(self, action.kind.lower(), obj)
            elif action.verb == "delete":
                del self.pods[action.name]

    def sync(self, cluster: ClusterModel) -> list[Action]:
        actions = self.plan(cluster)
        self.apply(actions)
        return actions

    def ready(self, *pod_names: str) -> None:
        for name in pod_names or list(self.pods):
            self.pods[name]["status"] = {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}

    def group_pods(self, group: str) -> list[str]:
        return sorted(n for n, p in self.pods.items() if p["metadata"]["labels"][names.LABEL_GROUP] == group)


def summary(actions: list[Action]) -> list[tuple[str, str]]:
    return [(a.verb, a.kind) for a in actions]


def test_from_nothing_in_order_then_nothing() -> None:
    world, cluster = World(), model(body())
    actions = world.sync(cluster)
    assert summary(actions) == [("create", "Secret"), ("create", "Service"), ("create", "Pod"),
                                ("create", "Pod"), ("create", "Pod")]
    assert [a.name for a in actions[2:]] == ["minimal-head-p000", "minimal-worker-cpu-p001", "minimal-worker-cpu-p002"]
    assert world.plan(cluster) == []  # the second pass writes nothing
    world.ready()
    assert world.plan(cluster) == []


def test_events_say_what_happened() -> None:
    [secret, *_] = World().plan(model(body()))
    assert (secret.note.type, secret.note.reason, secret.note.message) == (
        "Normal", "Created", "Created Secret minimal-secret")
    assert secret.body["stringData"]["ray-auth-token"] == "tok-XYZZY"  # type: ignore[index]
    assert "XYZZY" not in secret.note.message and "XYZZY" not in repr(secret)  # never logged


def test_secret_is_never_rewritten() -> None:
    world, cluster = World(), model(body())
    world.sync(cluster)
    world.secret = {"metadata": {"name": "minimal-secret"}, "data": {"something": "else"}}
    assert world.plan(cluster) == []


def test_scale_up_and_down() -> None:
    world, data = World(), body(workers=1)
    world.sync(model(data))
    data["spec"]["workerGroups"][0]["replicas"] = 4
    assert summary(world.sync(model(data))) == [("create", "Pod")] * 3
    assert len(world.group_pods("cpu")) == 4
    oldest, second, third, newest = world.group_pods("cpu")
    world.ready(oldest, third, newest)
    data["spec"]["workerGroups"][0]["replicas"] = 2
    actions = world.sync(model(data))
    # Not ready first (second), then the newest (newest).
    assert [(a.verb, a.name) for a in actions] == [("delete", second), ("delete", newest)]
    assert world.group_pods("cpu") == [oldest, third]
    assert world.plan(model(data)) == []


def test_scale_down_order() -> None:
    def pod(name: str, created: str, ready: bool) -> dict[str, Any]:
        conditions = [{"type": "Ready", "status": "True" if ready else "False"}]
        return {"metadata": {"name": name, "creationTimestamp": created},
                "status": {"phase": "Running", "conditions": conditions}}
    pods = [pod("a", "2030-01-01T00:00:01Z", True), pod("b", "2030-01-01T00:00:03Z", True),
            pod("c", "2030-01-01T00:00:02Z", False), pod("d", "2030-01-01T00:00:00Z", False)]
    assert [p["metadata"]["name"] for p in scale_down_order(pods)] == ["c", "d", "b", "a"]


def test_deleted_and_failed_pods_are_replaced() -> None:
    world, cluster = World(), model(body())
    world.sync(cluster)
    gone, failed = world.group_pods("cpu")
    del world.pods[gone]
    world.pods[failed]["status"] = {"phase": "Failed", "reason": "Evicted"}
    actions = world.sync(cluster)
    assert [(a.verb, a.kind) for a in actions] == [("delete", "Pod"), ("create", "Pod"), ("create", "Pod")]
    assert actions[0].name == failed and "Failed" in actions[0].note.message
    assert len(world.group_pods("cpu")) == 2 and failed not in world.pods
    assert world.plan(cluster) == []


def test_terminating_pods_are_neither_counted_nor_touched() -> None:
    world, cluster = World(), model(body())
    world.sync(cluster)
    leaving = world.group_pods("cpu")[0]
    world.pods[leaving]["metadata"]["deletionTimestamp"] = "2030-01-01T00:01:00Z"
    actions = world.plan(cluster)
    assert summary(actions) == [("create", "Pod")]


def test_removed_group_pods_are_deleted() -> None:
    world, data = World(), body()
    world.sync(model(data))
    data["spec"]["workerGroups"][0]["name"] = "cpu2"
    actions = world.sync(model(data))
    assert sorted(summary(actions)) == [("create", "Pod")] * 2 + [("delete", "Pod")] * 2
    assert all("no longer in the spec" in a.note.message for a in actions if a.verb == "delete")


def test_service_drift_is_patched() -> None:
    world, cluster = World(), model(body())
    world.sync(cluster)
    world.service["spec"]["selector"]["extra"] = "x"  # type: ignore[index]
    world.service["spec"]["clusterIP"] = "10.0.0.7"  # type: ignore[index]  # the server's, ignored
    [patch] = world.plan(cluster)
    assert (patch.verb, patch.kind) == ("patch", "Service")
    assert patch.body == build_head_service(cluster)  # the apply configuration: the selector is atomic
    world.apply([patch])
    assert world.service["spec"]["selector"] == names.head_selector("minimal")  # type: ignore[index]
    assert world.plan(cluster) == []


FAULT_TOLERANT = {"redisAddress": "redis.example:6379"}


def test_template_change_rolls_one_pod_at_a_time_workers_first() -> None:
    """RollingUpdate (the default) with GCS fault tolerance: the head goes too, last."""
    world, data = World(), body(workers=2)
    data["spec"]["gcsFaultTolerance"] = FAULT_TOLERANT
    world.sync(model(data))
    world.ready()
    before = set(world.pods)
    data["spec"]["image"] = "rayguard/node:0.2.0"
    cluster = model(data)
    replaced: list[str] = []
    for _ in range(10):
        actions = world.sync(cluster)
        if not actions:
            new_not_ready = [n for n, p in world.pods.items() if n not in before and p["status"]["phase"] != "Running"]
            if not new_not_ready:
                break
            world.ready(*new_not_ready)  # the replacement became ready: the next may go
            continue
        assert summary(actions) == [("delete", "Pod"), ("create", "Pod")]  # one at a time
        replaced.append(actions[0].name)
        assert world.plan(cluster) == []  # waits for the replacement to be ready
    assert replaced[-1].startswith("minimal-head-") and all(n.startswith("minimal-worker-") for n in replaced[:-1])
    assert len(replaced) == 3 and not (set(world.pods) & before)
    assert all(p["spec"]["containers"][0]["image"] == "rayguard/node:0.2.0" for p in world.pods.values())


def test_rollout_does_not_wait_for_pods_that_are_not_ready_anyway() -> None:
    """Without GCS fault tolerance too: a head that never started (Pending) holds no GCS."""
    world, data = World(), body(workers=2)
    world.sync(model(data))  # nothing ever becomes ready
    data["spec"]["image"] = "rayguard/node:0.2.0"
    cluster = model(data)
    passes = [summary(world.sync(cluster)) for _ in range(4)]
    assert passes == [[("delete", "Pod"), ("create", "Pod")]] * 3 + [[]]


def rolled(world: World, cluster: ClusterModel, passes: int = 10) -> list[str]:
    """Pods the rollout deleted, making each replacement ready before the next pass."""
    replaced: list[str] = []
    for _ in range(passes):
        actions = world.sync(cluster)
        replaced += [a.name for a in actions if a.verb == "delete"]
        world.ready()
    return replaced


def test_rolling_update_leaves_a_started_head_alone_without_fault_tolerance() -> None:
    world, data = World(), body(workers=2)
    world.sync(model(data))
    world.ready()
    [head] = world.group_pods("head")
    data["spec"]["image"] = "rayguard/node:0.2.0"
    cluster = model(data)
    replaced = rolled(world, cluster)
    assert len(replaced) == 2 and all(n.startswith("minimal-worker-cpu-") for n in replaced)
    assert world.group_pods("head") == [head]  # the same pod, still on the old image
    assert world.pods[head]["spec"]["containers"][0]["image"] != "rayguard/node:0.2.0"
    assert world.plan(cluster) == []
    # Deleting it (the user's call) brings the new template.
    del world.pods[head]
    [create] = world.sync(cluster)
    assert create.body["spec"]["containers"][0]["image"] == "rayguard/node:0.2.0"  # type: ignore[index]


def test_rolling_update_replaces_a_running_but_not_ready_head_only_with_fault_tolerance() -> None:
    world, data = World(), body(workers=0)
    world.sync(model(data))
    [head] = world.group_pods("head")
    world.pods[head]["status"] = {"phase": "Running", "conditions": [{"type": "Ready", "status": "False"}]}
    data["spec"]["image"] = "rayguard/node:0.2.0"
    assert world.plan(model(data)) == []  # running: it may hold jobs
    data["spec"]["gcsFaultTolerance"] = FAULT_TOLERANT
    assert [(a.verb, a.name) for a in world.plan(model(data))][0] == ("delete", head)


def test_recreate_replaces_every_outdated_pod_at_once() -> None:
    world, data = World(), body(workers=2)
    data["spec"]["upgradeStrategy"] = {"type": "Recreate"}
    world.sync(model(data))
    world.ready()
    before = set(world.pods)
    data["spec"]["image"] = "rayguard/node:0.2.0"
    cluster = model(data)
    actions = world.sync(cluster)
    assert summary(actions) == [("delete", "Pod")] * 3 + [("create", "Pod")] * 3
    assert {a.name for a in actions if a.verb == "delete"} == before
    assert all("Recreate" in a.note.message for a in actions if a.verb == "delete")
    assert not (set(world.pods) & before) and len(world.pods) == 3
    assert world.plan(cluster) == []


def test_recreate_keeps_the_create_batch_bound() -> None:
    world, data = World(), groups_body(60)
    data["spec"]["upgradeStrategy"] = {"type": "Recreate"}
    world.sync(model(data))
    world.sync(model(data))
    data["spec"]["image"] = "rayguard/node:0.2.0"
    actions = world.sync(model(data))
    assert summary(actions) == [("delete", "Pod")] * 61 + [("create", "Pod")] * BATCH  # type: ignore[operator]
    assert summary(world.sync(model(data))) == [("create", "Pod")] * 11
    assert world.plan(model(data)) == []


def test_none_replaces_no_pod_for_a_template_change_but_makes_missing_and_dead_ones() -> None:
    world, data = World(), body(workers=2)
    data["spec"]["upgradeStrategy"] = {"type": "None"}
    world.sync(model(data))
    world.ready()
    data["spec"]["image"] = "rayguard/node:0.2.0"
    data["spec"]["gcsFaultTolerance"] = FAULT_TOLERANT  # no difference to None
    cluster = model(data)
    assert world.plan(cluster) == []
    gone, failed = world.group_pods("cpu")
    del world.pods[gone]
    world.pods[failed]["status"] = {"phase": "Failed"}
    actions = world.sync(cluster)
    assert summary(actions) == [("delete", "Pod"), ("create", "Pod"), ("create", "Pod")]
    assert all(a.body["spec"]["containers"][0]["image"] == "rayguard/node:0.2.0"  # type: ignore[index]
               for a in actions if a.verb == "create")
    assert world.plan(cluster) == []


@pytest.mark.parametrize("field,value", [("replicas", 5), ("maxReplicas", 7)])
def test_changes_outside_the_pod_template_roll_nothing(field: str, value: int) -> None:
    world, data = World(), body(workers=2)
    world.sync(model(data))
    data["spec"]["workerGroups"][0][field] = value
    assert all(a.verb == "create" for a in world.sync(model(data)))


# --- bounded batches -----------------------------------------------------------------------

BATCH = actions_module.MAX_POD_CREATES_PER_PASS


def groups_body(*replicas: int) -> dict[str, Any]:
    data = body()
    group = data["spec"]["workerGroups"][0]
    data["spec"]["workerGroups"] = [dict(copy.deepcopy(group), name=f"g{i}", replicas=n)
                                    for i, n in enumerate(replicas)]
    return data


def test_a_1000_replica_group_plans_exactly_one_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[str] = []
    real_build_pod = actions_module.build_pod

    def counting_build_pod(*args: Any) -> dict[str, Any]:
        pod = real_build_pod(*args)
        built.append(pod["metadata"]["name"])
        return pod

    monkeypatch.setattr(actions_module, "build_pod", counting_build_pod)
    actions = World().plan(model(groups_body(1000)))
    pods = [a for a in actions if a.kind == "Pod"]
    assert BATCH is not None and len(pods) == BATCH
    assert all(a.verb == "create" and a.body is not None for a in pods)
    assert pods[0].name.startswith("minimal-head-")  # the head first
    assert len(built) == BATCH  # a manifest only for the creates of this batch


def test_successive_passes_converge_batch_by_batch() -> None:
    world, cluster = World(), model(groups_body(120, 0, 30))
    world.names = (f"p{i:04d}" for i in itertools.count())
    created = []
    for _ in range(10):
        actions = world.sync(cluster)
        if not actions:
            break
        creates = [a for a in actions if a.verb == "create" and a.kind == "Pod"]
        assert len(creates) <= BATCH  # type: ignore[operator]
        assert all(a.verb == "create" for a in actions)
        created.append(len(creates))
    assert created == [50, 50, 50, 1]  # 151 pods: the head, then the groups in order
    assert {g: len(world.group_pods(g)) for g in ("g0", "g1", "g2")} == {"g0": 120, "g1": 0, "g2": 30}
    assert world.plan(cluster) == []


def test_the_batch_spans_groups_in_order() -> None:
    actions = World().plan(model(groups_body(10, 60)))
    groups = [a.body["metadata"]["labels"][names.LABEL_GROUP] for a in actions if a.kind == "Pod"]  # type: ignore[index]
    assert groups == ["head"] + ["g0"] * 10 + ["g1"] * 39


def test_a_rollout_waits_while_a_batched_scale_up_is_unfinished() -> None:
    world, data = World(), groups_body(2)
    world.sync(model(data))
    world.ready()
    data["spec"]["image"] = "rayguard/node:0.2.0"
    data["spec"]["workerGroups"][0]["replicas"] = 200
    actions = world.sync(model(data))
    assert summary(actions) == [("create", "Pod")] * BATCH  # type: ignore[operator]  # no replacement yet


def test_no_bound_restores_one_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the bench compares against: every create in the first pass."""
    monkeypatch.setattr(actions_module, "MAX_POD_CREATES_PER_PASS", None)
    world, cluster = World(), model(groups_body(120))
    assert len([a for a in world.sync(cluster) if a.kind == "Pod"]) == 121
    assert world.plan(cluster) == []

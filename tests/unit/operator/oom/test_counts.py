"""oom_status: container OOM kills from pod status, and the RayCluster's status.oom (pure)."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from rayguard_operator.oom.counts import (ANNOTATION_OOM_COUNTED, KEYS_KEPT_PER_POD, ContainerOom, OomCount,
                                          container_ooms, counted_annotation_patch, counted_keys, tally,
                                          uncounted)

T1, T2 = "2024-05-01T10:00:00Z", "2024-05-01T10:05:00Z"


def oom(finished: str = T1, code: int | None = 137, reason: str = "OOMKilled") -> dict[str, Any]:
    body: dict[str, Any] = {"reason": reason, "exitCode": code}
    if finished:
        body["finishedAt"] = finished
    return {"terminated": body}


def container(name: str = "ray-node", state: dict[str, Any] | None = None,
              last: dict[str, Any] | None = None, restarts: int = 0) -> dict[str, Any]:
    status: dict[str, Any] = {"name": name, "restartCount": restarts, "state": state or {"running": {}}}
    if last is not None:
        status["lastState"] = last
    return status


def pod(*containers: dict[str, Any], counted: str | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "demo-worker-cpu-x7k2p", "namespace": "default", "uid": "uid-1"}
    if counted is not None:
        meta["annotations"] = {ANNOTATION_OOM_COUNTED: counted, "other": "x"}
    return {"metadata": meta, "status": {"containerStatuses": list(containers)}}


def kill(key_time: str = T1, name: str = "ray-node", code: int | None = 137, restarts: int = 1) -> ContainerOom:
    return ContainerOom("demo-worker-cpu-x7k2p", "uid-1", name, f"{name}@{key_time}", key_time, code, restarts)


def test_annotation_name() -> None:
    assert ANNOTATION_OOM_COUNTED == "rayguard.dev/oom-counted"
    assert KEYS_KEPT_PER_POD == 20


def test_last_state_oom_after_a_restart() -> None:
    assert container_ooms(pod(container(last=oom(), restarts=1))) == [kill()]


def test_failed_pod_current_state() -> None:
    assert container_ooms(pod(container(state=oom(T2, 137), restarts=0))) == [kill(T2, restarts=0)]


def test_same_termination_in_state_and_last_state_counts_once() -> None:
    assert container_ooms(pod(container(state=oom(), last=oom(), restarts=1))) == [kill()]


def test_two_terminations_of_one_container() -> None:
    found = container_ooms(pod(container(state=oom(T2), last=oom(T1), restarts=1)))
    assert found == [kill(T2), kill(T1)]


@pytest.mark.parametrize("reason", ["Error", "Completed", "ContainerCannotRun", "oomkilled", ""])
def test_other_reasons_ignored(reason: str) -> None:
    assert container_ooms(pod(container(state=oom(T2, 1, reason), last=oom(T1, 1, reason), restarts=1))) == []


def test_running_and_waiting_containers_ignored() -> None:
    waiting = {"waiting": {"reason": "CrashLoopBackOff"}}
    assert container_ooms(pod(container(), container("side", state=waiting))) == []


def test_multiple_containers() -> None:
    found = container_ooms(pod(container(last=oom(T1), restarts=1), container("sidecar", state=oom(T2, None), restarts=1),
                               container("quiet", last=oom(T1, 1, "Error"), restarts=2)))
    assert found == [kill(T1), kill(T2, "sidecar", None)]


def test_missing_finished_at_is_keyed_by_restart_count() -> None:
    [found] = container_ooms(pod(container(last=oom(""), restarts=3)))
    assert found == ContainerOom("demo-worker-cpu-x7k2p", "uid-1", "ray-node", "ray-node@restart-3", "", 137, 3)


def test_no_status_or_uid() -> None:
    assert container_ooms({"metadata": {"name": "p"}}) == []
    assert container_ooms({"metadata": {"name": "p"}, "status": None}) == []
    assert container_ooms({"metadata": {"name": "p"}, "status": {"containerStatuses": None}}) == []
    body = {"metadata": {"name": "p"}, "status": {"containerStatuses": [container(last=oom(), restarts=1)]}}
    assert container_ooms(body) == [ContainerOom("p", "", "ray-node", f"ray-node@{T1}", T1, 137, 1)]


@pytest.mark.parametrize("raw, expected", [
    (None, []),
    ("", []),
    ("[]", []),
    ('["ray-node@a", "ray-node@b"]', ["ray-node@a", "ray-node@b"]),
    ("[1, 2]", ["1", "2"]),
    ("not json", []),
    ("[unclosed", []),
    ('{"a": 1}', []),
    ('"ray-node@a"', []),
    ("null", []),
])
def test_counted_keys(raw: str | None, expected: list[str]) -> None:
    assert counted_keys(pod(counted=raw)) == expected


def test_counted_keys_annotations_null() -> None:
    assert counted_keys({"metadata": {"name": "p", "annotations": None}}) == []


def test_uncounted_filters_keys_already_counted() -> None:
    body = pod(container(state=oom(T2), last=oom(T1), restarts=1), counted=json.dumps([f"ray-node@{T1}"]))
    assert uncounted(body) == [kill(T2)]
    body = pod(container(state=oom(T2), last=oom(T1), restarts=1), counted="garbage")
    assert uncounted(body) == [kill(T2), kill(T1)]


def test_counted_annotation_patch_appends() -> None:
    body = pod(counted=json.dumps(["ray-node@a"]))
    assert counted_annotation_patch(body, [kill(T1), kill(T2)]) == {"metadata": {"annotations": {
        "rayguard.dev/oom-counted": json.dumps(["ray-node@a", f"ray-node@{T1}", f"ray-node@{T2}"])}}}
    assert counted_annotation_patch(pod(), []) == {"metadata": {"annotations": {
        "rayguard.dev/oom-counted": "[]"}}}


def test_counted_annotation_patch_keeps_the_last_20() -> None:
    old = [f"ray-node@{i}" for i in range(19)]
    patch = counted_annotation_patch(pod(counted=json.dumps(old)), [kill(T1), kill(T2)])
    kept = json.loads(patch["metadata"]["annotations"][ANNOTATION_OOM_COUNTED])
    assert len(kept) == 20
    assert kept == old[1:] + [f"ray-node@{T1}", f"ray-node@{T2}"]


def test_tally_from_nothing() -> None:
    counts = [OomCount("monitor_kill", T1, "first", "1714557600000-0"),
              OomCount("container_oom_killed", T2, "second"),
              OomCount("monitor_kill", "2024-05-01T10:01:00Z", "third", "1714557660000-0")]
    assert tally(None, counts) == {
        "total": 3, "byKind": {"monitor_kill": 2, "container_oom_killed": 1},
        "lastTime": T2, "lastMessage": "second", "lastReportId": "1714557660000-0"}


def test_tally_no_counts() -> None:
    assert tally(None, []) == {"total": 0, "byKind": {}}
    assert tally({}, iter(())) == {"total": 0, "byKind": {}}


def test_tally_adds_to_current_without_mutating_it() -> None:
    current = {"total": 4, "byKind": {"kernel_oom_kill": 4}, "lastTime": T1, "lastMessage": "old",
               "lastReportId": "5-0"}
    before = copy.deepcopy(current)
    result = tally(current, [OomCount("kernel_oom_kill", T2, "new")])
    assert current == before
    assert result == {"total": 5, "byKind": {"kernel_oom_kill": 5}, "lastTime": T2, "lastMessage": "new",
                      "lastReportId": "5-0"}


def test_tally_last_time_only_moves_forward() -> None:
    current = {"total": 1, "byKind": {"monitor_kill": 1}, "lastTime": T2, "lastMessage": "newest"}
    result = tally(current, [OomCount("container_oom_killed", T1, "older")])
    assert result == {"total": 2, "byKind": {"monitor_kill": 1, "container_oom_killed": 1},
                      "lastTime": T2, "lastMessage": "newest"}


def test_tally_equal_time_takes_the_later_message() -> None:
    result = tally({"lastTime": T1, "lastMessage": "a", "total": 1, "byKind": {"x": 1}},
                   [OomCount("x", T1, "b")])
    assert (result["lastTime"], result["lastMessage"], result["total"]) == (T1, "b", 2)


def test_tally_fractional_seconds_later_in_the_same_second() -> None:
    current = {"total": 1, "byKind": {"container_oom_killed": 1}, "lastTime": "2024-05-01T10:00:05Z",
               "lastMessage": "container"}
    result = tally(current, [OomCount("monitor_kill", "2024-05-01T10:00:05.500Z", "report", "9-0")])
    assert (result["lastTime"], result["lastMessage"]) == ("2024-05-01T10:00:05.500Z", "report")

"""The report: DESIGN's exact JSON shape, parsing back, top-10 ordering and the message."""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone

import pytest

from rayguard_node.contract import rfc3339

from rayguard_node.errors import MalformedReport

from rayguard_node.contract.reports import (KERNEL_OOM_KILL, KINDS, GUARD_KILL, QUOTA_EXCEEDED,
                                   RAY_MONITOR_KILL, Identity, NodeUsage, Report, TopEntry, Victim,
                                   new_report)

MiB, GiB = 1024**2, 1024**3
IDENTITY = Identity("demo", "default", "demo-worker-cpu-x7k2p", "cpu", "worker")
VICTIM = Victim(4242, "ray::allocate_memory", 1 * GiB, 256 * MiB)
NODE = NodeUsage(3 * GiB + 512 * MiB, 4 * GiB, 0.875, 0.95)
RFC3339_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


def report(kind=GUARD_KILL, top=(), victim=VICTIM, identity=IDENTITY, node=NODE):
    return new_report(kind, identity, victim, node, top, clock=lambda: "2024-05-01T12:00:00.000Z")


def test_kinds_are_designs():
    assert KINDS == ("monitor_kill", "kernel_oom_kill", "ray_monitor_kill", "quota_exceeded")


def test_to_dict_has_exactly_designs_keys():
    data = report(top=[TopEntry(4242, "ray::allocate_memory", 768 * MiB)]).to_dict()
    assert list(data) == ["id", "time", "kind", "cluster", "namespace", "pod", "group", "role",
                          "victim", "node", "top", "message"]
    assert data["victim"] == {"pid": 4242, "name": "ray::allocate_memory",
                              "rss_bytes": 1 * GiB, "shared_bytes": 256 * MiB}
    assert data["node"] == {"used_bytes": 3 * GiB + 512 * MiB, "limit_bytes": 4 * GiB,
                            "fraction": 0.875, "threshold": 0.95}
    assert data["top"] == [{"pid": 4242, "name": "ray::allocate_memory",
                            "rss_minus_shr_bytes": 768 * MiB}]
    assert (data["kind"], data["cluster"], data["namespace"], data["pod"], data["group"],
            data["role"]) == ("monitor_kill", "demo", "default", "demo-worker-cpu-x7k2p", "cpu", "worker")
    assert data["time"] == "2024-05-01T12:00:00.000Z"


def test_id_is_a_fresh_uuid4():
    a, b = report(), report()
    assert a.id != b.id
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", a.id)


def test_to_json_is_one_line_of_the_same_dict():
    r = report(top=[TopEntry(1, "ray::f\nwith newline", 5)])
    text = r.to_json()
    assert "\n" not in text
    assert json.loads(text) == r.to_dict()


def test_fraction_is_rounded_in_json():
    r = report(node=NodeUsage(1, 3, 1 / 3, 0.95))
    assert r.to_dict()["node"]["fraction"] == 0.333333


@pytest.mark.parametrize("kind", KINDS)
def test_round_trip(kind):
    top = [TopEntry(1, "ray::a", 300), TopEntry(2, "raylet", 200)]
    original = report(kind, top)
    assert Report.from_dict(original.to_dict()) == original
    assert Report.from_dict(json.loads(original.to_json())) == original


def test_round_trip_of_an_unknown_victim():
    original = report(KERNEL_OOM_KILL, victim=Victim(None, "unknown (vanished before rayguard saw it)"))
    data = original.to_dict()
    assert data["victim"] == {"pid": None, "name": "unknown (vanished before rayguard saw it)",
                              "rss_bytes": 0, "shared_bytes": 0}
    assert Report.from_dict(data) == original


def test_from_dict_tolerates_missing_optional_fields():
    data = report().to_dict()
    for key in ("cluster", "namespace", "pod", "group", "role", "top", "message"):
        del data[key]
    parsed = Report.from_dict(data)
    assert parsed.identity == Identity()
    assert parsed.top == () and parsed.message == ""


def test_from_dict_rejects_an_unknown_kind():
    data = report().to_dict()
    data["kind"] = "oops"
    with pytest.raises(MalformedReport, match="unknown report kind 'oops'"):
        Report.from_dict(data)


@pytest.mark.parametrize("mutate", [
    lambda d: d.pop("victim"),
    lambda d: d.pop("node"),
    lambda d: d.pop("kind"),
    lambda d: d.pop("id"),
    lambda d: d["victim"].pop("name"),
    lambda d: d["node"].pop("limit_bytes"),
    lambda d: d.__setitem__("victim", None),
    lambda d: d.__setitem__("top", [{"pid": 1}]),
])
def test_from_dict_errors_are_value_errors(mutate):
    data = report(top=[TopEntry(1, "a", 1)]).to_dict()
    mutate(data)
    with pytest.raises(MalformedReport, match="malformed report"):
        Report.from_dict(data)


def test_top_keeps_ten_largest_first():
    entries = [TopEntry(pid, f"ray::t{pid}", pid * MiB) for pid in (5, 12, 1, 9, 3, 11, 7, 2, 8, 4,
                                                                    10, 6)]
    r = report(top=entries)
    assert [t.pid for t in r.top] == [12, 11, 10, 9, 8, 7, 6, 5, 4, 3]
    assert len(r.to_dict()["top"]) == 10


def test_top_with_few_entries_is_kept_whole():
    r = report(top=iter([TopEntry(1, "a", 10), TopEntry(2, "b", 30)]))
    assert [t.pid for t in r.top] == [2, 1]


def test_message_for_a_guard_kill():
    assert report().message == (
        "rayguard's memory guard killed ray::allocate_memory (pid 4242, 768 MiB used) in pod"
        " demo-worker-cpu-x7k2p (group cpu). Node memory 3.50 GiB of 4.00 GiB (87.5%), threshold"
        " 95.0%. Advice: set memory= on the task so Ray reserves what it needs and runs fewer at"
        " once, or raise the memory limit of group cpu."
    )


@pytest.mark.parametrize("kind, who, advice", [
    (KERNEL_OOM_KILL, "The kernel OOM killer killed", "the kernel acted before any monitor could"),
    (RAY_MONITOR_KILL, "Ray's memory monitor killed", "set memory= on the task"),
    (QUOTA_EXCEEDED, "rayguard killed", "raise the actor's memory= quota"),
    (GUARD_KILL, "rayguard's memory guard killed", "set memory= on the task"),
])
def test_message_wording_per_kind(kind, who, advice):
    message = report(kind).message
    assert message.startswith(who + " ray::allocate_memory (pid 4242, 768 MiB used)")
    assert advice in message
    for part in ("demo-worker-cpu-x7k2p", "group cpu", "3.50 GiB", "4.00 GiB", "87.5%", "95.0%"):
        assert part in message


def test_message_without_pid_pod_or_group():
    r = report(KERNEL_OOM_KILL, victim=Victim(None, "unknown (vanished before rayguard saw it)"),
               identity=Identity(role="head"), node=NodeUsage(900 * MiB, 1 * GiB, 0.879, 0.9))
    assert r.message == (
        "The kernel OOM killer killed unknown (vanished before rayguard saw it) in pod ?."
        " Node memory 900 MiB of 1.00 GiB (87.9%), threshold 90.0%. Advice: the head runs no"
        " tasks (num-cpus=0), so look at what else runs there: a driver started on the head, or"
        " the GCS and dashboard; raise the head's memory limit if they need more."
    )


def test_message_is_the_event_text_and_names_the_largest_users():
    """One composer: what the runtime prints is what the operator posts."""
    from rayguard_operator.oom.messages import report_message

    r = report(top=[TopEntry(1, "ray::a", 2 * GiB), TopEntry(2, "python3 -u /app/driver.py", MiB)])
    assert "Largest users: ray::a 2.00 GiB, driver.py 1 MiB." in r.message
    assert report_message(r) == r.message


def test_time_is_rfc3339_utc_with_z():
    stamp = rfc3339.now_millis()
    assert RFC3339_Z.match(stamp), stamp
    parsed = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    assert parsed.tzinfo == timezone.utc
    assert abs((datetime.now(timezone.utc) - parsed).total_seconds()) < 60
    default = new_report(GUARD_KILL, IDENTITY, VICTIM, NODE)
    assert RFC3339_Z.match(default.time), default.time

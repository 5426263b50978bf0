"""oom/messages: Event reasons, messages and advice for OOM kills (pure)."""

from __future__ import annotations

import dataclasses

import pytest

from rayguard_node.contract.reports import (GUARD_KILL, KERNEL_OOM_KILL, QUOTA_EXCEEDED, RAY_MONITOR_KILL,
                                            Identity, NodeUsage, Report, TopEntry, Victim, short_name)
from rayguard_node.contract.reports import advice as advice_for
from rayguard_operator.oom.messages import (REASON_BY_KIND, AggregationKey, container_message, report_key,
                                            report_message)

MiB, GiB = 1 << 20, 1 << 30
POD = "demo-worker-cpu-x7k2p"

HEAD_ADVICE = ("Advice: the head runs no tasks (num-cpus=0), so look at what else runs there:"
               " a driver started on the head, or the GCS and dashboard; raise the head's"
               " memory limit if they need more.")
QUOTA_ADVICE = "Advice: raise the actor's memory= quota, or make it use less."


def make_report(kind: str = GUARD_KILL, role: str = "worker", group: str = "cpu", pod: str = POD,
                victim: Victim | None = None, top: tuple[TopEntry, ...] = ()) -> Report:
    return Report(
        id="r-1", time="2024-05-01T10:00:00.000Z", kind=kind,
        identity=Identity("demo", "default", pod, group, role),
        victim=victim or Victim(4242, "ray::allocate_memory", 3 * GiB, 512 * MiB),
        node=NodeUsage(7 * GiB, 8 * GiB, 0.962, 0.95), top=top)


def advice(report: Report) -> str:
    return advice_for(report.kind, report.identity)


def test_reason_by_kind_is_exact() -> None:
    assert REASON_BY_KIND == {
        "monitor_kill": "MemoryMonitorKill",
        "kernel_oom_kill": "KernelOOMKill",
        "ray_monitor_kill": "RayMemoryMonitorKill",
        "quota_exceeded": "MemoryQuotaExceeded",
    }


@pytest.mark.parametrize("name, expected", [
    ("ray::allocate_memory", "ray::allocate_memory"),
    ("ray::" + "x" * 60, "ray::" + "x" * 35),
    ("/usr/bin/python3 /opt/venv/bin/ray start --block --head", "ray start"),
    ("python3 -u /app/driver.py --size 3", "driver.py"),
    ("/usr/bin/python3.11 /opt/venv/bin/ray", "ray"),
    ("python3", "python3"),
    ("python3 -u", "python3"),
    ("/opt/venv/lib/ray/core/src/ray/raylet/raylet --node_ip_address=1.2.3.4", "raylet"),
    ("/usr/bin/" + "g" * 50 + " --x", "g" * 40),
    ("", ""),
    ("   ", "   "),
])
def test_short_name(name: str, expected: str) -> None:
    assert short_name(name) == expected


def test_short_name_custom_limit() -> None:
    assert short_name("ray::allocate_memory", limit=8) == "ray::all"
    assert short_name("python3 /x/ray start", limit=5) == "ray s"


@pytest.mark.parametrize("kind", [GUARD_KILL, KERNEL_OOM_KILL, RAY_MONITOR_KILL, QUOTA_EXCEEDED])
def test_advice_on_the_head_points_at_num_cpus_zero(kind: str) -> None:
    assert advice(make_report(kind=kind, role="head", group="head")) == HEAD_ADVICE


@pytest.mark.parametrize("group", ["cpu", ""])
def test_advice_quota(group: str) -> None:
    assert advice(make_report(kind=QUOTA_EXCEEDED, group=group)) == QUOTA_ADVICE


@pytest.mark.parametrize("kind", [GUARD_KILL, RAY_MONITOR_KILL])
def test_advice_monitor_kinds_name_the_group(kind: str) -> None:
    assert advice(make_report(kind=kind, group="highmem")) == (
        "Advice: set memory= on the task so Ray reserves what it needs and runs fewer at"
        " once, or raise the memory limit of group highmem.")
    assert advice(make_report(kind=kind, group="")) == (
        "Advice: set memory= on the task so Ray reserves what it needs and runs fewer at"
        " once, or raise the group's memory limit.")


def test_advice_kernel_mentions_the_kernel_and_the_group() -> None:
    text = advice(make_report(kind=KERNEL_OOM_KILL, group="cpu"))
    assert text.startswith("Advice: the kernel acted before any monitor could; raise the memory limit of group cpu")
    assert text.endswith(", or set memory= on the task so Ray runs fewer of them at once.")


@pytest.mark.parametrize("group, phrase", [("cpu", "memory limit of group cpu"), ("", "group's memory limit")])
def test_advice_kernel_exact(group: str, phrase: str) -> None:
    assert advice(make_report(kind=KERNEL_OOM_KILL, group=group)) == (
        f"Advice: the kernel acted before any monitor could; raise the {phrase},"
        " or set memory= on the task so Ray runs fewer of them at once.")


def test_report_message_full() -> None:
    top = (TopEntry(4242, "ray::allocate_memory", int(2.5 * GiB)),
           TopEntry(11, "/usr/bin/python3 /opt/venv/bin/ray start --block", GiB),
           TopEntry(12, "python3 -u /app/driver.py", 300 * MiB),
           TopEntry(13, "/usr/local/bin/raylet --x", 100 * MiB))
    assert report_message(make_report(top=top)) == (
        "rayguard's memory guard killed ray::allocate_memory (pid 4242, 2.50 GiB used)"
        " in pod demo-worker-cpu-x7k2p (group cpu)."
        " Node memory 7.00 GiB of 8.00 GiB (96.2%), threshold 95.0%."
        " Largest users: ray::allocate_memory 2.50 GiB, ray start 1.00 GiB, driver.py 300 MiB."
        " Advice: set memory= on the task so Ray reserves what it needs and runs fewer at"
        " once, or raise the memory limit of group cpu.")


def test_report_message_minimal() -> None:
    report = make_report(kind=QUOTA_EXCEEDED, group="", pod="", victim=Victim(None, "ray::Cache.put"))
    assert report_message(report) == (
        "rayguard killed ray::Cache.put in pod ?."
        " Node memory 7.00 GiB of 8.00 GiB (96.2%), threshold 95.0%. " + QUOTA_ADVICE)


def test_report_message_pid_without_memory_and_shared_above_rss() -> None:
    text = report_message(make_report(kind=RAY_MONITOR_KILL, victim=Victim(7, "ray::f")))
    assert text.startswith("Ray's memory monitor killed ray::f (pid 7) in pod demo-worker-cpu-x7k2p (group cpu).")
    text = report_message(make_report(victim=Victim(8, "ray::g", 100 * MiB, 200 * MiB)))
    assert "ray::g (pid 8, 0 B used)" in text


@pytest.mark.parametrize("kind, who", [
    (GUARD_KILL, "rayguard's memory guard killed "),
    (KERNEL_OOM_KILL, "The kernel OOM killer killed "),
    (RAY_MONITOR_KILL, "Ray's memory monitor killed "),
    (QUOTA_EXCEEDED, "rayguard killed "),
])
def test_report_message_names_who_killed_and_ends_with_advice(kind: str, who: str) -> None:
    report = make_report(kind=kind, role="head", group="head", pod="demo-head-abcde")
    text = report_message(report)
    assert text.startswith(who + "ray::allocate_memory (pid 4242, 2.50 GiB used) in pod demo-head-abcde (group head).")
    assert text.endswith(" " + HEAD_ADVICE)
    assert "Largest users" not in text


def test_container_message_worker() -> None:
    assert container_message(POD, "cpu", "ray-node", 3 * GiB, 137, "worker") == (
        "Kubernetes OOMKilled container ray-node in pod demo-worker-cpu-x7k2p (group cpu) at its"
        " 3.00 GiB limit (exit code 137); every task on this node was lost. Advice: the whole"
        " container was killed, Ray with it: raise the group's memory limit or lower its"
        " objectStoreFraction, and set memory= on memory-heavy tasks.")


def test_container_message_head_without_limit_or_exit_code() -> None:
    assert container_message("demo-head-abcde", "", "ray-node", None, None, "head") == (
        "Kubernetes OOMKilled container ray-node in pod demo-head-abcde; every task on this node"
        " was lost. Advice: the whole head container was killed: raise the head's memory limit,"
        " and keep drivers off the head.")
    assert "(exit code 0)" in container_message("p", "", "c", 0, 0, "worker")
    assert " at its " not in container_message("p", "", "c", 0, 0, "worker")


KEY = AggregationKey("demo", POD, "MemoryMonitorKill", "ray::allocate_memory")


def test_digest_is_stable() -> None:
    digest = KEY.digest()
    assert digest == "27de1d33d25d"
    assert digest == AggregationKey("demo", POD, "MemoryMonitorKill", "ray::allocate_memory").digest()


@pytest.mark.parametrize("field", ["cluster", "pod", "reason", "victim"])
def test_digest_differs_by_each_field(field: str) -> None:
    other = dataclasses.replace(KEY, **{field: getattr(KEY, field) + "x"})
    assert other.digest() != KEY.digest()
    assert len(other.digest()) == 12


def test_digest_separates_fields() -> None:
    assert AggregationKey("ab", "c", "r", "v").digest() != AggregationKey("a", "bc", "r", "v").digest()


@pytest.mark.parametrize("kind", [GUARD_KILL, KERNEL_OOM_KILL, RAY_MONITOR_KILL, QUOTA_EXCEEDED])
def test_report_key(kind: str) -> None:
    assert report_key(make_report(kind=kind)) == AggregationKey(
        "demo", POD, REASON_BY_KIND[kind], "ray::allocate_memory")

"""What an OOM kill looks like as a Kubernetes Event: reason, message and advice.

Pure functions over a runtime report (`rayguard_node.contract.reports.Report`) or a container
that Kubernetes OOMKilled. The operator and `rayguard local up` both print these, so a
user sees the same words locally and in `kubectl describe`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from rayguard_node.sizing.quantity import format_bytes
from rayguard_node.contract.reports import (KERNEL_OOM_KILL, GUARD_KILL, QUOTA_EXCEEDED, RAY_MONITOR_KILL,
                                   Report)

from rayguard_operator.manifests import events

REASON_BY_KIND = {
    GUARD_KILL: events.MEMORY_MONITOR_KILL,
    KERNEL_OOM_KILL: events.KERNEL_OOM_KILL,
    RAY_MONITOR_KILL: events.RAY_MEMORY_MONITOR_KILL,
    QUOTA_EXCEEDED: events.MEMORY_QUOTA_EXCEEDED,
}
CONTAINER_OOM_KIND = "container_oom_killed"  # status.oom.byKind key for Kubernetes' own kills
TOP_SHOWN = 3
AGGREGATION_WINDOW_S = 600

_WHO = {
    GUARD_KILL: "rayguard's memory guard killed",
    KERNEL_OOM_KILL: "The kernel OOM killer killed",
    RAY_MONITOR_KILL: "Ray's memory monitor killed",
    QUOTA_EXCEEDED: "rayguard killed",
}


def short_name(name: str, limit: int = 40) -> str:
    """`ray::task` as is; a command line as its program (`python3 /x/ray start` -> `ray start`)."""
    if name.startswith("ray::"):
        return name[:limit]
    words = name.split()
    if not words:
        return name
    program = words[0].rsplit("/", 1)[-1]
    if program.startswith("python") and len(words) > 1:
        rest = [w for w in words[1:] if not w.startswith("-")]
        program = rest[0].rsplit("/", 1)[-1] if rest else program
        if program == "ray" and len(rest) > 1:
            program = f"ray {rest[1]}"
    return program[:limit]


def advice(report: Report) -> str:
    """One line that fits the case."""
    if report.identity.role == "head":
        return ("Advice: the head runs no tasks (num-cpus=0), so look at what else runs there:"
                " a driver started on the head, or the GCS and dashboard; raise the head's"
                " memory limit if they need more.")
    if report.kind == QUOTA_EXCEEDED:
        return "Advice: raise the actor's memory= quota, or make it use less."
    group = f"memory limit of group {report.identity.group}" if report.identity.group else "group's memory limit"
    if report.kind == KERNEL_OOM_KILL:
        return (f"Advice: the kernel acted before any monitor could; raise the {group},"
                " or set memory= on the task so Ray runs fewer of them at once.")
    return (f"Advice: set memory= on the task so Ray reserves what it needs and runs fewer at"
            f" once, or raise the {group}.")


def report_message(report: Report) -> str:
    """The Event message: pod, group, victim, node usage, the largest users, advice."""
    victim = report.victim
    details = [f"pid {victim.pid}"] if victim.pid is not None else []
    if victim.rss_bytes:
        details.append(f"{format_bytes(max(0, victim.rss_bytes - victim.shared_bytes))} used")
    who = f"{victim.name} ({', '.join(details)})" if details else victim.name
    where = f"pod {report.identity.pod or '?'}"
    if report.identity.group:
        where += f" (group {report.identity.group})"
    node = report.node
    top = ", ".join(f"{short_name(t.name)} {format_bytes(t.rss_minus_shr_bytes)}"
                    for t in report.top[:TOP_SHOWN])
    lines = [
        f"{_WHO[report.kind]} {who} in {where}.",
        f"Node memory {format_bytes(node.used_bytes)} of {format_bytes(node.limit_bytes)}"
        f" ({node.fraction:.1%}), threshold {node.threshold:.1%}.",
    ]
    if top:
        lines.append(f"Largest users: {top}.")
    lines.append(advice(report))
    return " ".join(lines)


def container_message(pod: str, group: str, container: str, limit_bytes: int | None,
                      exit_code: int | None, role: str) -> str:
    where = f"pod {pod}" + (f" (group {group})" if group else "")
    limit = f" at its {format_bytes(limit_bytes)} limit" if limit_bytes else ""
    code = f" (exit code {exit_code})" if exit_code is not None else ""
    tail = ("Advice: the whole head container was killed: raise the head's memory limit, and"
            " keep drivers off the head." if role == "head" else
            "Advice: the whole container was killed, Ray with it: raise the group's memory"
            " limit or lower its objectStoreFraction, and set memory= on memory-heavy tasks.")
    return (f"Kubernetes OOMKilled container {container} in {where}{limit}{code}; every task on"
            f" this node was lost. {tail}")


@dataclass(frozen=True)
class AggregationKey:
    """Repeats of one kill (same cluster, pod, reason and victim) share one Event."""

    cluster: str
    pod: str
    reason: str
    victim: str

    def digest(self) -> str:
        text = "\0".join((self.cluster, self.pod, self.reason, self.victim))
        return hashlib.sha256(text.encode()).hexdigest()[:12]


def report_key(report: Report) -> AggregationKey:
    return AggregationKey(report.identity.cluster, report.identity.pod,
                          REASON_BY_KIND[report.kind], report.victim.name)

"""What an OOM kill looks like as a Kubernetes Event: reason, message and advice.

Pure functions over a runtime report (`rayguard_node.contract.reports.Report`) or a container
that Kubernetes OOMKilled. The operator and `rayguard local up` both print these, so a
user sees the same words locally and in `kubectl describe`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from rayguard_node.sizing.quantity import format_bytes
from rayguard_node.contract.reports import (GUARD_KILL, KERNEL_OOM_KILL, QUOTA_EXCEEDED, RAY_MONITOR_KILL,
                                            Report, compose_message)

from rayguard_operator.manifests import events

REASON_BY_KIND = {
    GUARD_KILL: events.MEMORY_MONITOR_KILL,
    KERNEL_OOM_KILL: events.KERNEL_OOM_KILL,
    RAY_MONITOR_KILL: events.RAY_MEMORY_MONITOR_KILL,
    QUOTA_EXCEEDED: events.MEMORY_QUOTA_EXCEEDED,
}
CONTAINER_OOM_KIND = "container_oom_killed"  # status.oom.byKind key for Kubernetes' own kills
AGGREGATION_WINDOW_S = 600


def report_message(report: Report) -> str:
    """The Event message: the report's own text, composed again from its fields (the one
    composer is rayguard_node.contract.reports.compose_message)."""
    return compose_message(report.kind, report.identity, report.victim, report.node, report.top,
                           report.quota, report.profile)


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

"""The report: one JSON object per OOM kill, the contract between runtime and operator.

Its shape is in docs/architecture.md ("The contract between pod and runtime"). The operator
parses it back with `Report.from_dict`, so both sides share one definition.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from rayguard_node.contract.rfc3339 import now_millis
from rayguard_node.sizing.quantity import format_bytes
from rayguard_node.errors import MalformedReport

GUARD_KILL = "monitor_kill"
KERNEL_OOM_KILL = "kernel_oom_kill"
RAY_MONITOR_KILL = "ray_monitor_kill"
QUOTA_EXCEEDED = "quota_exceeded"
KINDS = (GUARD_KILL, KERNEL_OOM_KILL, RAY_MONITOR_KILL, QUOTA_EXCEEDED)

STREAM_KEY = "rayguard:reports"
STREAM_MAXLEN = 10_000
TOP_MAX_ENTRIES = 10


@dataclass(frozen=True)
class Identity:
    cluster: str = ""
    namespace: str = ""
    pod: str = ""
    group: str = ""
    role: str = ""


@dataclass(frozen=True)
class Victim:
    pid: int | None
    name: str
    rss_bytes: int = 0
    shared_bytes: int = 0


@dataclass(frozen=True)
class NodeUsage:
    used_bytes: int
    limit_bytes: int
    fraction: float
    threshold: float


@dataclass(frozen=True)
class TopEntry:
    pid: int
    name: str
    rss_minus_shr_bytes: int


KILL, WARN, OFF = "Kill", "Warn", "Off"  # quota enforcement modes
ENFORCEMENTS = (KILL, WARN, OFF)


@dataclass(frozen=True)
class QuotaBreach:
    """An actor over its `memory=` quota: who it is and by how much (quota_exceeded only)."""

    actor_class: str
    actor_name: str
    actor_id: str
    quota_bytes: int
    used_bytes: int
    tolerance: float
    over_seconds: float
    enforcement: str  # Kill: it was killed; Warn: reported only

    def to_dict(self) -> dict[str, Any]:
        return {"actor_class": self.actor_class, "actor_name": self.actor_name,
                "actor_id": self.actor_id, "quota_bytes": self.quota_bytes,
                "used_bytes": self.used_bytes, "tolerance": self.tolerance,
                "over_seconds": round(self.over_seconds, 3), "enforcement": self.enforcement}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "QuotaBreach":
        enforcement = str(data["enforcement"])
        if enforcement not in (KILL, WARN):
            raise MalformedReport(f"quota.enforcement must be {KILL} or {WARN}, not {enforcement!r}")
        return cls(str(data["actor_class"]), str(data.get("actor_name") or ""),
                   str(data.get("actor_id") or ""), int(data["quota_bytes"]), int(data["used_bytes"]),
                   float(data["tolerance"]), float(data.get("over_seconds") or 0), enforcement)


@dataclass(frozen=True)
class Report:
    id: str
    time: str
    kind: str
    identity: Identity
    victim: Victim
    node: NodeUsage
    top: tuple[TopEntry, ...] = field(default=())
    message: str = ""
    quota: QuotaBreach | None = None
    # The victim's memray file, as the pod sees it, when its group profiles it.
    profile: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "time": self.time,
            "kind": self.kind,
            "cluster": self.identity.cluster,
            "namespace": self.identity.namespace,
            "pod": self.identity.pod,
            "group": self.identity.group,
            "role": self.identity.role,
            "victim": {"pid": self.victim.pid, "name": self.victim.name,
                       "rss_bytes": self.victim.rss_bytes, "shared_bytes": self.victim.shared_bytes},
            "node": {"used_bytes": self.node.used_bytes, "limit_bytes": self.node.limit_bytes,
                     "fraction": round(self.node.fraction, 6), "threshold": self.node.threshold},
            "top": [{"pid": t.pid, "name": t.name, "rss_minus_shr_bytes": t.rss_minus_shr_bytes}
                    for t in self.top],
            "message": self.message,
            **({"quota": self.quota.to_dict()} if self.quota is not None else {}),
            **({"profile": self.profile} if self.profile else {}),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Report":
        """Parse a report; raises MalformedReport naming what is wrong."""
        try:
            kind = data["kind"]
            if kind not in KINDS:
                raise MalformedReport(f"unknown report kind {kind!r}")
            victim, node = data["victim"], data["node"]
            return cls(
                id=str(data["id"]), time=str(data["time"]), kind=kind,
                identity=Identity(*(str(data.get(k) or "") for k in
                                    ("cluster", "namespace", "pod", "group", "role"))),
                victim=Victim(victim.get("pid"), str(victim["name"]),
                              int(victim.get("rss_bytes") or 0), int(victim.get("shared_bytes") or 0)),
                node=NodeUsage(int(node["used_bytes"]), int(node["limit_bytes"]),
                               float(node["fraction"]), float(node["threshold"])),
                top=tuple(TopEntry(int(t["pid"]), str(t["name"]), int(t["rss_minus_shr_bytes"]))
                          for t in data.get("top") or ()),
                message=str(data.get("message") or ""),
                quota=QuotaBreach.from_dict(data["quota"]) if data.get("quota") else None,
                profile=str(data["profile"]) if data.get("profile") else None,
            )
        except (KeyError, TypeError, AttributeError, ValueError) as error:
            raise MalformedReport(f"malformed report: missing or wrong field {error}") from None




# The OOM vocabulary: who killed, in words. stdout (Report.message) and the Kubernetes Event
# (rayguard_operator.oom.messages) are both composed by `compose_message` below.
WHO = {
    GUARD_KILL: "rayguard's memory guard killed",
    KERNEL_OOM_KILL: "The kernel OOM killer killed",
    RAY_MONITOR_KILL: "Ray's memory monitor killed",
    QUOTA_EXCEEDED: "rayguard killed",
}
TOP_SHOWN = 3


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


def advice(kind: str, identity: Identity) -> str:
    """One line that fits the case."""
    if identity.role == "head":
        return ("Advice: the head runs no tasks (num-cpus=0), so look at what else runs there:"
                " a driver started on the head, or the GCS and dashboard; raise the head's"
                " memory limit if they need more.")
    if kind == QUOTA_EXCEEDED:
        return "Advice: raise the actor's memory= quota, or make it use less."
    group = f"memory limit of group {identity.group}" if identity.group else "group's memory limit"
    if kind == KERNEL_OOM_KILL:
        return (f"Advice: the kernel acted before any monitor could; raise the {group},"
                " or set memory= on the task so Ray runs fewer of them at once.")
    return (f"Advice: set memory= on the task so Ray reserves what it needs and runs fewer at"
            f" once, or raise the {group}.")


def quota_sentence(victim: Victim, breach: QuotaBreach, where: str) -> str:
    actor = breach.actor_class + (f" '{breach.actor_name}'" if breach.actor_name else "")
    used = (f"{format_bytes(breach.used_bytes)} used, over its memory= quota of"
            f" {format_bytes(breach.quota_bytes)} x {breach.tolerance:g} for {breach.over_seconds:.0f} s")
    if breach.enforcement == KILL:
        return f"rayguard killed actor {actor} (pid {victim.pid}) in {where}: {used}."
    return (f"Actor {actor} (pid {victim.pid}) in {where} is over its quota: {used}; not killed"
            " (enforcement Warn).")


def compose_message(kind: str, identity: Identity, victim: Victim, node: NodeUsage,
                    top: Iterable[TopEntry] = (), quota: QuotaBreach | None = None,
                    profile: str | None = None) -> str:
    """The one text of an OOM kill: who killed what where, node usage, the largest users,
    advice. Printed by the runtime and posted by the operator as the Event's message."""
    details = [f"pid {victim.pid}"] if victim.pid is not None else []
    if victim.rss_bytes:
        details.append(f"{format_bytes(max(0, victim.rss_bytes - victim.shared_bytes))} used")
    who = f"{victim.name} ({', '.join(details)})" if details else victim.name
    where = f"pod {identity.pod or '?'}"
    if identity.group:
        where += f" (group {identity.group})"
    users = ", ".join(f"{short_name(t.name)} {format_bytes(t.rss_minus_shr_bytes)}"
                      for t in list(top)[:TOP_SHOWN])
    first = (quota_sentence(victim, quota, where) if kind == QUOTA_EXCEEDED and quota is not None
             else f"{WHO[kind]} {who} in {where}.")
    lines = [
        first,
        f"Node memory {format_bytes(node.used_bytes)} of {format_bytes(node.limit_bytes)}"
        f" ({node.fraction:.1%}), threshold {node.threshold:.1%}.",
    ]
    if users:
        lines.append(f"Largest users: {users}.")
    if profile:
        lines.append(f"memray profile: {profile} (rayguard profile fetch).")
    lines.append(advice(kind, identity))
    return " ".join(lines)


def new_report(
    kind: str,
    identity: Identity,
    victim: Victim,
    node: NodeUsage,
    top: Iterable[TopEntry] = (),
    clock: Callable[[], str] = now_millis,
    quota: QuotaBreach | None = None,
    profile: str | None = None,
) -> Report:
    ordered = tuple(sorted(top, key=lambda t: -t.rss_minus_shr_bytes)[:TOP_MAX_ENTRIES])
    return Report(str(uuid.uuid4()), clock(), kind, identity, victim, node, ordered,
                  compose_message(kind, identity, victim, node, ordered, quota, profile), quota, profile)


def with_profile(report: Report, profile: str) -> Report:
    """The same report naming the victim's memray file, its message composed again."""
    return dataclasses.replace(report, profile=profile, message=compose_message(
        report.kind, report.identity, report.victim, report.node, report.top, report.quota, profile))

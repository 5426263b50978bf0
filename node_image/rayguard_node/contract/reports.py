"""The report: one JSON object per OOM kill, the contract between runtime and operator.

Its shape is fixed by DESIGN (Report). The operator parses it back with `Report.from_dict`
so both sides share one definition.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Iterable

from rayguard_node.sizing.quantity import format_bytes

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
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Report":
        """Parse a report; raises ValueError naming what is wrong."""
        try:
            kind = data["kind"]
            if kind not in KINDS:
                raise ValueError(f"unknown report kind {kind!r}")
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
            )
        except (KeyError, TypeError, AttributeError) as error:
            raise ValueError(f"malformed report: missing or wrong field {error}") from None


def now_rfc3339() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


_WHO = {
    GUARD_KILL: "rayguard's memory guard killed",
    KERNEL_OOM_KILL: "The kernel OOM killer killed",
    RAY_MONITOR_KILL: "Ray's memory monitor killed",
    QUOTA_EXCEEDED: "rayguard killed",
}


def compose_message(kind: str, identity: Identity, victim: Victim, node: NodeUsage) -> str:
    """One human paragraph, in the spirit of Ray's OutOfMemoryError text."""
    where = f" in pod {identity.pod}" if identity.pod else ""
    if identity.group:
        where += f" (group {identity.group})"
    details = [f"pid {victim.pid}"] if victim.pid is not None else []
    if victim.rss_bytes:
        details.append(f"{format_bytes(max(0, victim.rss_bytes - victim.shared_bytes))} used")
    shown = f"{victim.name} ({', '.join(details)})" if details else victim.name
    reason = {
        QUOTA_EXCEEDED: "because it used more than its memory= quota",
        KERNEL_OOM_KILL: "because the container reached its memory limit",
    }.get(kind, "because it was the most recently scheduled task when the node ran low on memory")
    return (
        f"{_WHO[kind]} {shown}{where} {reason}. "
        f"Memory on the node was {format_bytes(node.used_bytes)} / {format_bytes(node.limit_bytes)}"
        f" ({node.fraction:.3f}), against a threshold of {node.threshold:g}."
    )


def new_report(
    kind: str,
    identity: Identity,
    victim: Victim,
    node: NodeUsage,
    top: Iterable[TopEntry] = (),
    clock: Callable[[], str] = now_rfc3339,
) -> Report:
    ordered = tuple(sorted(top, key=lambda t: -t.rss_minus_shr_bytes)[:TOP_MAX_ENTRIES])
    return Report(str(uuid.uuid4()), clock(), kind, identity, victim, node, ordered,
                  compose_message(kind, identity, victim, node))

"""Event reasons, defined once, and the pure builder of a core/v1 Event.

The OOM reasons are used by the OOM surfacing issue; they are here so that every reason the
operator can emit is listed in one place.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

NORMAL, WARNING = "Normal", "Warning"

INVALID_SPEC = "InvalidSpec"
CREATED = "Created"
DELETED = "Deleted"
UPDATED = "Updated"
RECONCILE_FAILED = "ReconcileFailed"
EXTERNAL_REDIS_CLEANUP_FAILED = "ExternalRedisCleanupFailed"  # the GCS FT keys could not be removed yet
HEAD_OUTDATED = "HeadOutdated"  # the head runs an old template and the upgrade strategy keeps it
SCALED_UP, SCALED_DOWN = "ScaledUp", "ScaledDown"  # a group's desired count changed, and why
SUSPENDED, RESUMED = "Suspended", "Resumed"  # spec.suspend turned true (every pod goes), or false
WORKERS_TO_DELETE_IGNORED = "WorkersToDeleteIgnored"  # names in workersToDelete that are not the group's
OOM_KILLED = "OOMKilled"
MEMORY_MONITOR_KILL = "MemoryMonitorKill"
KERNEL_OOM_KILL = "KernelOOMKill"
RAY_MEMORY_MONITOR_KILL = "RayMemoryMonitorKill"
MEMORY_QUOTA_EXCEEDED = "MemoryQuotaExceeded"

COMPONENT = "rayguard-operator"
MAX_MESSAGE = 1024


@dataclass(frozen=True)
class EventNote:
    """An event to post about an object: what the reconciler asks for, before any I/O."""

    type: str
    reason: str
    message: str


def build_event(involved: Mapping[str, Any], note: EventNote, name: str, timestamp: str,
                instance: str = "") -> dict[str, Any]:
    """A core/v1 Event about `involved` (a full object with apiVersion, kind and metadata)."""
    meta = involved["metadata"]
    message = note.message if len(note.message) <= MAX_MESSAGE else note.message[:MAX_MESSAGE - 3] + "..."
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": name, "namespace": meta["namespace"]},
        "involvedObject": {
            "apiVersion": involved["apiVersion"], "kind": involved["kind"],
            "name": meta["name"], "namespace": meta["namespace"], "uid": meta.get("uid", ""),
        },
        "type": note.type,
        "reason": note.reason,
        "message": message,
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "reportingInstance": instance or COMPONENT,
        "firstTimestamp": timestamp,
        "lastTimestamp": timestamp,
        "count": 1,
    }

"""OOM kills seen by the operator: from pod status, and the RayCluster's `status.oom`.

Pure functions. A container OOMKilled by Kubernetes is found in its pod's status (the
current `state.terminated` of a Failed pod, or `lastState.terminated` after a restart);
each termination is keyed by its container and finish time, so the same kill seen in
both places, or in two resyncs, counts once. The keys already counted live in an
annotation on the pod, which survives an operator restart.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from rayguard_node.contract import rfc3339

from rayguard_operator import names

ANNOTATION_OOM_COUNTED = f"{names.GROUP}/oom-counted"
KEYS_KEPT_PER_POD = 20


@dataclass(frozen=True)
class ContainerOom:
    pod: str
    pod_uid: str
    container: str
    key: str  # container and finish time: one termination
    finished_at: str
    exit_code: int | None
    restart_count: int


def container_ooms(pod: Mapping[str, Any]) -> list[ContainerOom]:
    """Every OOMKilled termination the pod's status shows, once each."""
    meta, status = pod["metadata"], pod.get("status") or {}
    found: dict[str, ContainerOom] = {}
    for container in status.get("containerStatuses") or []:
        for where in ("state", "lastState"):
            terminated = (container.get(where) or {}).get("terminated") or {}
            if terminated.get("reason") != "OOMKilled":
                continue
            finished = str(terminated.get("finishedAt") or "")
            restarts = int(container.get("restartCount") or 0)
            key = f"{container['name']}@{finished or f'restart-{restarts}'}"
            found.setdefault(key, ContainerOom(meta["name"], str(meta.get("uid", "")), container["name"], key,
                                               finished, terminated.get("exitCode"), restarts))
    return list(found.values())


def counted_keys(pod: Mapping[str, Any]) -> list[str]:
    raw = ((pod["metadata"].get("annotations") or {}).get(ANNOTATION_OOM_COUNTED)) or "[]"
    try:
        keys = json.loads(raw)
    except ValueError:
        return []
    return [str(k) for k in keys] if isinstance(keys, list) else []


def uncounted(pod: Mapping[str, Any]) -> list[ContainerOom]:
    seen = set(counted_keys(pod))
    return [kill for kill in container_ooms(pod) if kill.key not in seen]


def counted_annotation_patch(pod: Mapping[str, Any], kills: Iterable[ContainerOom]) -> dict[str, Any]:
    keys = counted_keys(pod) + [kill.key for kill in kills]
    return {"metadata": {"annotations": {ANNOTATION_OOM_COUNTED: json.dumps(keys[-KEYS_KEPT_PER_POD:])}}}


def _instant(text: str) -> float:
    """RFC 3339 as seconds; with and without fractions compare as times, not strings."""
    if not text:
        return float("-inf")
    try:
        return rfc3339.parse(text)
    except ValueError:
        return float("-inf")


@dataclass(frozen=True)
class OomCount:
    """One kill to add to status.oom."""

    kind: str
    time: str
    message: str
    report_id: str | None = None


def tally(current: Mapping[str, Any] | None, counts: Iterable[OomCount]) -> dict[str, Any]:
    """status.oom after adding `counts`: total, byKind, lastTime, lastMessage, lastReportId."""
    oom: dict[str, Any] = dict(current or {})
    by_kind = dict(oom.get("byKind") or {})
    total = int(oom.get("total") or 0)
    for count in counts:
        total += 1
        by_kind[count.kind] = int(by_kind.get(count.kind, 0)) + 1
        if _instant(count.time) >= _instant(str(oom.get("lastTime") or "")):
            oom["lastTime"], oom["lastMessage"] = count.time, count.message
        if count.report_id is not None:
            oom["lastReportId"] = count.report_id
    oom["total"], oom["byKind"] = total, by_kind
    return oom

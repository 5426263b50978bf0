"""Status: compute it from the model and the pods, compare with what is there, patch the rest.

Phases, first match wins:
- `Invalid`: the spec was rejected (SpecValid=False); no pod was touched.
- `Failed`: the API server refused a write the last reconcile needed (Ready=False,
  reason ReconcileFailed, the server's message).
- `Pending`: the head pod is missing or not ready.
- `Running`: the head is ready, some desired worker is not.
- `Ready`: the head and every desired worker are ready.
Conditions are SpecValid, HeadReady, WorkersReady and Ready, each with observedGeneration;
lastTransitionTime changes only when a condition's status does. While the spec is invalid,
head, workerGroups, the worker counts, memoryPlan, HeadReady and WorkersReady keep their
last values (the desired shape is unknown). `oom` belongs to OOM surfacing and is never
written here. Pure: the time comes in as an argument.
"""

from __future__ import annotations

from typing import Any, Mapping

from rayguard_operator.manifests import events
from rayguard_operator import names
from rayguard_operator.spec.model import ClusterModel, NodeGroup
from rayguard_operator.manifests.pod import num_cpus_env
from rayguard_operator.reconcile.pods import is_ready, keep_order, live_pods

SPEC_VALID, HEAD_READY, WORKERS_READY, READY = "SpecValid", "HeadReady", "WorkersReady", "Ready"
CONDITION_TYPES = (SPEC_VALID, HEAD_READY, WORKERS_READY, READY)
PHASE_INVALID, PHASE_FAILED, PHASE_PENDING, PHASE_RUNNING, PHASE_READY = (
    "Invalid", "Failed", "Pending", "Running", "Ready")

Condition = tuple[str, str, str]  # status, reason, message


def memory_plan_entry(group: NodeGroup) -> dict[str, Any]:
    plan = group.plan
    entry: dict[str, Any] = {
        "limitBytes": plan.limit_bytes, "objectStoreBytes": plan.object_store_bytes,
        "redisMaxBytes": plan.redis_max_bytes, "heapBytes": plan.heap_bytes,
        "usageThreshold": plan.usage_threshold, "monitorRefreshMs": plan.monitor_refresh_ms,
        "guardMode": plan.guard_mode, "guardThreshold": plan.guard_threshold,
        "guardRefreshMs": plan.guard_refresh_ms,
    }
    cpus = num_cpus_env(group)
    if cpus is not None:
        entry["numCpus"] = cpus
    if group.warnings:
        entry["warnings"] = list(group.warnings)
    return entry


def _head(cluster: ClusterModel, pods: tuple[dict[str, Any], ...]) -> tuple[dict[str, Any], Condition]:
    head: dict[str, Any] = {"serviceName": names.head_service_name(cluster.name), "ready": False}
    live = keep_order(live_pods(cluster.head, pods))
    if not live:
        return head, ("False", "HeadPodMissing", "no head pod yet")
    pod = live[0]
    head["podName"] = pod["metadata"]["name"]
    ip = (pod.get("status") or {}).get("podIP")
    if ip:
        head["podIP"] = ip
    head["ready"] = is_ready(pod)
    if head["ready"]:
        return head, ("True", "HeadPodReady", f"pod {head['podName']} is ready")
    phase = (pod.get("status") or {}).get("phase") or "Pending"
    return head, ("False", "HeadPodNotReady", f"pod {head['podName']} is {phase} and not ready")


def _workers(cluster: ClusterModel, pods: tuple[dict[str, Any], ...]) -> tuple[list[dict[str, Any]], Condition]:
    groups = []
    for group in cluster.worker_groups:
        ready = sum(1 for p in live_pods(group, pods) if is_ready(p))
        groups.append({"name": group.name, "desired": group.replicas, "ready": ready})
    short = [f"{g['name']}: {g['ready']}/{g['desired']} ready" for g in groups if g["ready"] < g["desired"]]
    if short:
        return groups, ("False", "WorkersNotReady", "; ".join(short))
    total = sum(g["desired"] for g in groups)
    return groups, ("True", "AllWorkersReady", f"{total}/{total} workers ready")


def _conditions(current: Mapping[str, Any], wanted: dict[str, Condition], generation: int,
                now: str) -> list[dict[str, Any]]:
    old = {c.get("type"): c for c in current.get("conditions") or []}
    conditions = []
    for kind in CONDITION_TYPES:
        if kind not in wanted:
            if kind in old:
                conditions.append(old[kind])
            continue
        status, reason, message = wanted[kind]
        previous = old.get(kind) or {}
        since = previous.get("lastTransitionTime") if previous.get("status") == status else None
        conditions.append({"type": kind, "status": status, "reason": reason, "message": message,
                           "lastTransitionTime": since or now, "observedGeneration": generation})
    return conditions


def compute_status(cluster: ClusterModel, pods: tuple[dict[str, Any], ...], current: Mapping[str, Any],
                   now: str, failure: str | None = None) -> dict[str, Any]:
    """Every status field rayguard owns, for a valid spec. `failure`: a refused write."""
    head, head_condition = _head(cluster, pods)
    groups, workers_condition = _workers(cluster, pods)
    if failure:
        phase, ready = PHASE_FAILED, ("False", events.RECONCILE_FAILED, failure)
    elif head_condition[0] != "True":
        phase, ready = PHASE_PENDING, ("False", "HeadNotReady", head_condition[2])
    elif workers_condition[0] != "True":
        phase, ready = PHASE_RUNNING, ("False", "WorkersNotReady", workers_condition[2])
    else:
        phase, ready = PHASE_READY, ("True", "ClusterReady", "the head and every worker are ready")
    wanted = {SPEC_VALID: ("True", "SpecValid", "the spec was accepted"), HEAD_READY: head_condition,
              WORKERS_READY: workers_condition, READY: ready}
    return {
        "phase": phase,
        "observedGeneration": cluster.generation,
        "head": head,
        "workerGroups": groups,
        "workersReady": sum(g["ready"] for g in groups),
        "workersDesired": sum(g["desired"] for g in groups),
        "memoryPlan": {g.name: memory_plan_entry(g) for g in cluster.groups},
        "conditions": _conditions(current, wanted, cluster.generation, now),
    }


def invalid_status(generation: int, message: str, current: Mapping[str, Any], now: str) -> dict[str, Any]:
    wanted = {SPEC_VALID: ("False", events.INVALID_SPEC, message),
              READY: ("False", events.INVALID_SPEC, "the spec is invalid; see SpecValid")}
    return {"phase": PHASE_INVALID, "observedGeneration": generation,
            "conditions": _conditions(current, wanted, generation, now)}


def spec_condition(status: Mapping[str, Any]) -> tuple[str, str] | None:
    """(status, message) of SpecValid, to tell whether an InvalidSpec event is news."""
    for condition in status.get("conditions") or []:
        if condition.get("type") == SPEC_VALID:
            return condition.get("status", ""), condition.get("message", "")
    return None


def merge_patch(current: Mapping[str, Any], desired: Mapping[str, Any], top: bool = True) -> dict[str, Any]:
    """The JSON merge patch that makes `current` hold `desired`. At the top level, keys not in
    `desired` (such as `oom`) are left alone; below it, maps are made equal (extra keys get
    null, so a removed group leaves memoryPlan). Empty when nothing differs."""
    patch: dict[str, Any] = {}
    for key, value in desired.items():
        old = current.get(key)
        if isinstance(value, dict) and isinstance(old, dict):
            sub = merge_patch(old, value, top=False)
            if sub:
                patch[key] = sub
        elif old != value or key not in current:
            patch[key] = value
    if not top:
        patch.update({key: None for key in current if key not in desired})
    return patch

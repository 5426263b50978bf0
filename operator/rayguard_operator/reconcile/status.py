"""Status: compute it from the model and the pods, compare with what is there, patch the rest.

Phases, first match wins:
- `Invalid`: the spec was rejected (SpecValid=False); no pod was touched.
- `Failed`: the API server refused a write the last reconcile needed (Ready=False,
  reason ReconcileFailed, the server's message).
- `Suspended`: spec.suspend is true (Ready=False, reason Suspended); its pods are deleted.
- `Pending`: the head pod is missing or not ready.
- `Running`: the head is ready, some desired worker is not.
- `Ready`: the head and every desired worker are ready.
Conditions are SpecValid, HeadReady, WorkersReady and Ready, each with observedGeneration;
lastTransitionTime changes only when a condition's status does. HeadOutdated appears once the
head pod runs an outdated template (True, the reason says whether and when the upgrade strategy
replaces it, the message what changed) and stays, False, once it is current again; the Warning
Event that goes with it is posted when its message is news (`head_outdated_note`). Suspended
does the same: True while spec.suspend is, False (reason Resumed) once it is not, and a Normal
Event each time it flips (`suspend_note`). workerGroups[].desired is the group's replicas and
.ready its ready pods (a surplus that autoscaling keeps until it is named counts too).
`outdatedPods` counts the live pods that run an outdated template. While the spec is invalid,
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
from rayguard_operator.reconcile.pods import is_ready, keep_order, live_pods, pod_hash
from rayguard_operator.reconcile.rollout import (Templates, desired_hash, desired_templates, head_replaceable,
                                               outdated_pods, what_changed)
from rayguard_operator.spec.upgrade import NONE, RECREATE

SPEC_VALID, HEAD_READY, WORKERS_READY, READY = "SpecValid", "HeadReady", "WorkersReady", "Ready"
HEAD_OUTDATED, SUSPENDED = "HeadOutdated", "Suspended"
CONDITION_TYPES = (SPEC_VALID, HEAD_READY, WORKERS_READY, READY, HEAD_OUTDATED, SUSPENDED)
# HeadOutdated reasons: left alone (RollingUpdate without GCS fault tolerance), about to be
# replaced, or never replaced for a template change (None); and current.
HELD_BACK, PENDING, DISABLED, CURRENT = "ReplacementHeldBack", "ReplacementPending", "ReplacementDisabled", "HeadCurrent"
PHASE_INVALID, PHASE_FAILED, PHASE_PENDING, PHASE_RUNNING, PHASE_READY, PHASE_SUSPENDED = (
    "Invalid", "Failed", "Pending", "Running", "Ready", "Suspended")
SUSPENDED_MESSAGE = "spec.suspend is true: every pod is deleted; the Secret, the Service and the spec are kept"
RESUMED_MESSAGE = "spec.suspend is false: the pods are created again"

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


def _head_outdated(cluster: ClusterModel, pods: tuple[dict[str, Any], ...], templates: Templates) -> Condition:
    live = keep_order(live_pods(cluster.head, pods))
    template = templates[cluster.head.name]
    if not live:
        return "False", CURRENT, "no head pod; it is created from the current template"
    pod, name = live[0], live[0]["metadata"]["name"]
    if pod_hash(pod) == desired_hash(template):
        return "False", CURRENT, f"head pod {name} runs the current template"
    changes = what_changed(pod, template)
    outdated = f"head pod {name} runs an outdated template (changed: {', '.join(changes) or 'the pod template'})"
    kind = cluster.upgrade_strategy.type
    if head_replaceable(cluster, pod):
        when = "now" if kind == RECREATE else "after the workers, one pod at a time"
        return "True", PENDING, f"{outdated}; upgradeStrategy {kind} replaces it {when}"
    todo = (f"delete pod {name} to apply it (Ray then restarts the GCS: running jobs and actors are lost),"
            " or set spec.upgradeStrategy.type to Recreate")
    if kind == NONE:
        return "True", DISABLED, f"{outdated}; upgradeStrategy None replaces no pod for a template change: {todo}"
    return "True", HELD_BACK, (f"{outdated}; upgradeStrategy RollingUpdate leaves the head alone without"
                               f" spec.gcsFaultTolerance, because a new head restarts the GCS and loses every"
                               f" job and actor: {todo}, or configure spec.gcsFaultTolerance")


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
    templates = desired_templates(cluster)
    if failure:
        phase, ready = PHASE_FAILED, ("False", events.RECONCILE_FAILED, failure)
    elif cluster.suspend:
        phase, ready = PHASE_SUSPENDED, ("False", SUSPENDED, SUSPENDED_MESSAGE)
    elif head_condition[0] != "True":
        phase, ready = PHASE_PENDING, ("False", "HeadNotReady", head_condition[2])
    elif workers_condition[0] != "True":
        phase, ready = PHASE_RUNNING, ("False", "WorkersNotReady", workers_condition[2])
    else:
        phase, ready = PHASE_READY, ("True", "ClusterReady", "the head and every worker are ready")
    wanted = {SPEC_VALID: ("True", "SpecValid", "the spec was accepted"), HEAD_READY: head_condition,
              WORKERS_READY: workers_condition, READY: ready}
    head_outdated = _head_outdated(cluster, pods, templates)
    if head_outdated[0] == "True" or condition_of(current, HEAD_OUTDATED) is not None:
        wanted[HEAD_OUTDATED] = head_outdated  # only once it has been True: most clusters never see it
    if cluster.suspend:
        wanted[SUSPENDED] = ("True", SUSPENDED, SUSPENDED_MESSAGE)
    elif condition_of(current, SUSPENDED) is not None:  # likewise
        wanted[SUSPENDED] = ("False", events.RESUMED, RESUMED_MESSAGE)
    return {
        "phase": phase,
        "observedGeneration": cluster.generation,
        "head": head,
        "workerGroups": groups,
        "workersReady": sum(g["ready"] for g in groups),
        "workersDesired": sum(g["desired"] for g in groups),
        "outdatedPods": len(outdated_pods(cluster, pods, templates)),
        "memoryPlan": {g.name: memory_plan_entry(g) for g in cluster.groups},
        "conditions": _conditions(current, wanted, cluster.generation, now),
    }


def invalid_status(generation: int, message: str, current: Mapping[str, Any], now: str) -> dict[str, Any]:
    wanted = {SPEC_VALID: ("False", events.INVALID_SPEC, message),
              READY: ("False", events.INVALID_SPEC, "the spec is invalid; see SpecValid")}
    return {"phase": PHASE_INVALID, "observedGeneration": generation,
            "conditions": _conditions(current, wanted, generation, now)}


def condition_of(status: Mapping[str, Any], kind: str) -> tuple[str, str, str] | None:
    """(status, reason, message) of one condition, or None when the status has none."""
    for condition in status.get("conditions") or []:
        if condition.get("type") == kind:
            return condition.get("status", ""), condition.get("reason", ""), condition.get("message", "")
    return None


def spec_condition(status: Mapping[str, Any]) -> tuple[str, str] | None:
    """(status, message) of SpecValid, to tell whether an InvalidSpec event is news."""
    found = condition_of(status, SPEC_VALID)
    return None if found is None else (found[0], found[2])


def head_outdated_note(current: Mapping[str, Any], desired: Mapping[str, Any]) -> events.EventNote | None:
    """The Warning to post when the head is newly left outdated by RollingUpdate (or what changed
    is news): once, not on every pass, since `current` is the status as last written."""
    wanted = condition_of(desired, HEAD_OUTDATED)
    if wanted is None or wanted[:2] != ("True", HELD_BACK) or condition_of(current, HEAD_OUTDATED) == wanted:
        return None
    return events.EventNote(events.WARNING, events.HEAD_OUTDATED, wanted[2])


def suspend_note(current: Mapping[str, Any], desired: Mapping[str, Any]) -> events.EventNote | None:
    """`Suspended` when the Suspended condition turns True, `Resumed` when it turns False:
    once per change, since `current` is the status as last written."""
    before, after = condition_of(current, SUSPENDED), condition_of(desired, SUSPENDED)
    was, now = (before or ("False",))[0] == "True", (after or ("False",))[0] == "True"
    if now and not was:
        return events.EventNote(events.NORMAL, events.SUSPENDED, SUSPENDED_MESSAGE)
    if was and not now and after is not None:
        return events.EventNote(events.NORMAL, events.RESUMED, RESUMED_MESSAGE)
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

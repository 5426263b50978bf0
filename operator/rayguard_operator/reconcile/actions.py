"""Reconcile by difference: desired children vs what exists, as an ordered list of actions.

Pure: it reads a snapshot (`Observed`) and returns `Action`s; `sync.py` applies them. When
the actual state already matches, the list is empty, so a second pass writes nothing.

The steps, in order:
1. the Secret, created when missing (never rewritten: its values are mounted in pods);
2. the head Service, created when missing, patched when its selector, ports or labels drift;
2a. the autoscaler's ServiceAccount, Role, RoleBinding and ConfigMap (`autoscaler.py`): made
   or updated with spec.autoscaling.enabled, before any pod (the head pod runs as that
   ServiceAccount); deleted once it is off;
2b. spec.suspend: every pod is deleted, the head included, and nothing else happens to pods
   (the Secret, the Service and the autoscaler's children stay); `false` recreates them;
3. dead pods (phase Failed or Succeeded) are deleted, so that step 5 replaces them;
4. pods of groups that no longer exist are deleted;
5. each group (head first) is scaled to its replicas (`scale.py`). The pods its
   workersToDelete names go first. Then, with autoscaling off, the rest of a surplus goes,
   not-ready pods first, then the newest; with autoscaling on, a surplus nobody named is kept
   (the autoscaler names what goes). Scale-up creates at most `MAX_POD_CREATES_PER_PASS` pods per pass,
   over all groups in this order; the next pass creates the next batch (the created pods'
   own events queue it at once). A pod's manifest is built only for a create of this batch,
   from its group's template, built once per pass, so what a pass builds and writes does not
   grow with the replica count (what it reads, the cluster's pods, still does);
6. pods whose template hash is out of date, by spec.upgradeStrategy (`rollout.py`):
   - RollingUpdate: a rollout step replaces ONE such pod, workers before the head, and the
     head only when `rollout.head_replaceable` (GCS fault tolerance, or a head that never
     started); status.py says HeadOutdated otherwise. It waits while an earlier replacement
     is not ready yet, unless the pod to replace is not ready itself (replacing it loses
     nothing, and a broken rollout can be fixed forward);
   - Recreate: every outdated pod is deleted before step 5, which creates its replacement;
   - None: none is replaced (steps 3 and 5 still make the missing and dead ones, as now).
Pods being deleted (with a deletionTimestamp) are neither counted nor touched.
"""

from __future__ import annotations

from typing import Any, Callable

from rayguard_operator import names
from rayguard_operator.spec.model import ClusterModel, NodeGroup
from rayguard_operator.manifests.pod import build_pod
from rayguard_operator.manifests.secret import build_secret
from rayguard_operator.manifests.service import build_head_service, service_patch
from rayguard_operator.reconcile.action import Action, Observed
from rayguard_operator.reconcile.autoscaler import autoscaler_steps
from rayguard_operator.reconcile.pods import (is_dead, is_ready, is_terminating, live_pods, pod_group, pod_hash,
                                            pod_name, scale_down_order)
from rayguard_operator.reconcile.scale import named_pods, victims
from rayguard_operator.reconcile.rollout import (Templates, desired_hash, desired_templates, head_replaceable,
                                               outdated_pods)
from rayguard_operator.spec.upgrade import RECREATE, ROLLING_UPDATE

# Pod creates per pass (step 5). 50 keeps a pass short (each create is one API call and one
# Event) and what it builds small; None means no bound (only the bench sets it, to compare).
MAX_POD_CREATES_PER_PASS: int | None = 50


__all__ = ["Action", "Observed", "plan_actions"]


# --- the steps -----------------------------------------------------------------------------

NewName = Callable[[str], str]
NewSecrets = Callable[[], tuple[str, str]]


def _secret_step(cluster: ClusterModel, observed: Observed, new_secrets: NewSecrets) -> list[Action]:
    if observed.secret is not None:
        return []
    token, password = new_secrets()
    return [Action("create", "Secret", names.secret_name(cluster.name), build_secret(cluster, token, password))]


def _service_step(cluster: ClusterModel, observed: Observed) -> list[Action]:
    desired = build_head_service(cluster)
    name = desired["metadata"]["name"]
    if observed.service is None:
        return [Action("create", "Service", name, desired)]
    patch = service_patch(desired, observed.service)
    return [Action("patch", "Service", name, patch, "selector, ports or labels had drifted")] if patch else []


def _delete(pod: dict[str, Any], why: str) -> Action:
    return Action("delete", "Pod", pod_name(pod), None, why)


def _pod_steps(cluster: ClusterModel, observed: Observed, new_name: NewName) -> list[Action]:
    actions: list[Action] = []
    pods = tuple(p for p in observed.pods if not is_terminating(p))
    if cluster.suspend:
        return [_delete(p, "spec.suspend is true") for p in pods]
    known = {(g.role, g.name) for g in cluster.groups}
    for pod in pods:
        if is_dead(pod):
            actions.append(_delete(pod, f"phase {pod['status']['phase']}, replacing it"))
        elif pod_group(pod) not in known:
            actions.append(_delete(pod, f"group {pod_group(pod)[1]!r} is no longer in the spec"))
    templates = desired_templates(cluster)
    if cluster.upgrade_strategy.type == RECREATE:  # all at once; the scale-up below replaces them
        stale = outdated_pods(cluster, pods, templates)
        actions += [_delete(p, "its template changed, replacing it (upgradeStrategy Recreate)") for p in stale]
        gone = {pod_name(p) for p in stale}
        pods = tuple(p for p in pods if pod_name(p) not in gone)
    created: dict[str, int] = {}  # pods missing per group, whether created in this batch or later
    survivors: dict[str, list[dict[str, Any]]] = {}
    budget = MAX_POD_CREATES_PER_PASS
    named = named_pods(cluster, observed.pods)
    for group in cluster.groups:
        live = live_pods(group, pods)
        going = victims(group, live, named.get(group.name), cluster.autoscaling.enabled)
        actions += [_delete(p, why) for p, why in going]
        gone = {pod_name(p) for p, _ in going}
        live = [p for p in live if pod_name(p) not in gone]
        extra = len(live) - group.replicas
        batch = max(0, -extra) if budget is None else min(max(0, -extra), budget)
        for _ in range(batch):
            actions.append(_create_pod(cluster, group, new_name, templates[group.name]))
        budget = None if budget is None else budget - batch
        created[group.name] = max(0, -extra)
        survivors[group.name] = live
    if cluster.upgrade_strategy.type != ROLLING_UPDATE:
        return actions
    return actions + _rollout_step(cluster, templates, survivors, created, new_name)


def _create_pod(cluster: ClusterModel, group: NodeGroup, new_name: NewName, template: dict[str, Any]) -> Action:
    prefix = names.head_pod_prefix(cluster.name) if group.role == names.HEAD \
        else names.worker_pod_prefix(cluster.name, group.name)
    pod = build_pod(cluster, group, new_name(prefix), template)
    return Action("create", "Pod", pod["metadata"]["name"], pod)


def _rollout_step(cluster: ClusterModel, templates: Templates,
                  survivors: dict[str, list[dict[str, Any]]], created: dict[str, int],
                  new_name: NewName) -> list[Action]:
    hashes = {name: desired_hash(t) for name, t in templates.items()}
    outdated = {name: [p for p in pods if pod_hash(p) != hashes[name]] for name, pods in survivors.items()}
    in_progress = any(created.values()) or any(
        not is_ready(p) for name, pods in survivors.items() for p in pods if pod_hash(p) == hashes[name])
    for group in (*cluster.worker_groups, cluster.head):
        candidates = scale_down_order(outdated[group.name])
        if not candidates:
            continue
        pod = candidates[0]
        if group.role == names.HEAD and not head_replaceable(cluster, pod):
            return []  # left alone: status.py sets HeadOutdated
        if in_progress and is_ready(pod):
            return []
        why = "its template changed, replacing it"
        return [_delete(pod, why), _create_pod(cluster, group, new_name, templates[group.name])]
    return []


def plan_actions(cluster: ClusterModel, observed: Observed, new_name: NewName,
                 new_secrets: NewSecrets) -> list[Action]:
    """Every write needed to make the cluster's children match its spec, in order."""
    return (_secret_step(cluster, observed, new_secrets)
            + _service_step(cluster, observed)
            + autoscaler_steps(cluster, observed.autoscaler)
            + _pod_steps(cluster, observed, new_name))

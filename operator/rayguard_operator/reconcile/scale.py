"""Scaling a worker group: which pods go, workersToDelete, and the ScaledUp/ScaledDown Events. Pure.

- `workersToDelete` names pods of its group; those are deleted first. A name that is no pod of
  the cluster, or a pod of another group (or the head), is ignored: one Normal Event names it.
  Once the named pods are deleted, the operator clears the list (`clear_patch`).
- Autoscaling off: a group with more live pods than `replicas` loses the named ones, then the
  rest of its surplus in `scale_down_order` (not ready first, then the newest), as before.
- Autoscaling on: `replicas` is the autoscaler's, and only the autoscaler chooses which worker
  goes, by naming it. A surplus nobody named is kept until it is named (the autoscaler's
  provider counts it, and names pods as it scales down). Dead pods are still replaced, and the
  pods of a group taken out of the spec still go (actions.py's steps 3 and 4).
- A group's desired count is `replicas`. When it differs from the count the status last
  recorded (status.workerGroups[].desired), one ScaledUp or ScaledDown Event says so, with why:
  the autoscaler's reason from the ANNOTATION_SCALE_REASON annotation, else "spec changed".
  The status is compared as last written, so the Event is posted once per change, also after
  an operator restart.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Any, Mapping

from rayguard_node.contract.autoscaler import ANNOTATION_SCALE_REASON

from rayguard_operator import names
from rayguard_operator.manifests import events
from rayguard_operator.reconcile.pods import is_dead, is_terminating, pod_group, pod_name, scale_down_order
from rayguard_operator.spec.model import ClusterModel, NodeGroup

SPEC_CHANGED = "spec changed"

Pod = dict[str, Any]


@dataclass(frozen=True)
class Named:
    """One group's workersToDelete, read against the pods: the live pods of the group it names
    (to delete), and the names it gives that are not the group's, each with why."""

    group: str
    delete: tuple[Pod, ...]
    ignored: tuple[tuple[str, str], ...] = ()

    @property
    def note(self) -> events.EventNote | None:
        """The Normal Event for the ignored names; None when there are none."""
        if not self.ignored:
            return None
        listed = ", ".join(f"{name} ({why})" for name, why in self.ignored)
        return events.EventNote(events.NORMAL, events.WORKERS_TO_DELETE_IGNORED,
                                f"workersToDelete of group {self.group} names pods that are not its own,"
                                f" ignored: {listed}")


def named_pods(cluster: ClusterModel, pods: tuple[Pod, ...]) -> dict[str, Named]:
    """Each worker group with a non-empty workersToDelete, against the cluster's pods. A named
    pod already terminating or dead counts as consumed: it is deleted, or replaced, already."""
    by_name = {pod_name(p): p for p in pods}
    found: dict[str, Named] = {}
    for group in cluster.worker_groups:
        if not group.workers_to_delete:
            continue
        delete: list[Pod] = []
        ignored: list[tuple[str, str]] = []
        for name in group.workers_to_delete:
            pod = by_name.get(name)
            if pod is None:
                ignored.append((name, "no such pod"))
            elif pod_group(pod) != (group.role, group.name):
                role, other = pod_group(pod)
                ignored.append((name, "the head pod" if role == names.HEAD else f"a pod of group {other}"))
            elif not is_terminating(pod) and not is_dead(pod):
                delete.append(pod)
        found[group.name] = Named(group.name, tuple(delete), tuple(ignored))
    return found


def victims(group: NodeGroup, live: list[Pod], named: Named | None, autoscaling: bool) -> list[tuple[Pod, str]]:
    """The live pods of `group` to delete, each with why: the named ones, then (autoscaling
    off, or the head) the rest of the surplus over `replicas`. `live`: the group's pods no
    earlier step deletes (a named pod that upgradeStrategy Recreate deletes is not named twice)."""
    here = {pod_name(p) for p in live}
    chosen = [(p, f"named in workersToDelete of group {group.name}")
              for p in (named.delete if named else ()) if pod_name(p) in here]
    gone = {pod_name(p) for p, _ in chosen}
    rest = [p for p in live if pod_name(p) not in gone]
    extra = len(rest) - group.replicas
    if extra > 0 and (group.role == names.HEAD or not autoscaling):
        why = "extra head pod" if group.role == names.HEAD else f"scaling {group.name} down to {group.replicas}"
        chosen += [(p, why) for p in scale_down_order(rest)[:extra]]
    return chosen


def clear_patch(body: Mapping[str, Any], consumed: set[str]) -> dict[str, Any] | None:
    """The merge patch that clears workersToDelete of the `consumed` groups, and nothing else:
    a merge patch replaces a list whole, so spec.workerGroups is sent as `body` holds it, less
    those lists, with body's resourceVersion: if anyone wrote the cluster since (the
    autoscaler's next replicas), the server answers 409 instead of undoing that write."""
    groups = copy.deepcopy(list((body.get("spec") or {}).get("workerGroups") or []))
    touched = False
    for group in groups:
        if group.get("name") in consumed and "workersToDelete" in group:
            del group["workersToDelete"]
            touched = True
    if not touched:
        return None
    patch: dict[str, Any] = {"spec": {"workerGroups": groups}}
    version = body["metadata"].get("resourceVersion")
    if version:
        patch["metadata"] = {"resourceVersion": version}
    return patch


def scale_reasons(body: Mapping[str, Any]) -> dict[str, str]:
    """The autoscaler's {group: why} annotation; {} when absent or not a JSON object of strings."""
    text = (body["metadata"].get("annotations") or {}).get(ANNOTATION_SCALE_REASON)
    try:
        data = json.loads(text) if text else {}
    except ValueError:
        return {}
    if not isinstance(data, dict):
        return {}
    return {str(k): v for k, v in data.items() if isinstance(v, str) and v}


def scale_notes(current: Mapping[str, Any], desired: Mapping[str, Any], reasons: Mapping[str, str],
                autoscaling: bool) -> list[events.EventNote]:
    """ScaledUp/ScaledDown for each group whose desired count differs from the one the status
    recorded. A group the status has not recorded yet (a new cluster or group) is not scaling."""
    before = {g.get("name"): g.get("desired") for g in current.get("workerGroups") or []}
    notes = []
    for group in desired.get("workerGroups") or []:
        old, new = before.get(group["name"]), group["desired"]
        if not isinstance(old, int) or old == new:
            continue
        why = reasons.get(group["name"], SPEC_CHANGED) if autoscaling else SPEC_CHANGED
        reason = events.SCALED_UP if new > old else events.SCALED_DOWN
        notes.append(events.EventNote(events.NORMAL, reason, f"group {group['name']}: {old} -> {new} ({why})"))
    return notes

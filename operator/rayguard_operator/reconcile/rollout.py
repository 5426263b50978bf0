"""The upgrade policy over observed pods: which run an outdated template, whether the head may
be replaced (spec.upgradeStrategy, spec.gcsFaultTolerance), and what changed. Pure; used by
the action planner (actions.py) and the status (status.py).

RollingUpdate replaces the head only with GCS fault tolerance: otherwise a new head means a
new GCS, and every job and actor of the cluster is lost. A head that never started (phase
Pending: say, an image it cannot pull) holds no GCS yet, so it is replaced all the same.
"""

from __future__ import annotations

from typing import Any

from rayguard_operator import names
from rayguard_operator.manifests.parts import changed_parts, read_parts
from rayguard_operator.manifests.pod import pod_template
from rayguard_operator.reconcile.pods import is_dead, is_terminating, pod_group, pod_hash
from rayguard_operator.spec.model import ClusterModel
from rayguard_operator.spec.upgrade import RECREATE, ROLLING_UPDATE

Templates = dict[str, dict[str, Any]]  # group name → pod template (pod.pod_template)


def desired_templates(cluster: ClusterModel) -> Templates:
    return {g.name: pod_template(cluster, g) for g in cluster.groups}


def desired_hash(template: dict[str, Any]) -> str:
    return template["metadata"]["annotations"][names.ANNOTATION_TEMPLATE_HASH]


def is_outdated(cluster: ClusterModel, pod: dict[str, Any], templates: Templates) -> bool:
    """A pod of a group in the spec whose template hash is not the group's current one."""
    role, group = pod_group(pod)
    spec_group = cluster.group(group)
    if spec_group is None or spec_group.role != role:
        return False
    return pod_hash(pod) != desired_hash(templates[group])


def outdated_pods(cluster: ClusterModel, pods: tuple[dict[str, Any], ...],
                  templates: Templates) -> list[dict[str, Any]]:
    """Live pods (not terminating, not dead) that run an outdated template."""
    return [p for p in pods if not is_terminating(p) and not is_dead(p) and is_outdated(cluster, p, templates)]


def never_started(pod: dict[str, Any]) -> bool:
    return ((pod.get("status") or {}).get("phase") or "Pending") == "Pending"


def head_replaceable(cluster: ClusterModel, head: dict[str, Any]) -> bool:
    """Whether the upgrade strategy lets an outdated head pod be replaced."""
    kind = cluster.upgrade_strategy.type
    if kind == RECREATE:
        return True
    if kind == ROLLING_UPDATE:
        return cluster.gcs is not None or never_started(head)
    return False


def what_changed(pod: dict[str, Any], template: dict[str, Any]) -> tuple[str, ...]:
    """The parts of the template that differ from what the pod recorded; empty when the pod
    recorded none (made by an operator that did not record them)."""
    recorded = read_parts((pod["metadata"].get("annotations") or {}).get(names.ANNOTATION_TEMPLATE_PARTS))
    desired = read_parts(template["metadata"]["annotations"].get(names.ANNOTATION_TEMPLATE_PARTS))
    return changed_parts(recorded, desired)

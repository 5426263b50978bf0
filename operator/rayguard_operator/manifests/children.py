"""Everything the operator creates for a cluster, in creation order (pure).

The reconciler uses the individual builders; `rayguard render` and the builder tests use
`build_children`, so both see the same objects.
"""

from __future__ import annotations

from typing import Any, Callable

from rayguard_operator.spec.model import ClusterModel, NodeGroup
from rayguard_operator.manifests.autoscaler import build_autoscaler_children
from rayguard_operator.manifests.pod import build_pod, pod_template
from rayguard_operator.manifests.secret import build_secret
from rayguard_operator.manifests.service import build_head_service

__all__ = ["build_autoscaler_children", "build_children", "build_head_service", "build_pod", "build_secret",
           "pod_template"]


def build_children(cluster: ClusterModel, pod_name: Callable[[NodeGroup, int], str],
                   ray_auth_token: str, redis_password: str) -> list[dict[str, Any]]:
    """Secret, head Service, the autoscaler's ServiceAccount, Role, RoleBinding and ConfigMap
    (with autoscaling; before the head pod, which runs as that ServiceAccount), head Pod, then
    each group's worker Pods (`replicas` of them). A suspended cluster has no pods."""
    children = [build_secret(cluster, ray_auth_token, redis_password), build_head_service(cluster),
                *build_autoscaler_children(cluster)]
    if cluster.suspend:
        return children
    for group in cluster.groups:
        template = pod_template(cluster, group)
        children += [build_pod(cluster, group, pod_name(group, i), template) for i in range(group.replicas)]
    return children

"""Pure builders of what autoscaling adds to a cluster (README, "Autoscaling").

`autoscaling_config` is Ray's autoscaler config, made from the very `NodeGroup.plan` the pod
builder sizes each pod with: a node type per group, advertising the CPUs Ray gets, the planned
heap as `memory` (the `--memory` Ray is given, not the container limit KubeRay advertises), the
planned object store, GPUs and custom resources. The ConfigMap carries it to the head pod's
sidecar, which runs Ray 2.60's own autoscaler with rayguard's node provider. The sidecar's
ServiceAccount is bound by a Role to get and patch this one RayCluster and to get and list pods.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from rayguard_node.contract import autoscaler as A

from rayguard_operator import names
from rayguard_operator.spec.autoscaling import TOKEN_DIR, TOKEN_VOLUME
from rayguard_operator.spec.model import MAX_CLUSTER_WORKERS, ClusterModel, NodeGroup
from rayguard_operator.spec.overlay import container_security

# What a node type advertises as Ray's `memory`: the planned heap (rayguard), or the whole
# container limit (what KubeRay advertises; for comparisons such as bench/autoscale.py).
ADVERTISE_HEAP, ADVERTISE_LIMIT = "heap", "limit"
CONFIG_DEFAULT_MODE = 0o444
TOKEN_DEFAULT_MODE = 0o440  # group-readable through fsGroup, as the Secret's volume
TOKEN_EXPIRATION_SECONDS = 3607  # what the kubelet's own service account volume asks for
ROOT_CA_CONFIG_MAP = "kube-root-ca.crt"  # in every namespace, published by the control plane
# Fields Ray's config schema wants that a provider without node updaters leaves empty.
_EMPTY_FIELDS: dict[str, Any] = {
    "file_mounts": {}, "cluster_synced_files": [], "file_mounts_sync_continuously": False,
    "initialization_commands": [], "setup_commands": [], "head_setup_commands": [],
    "worker_setup_commands": [], "head_start_ray_commands": [], "worker_start_ray_commands": [], "auth": {},
}


def node_resources(group: NodeGroup, memory: str = ADVERTISE_HEAP) -> dict[str, int]:
    """The Ray resources one node of the group has, as its pod's runtime starts Ray."""
    plan = group.plan
    resources: dict[str, int] = {}
    if group.ray_num_cpus is not None:  # always, with autoscaling enabled (spec/autoscaling.py)
        resources["CPU"] = group.ray_num_cpus
    resources["memory"] = plan.heap_bytes if memory == ADVERTISE_HEAP else plan.limit_bytes
    resources["object_store_memory"] = plan.object_store_bytes
    if group.num_gpus is not None:
        resources["GPU"] = group.num_gpus
    resources.update(group.ray_resources)
    return resources


def _node_type(group: NodeGroup, memory: str) -> dict[str, Any]:
    head = group.role == names.HEAD
    return {"min_workers": 0 if head else group.min_replicas, "max_workers": 0 if head else group.max_replicas,
            "node_config": {}, "resources": node_resources(group, memory)}


def autoscaling_config(cluster: ClusterModel, memory: str = ADVERTISE_HEAP) -> dict[str, Any]:
    """Ray's autoscaler config for the cluster, as the StandardAutoscaler and rayguard's
    BatchingNodeProvider (Ray's `external` provider type) read it."""
    node_types = {A.HEAD_NODE_TYPE: _node_type(cluster.head, memory)}
    node_types.update({g.name: _node_type(g, memory) for g in cluster.worker_groups})
    return {
        "cluster_name": cluster.name,
        "provider": {
            "type": "external", "module": A.PROVIDER_CLASS,
            A.PROVIDER_NAMESPACE_KEY: cluster.namespace, A.PROVIDER_CLUSTER_KEY: cluster.name,
            # What Ray's BatchingNodeProvider asserts: the operator makes the pods, not Ray.
            "disable_node_updaters": True, "disable_launch_config_check": True,
            "foreground_node_launch": True, "worker_liveness_check": False,
        },
        "head_node_type": A.HEAD_NODE_TYPE,
        "available_node_types": node_types,
        # The cluster cap: the autoscaler never asks for more workers than the CRD admits.
        "max_workers": min(sum(g.max_replicas for g in cluster.worker_groups), MAX_CLUSTER_WORKERS),
        "idle_timeout_minutes": cluster.autoscaling.idle_timeout_s / 60,
        "upscaling_speed": cluster.autoscaling.upscaling_speed,
        **copy.deepcopy(_EMPTY_FIELDS),
    }


def config_json(cluster: ClusterModel) -> str:
    return json.dumps(autoscaling_config(cluster), sort_keys=True)


# --- the children --------------------------------------------------------------------------

def _metadata(cluster: ClusterModel) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": A.autoscaler_name(cluster.name), "namespace": cluster.namespace,
                                "labels": names.cluster_labels(cluster.name)}
    if cluster.uid:
        metadata["ownerReferences"] = [names.owner_reference(cluster.name, cluster.uid)]
    return metadata


def build_config_map(cluster: ClusterModel) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _metadata(cluster),
            "data": {A.CONFIG_KEY: config_json(cluster)}}


def build_service_account(cluster: ClusterModel) -> dict[str, Any]:
    # The token is mounted in the sidecar only (sidecar_volumes), never by the kubelet's default.
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _metadata(cluster),
            "automountServiceAccountToken": False}


def build_role(cluster: ClusterModel) -> dict[str, Any]:
    """Get and patch this one RayCluster; get and list pods (of the namespace: RBAC cannot
    restrict a list by label; the provider lists with the cluster's label selector)."""
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": _metadata(cluster),
            "rules": [
                {"apiGroups": [names.GROUP], "resources": [names.PLURAL], "resourceNames": [cluster.name],
                 "verbs": ["get", "patch"]},
                {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]},
            ]}


def build_role_binding(cluster: ClusterModel) -> dict[str, Any]:
    name = A.autoscaler_name(cluster.name)
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": _metadata(cluster),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": cluster.namespace}]}


def build_autoscaler_children(cluster: ClusterModel) -> list[dict[str, Any]]:
    """ServiceAccount, Role, RoleBinding and ConfigMap; none while autoscaling is off."""
    if not cluster.autoscaling.enabled:
        return []
    return [build_service_account(cluster), build_role(cluster), build_role_binding(cluster),
            build_config_map(cluster)]


# --- the head pod's part -------------------------------------------------------------------

def _value(name: str, value: object) -> dict[str, Any]:
    return {"name": name, "value": str(value)}


def build_sidecar(cluster: ClusterModel) -> dict[str, Any]:
    """The autoscaler container: its own resources (not taken from ray-node's), restricted."""
    spec = cluster.autoscaling
    return {
        "name": A.CONTAINER,
        "image": spec.image or cluster.image,
        "command": list(A.COMMAND),
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "env": [
            _value(A.CLUSTER_ENV, cluster.name),
            _value(A.NAMESPACE_ENV, cluster.namespace),
            _value(A.CONFIG_ENV, A.CONFIG_PATH),
            _value(A.GCS_ADDRESS_ENV, f"127.0.0.1:{names.PORT_GCS[1]}"),
            _value(A.RAY_AUTH_TOKEN_FILE_ENV, f"{names.SECRETS_DIR}/{names.SECRET_KEY_RAY_TOKEN}"),
        ],
        "resources": {"limits": dict(spec.limits), "requests": dict(spec.requests)},
        "volumeMounts": [
            {"name": names.VOLUME_SECRETS, "mountPath": names.SECRETS_DIR, "readOnly": True},
            {"name": A.VOLUME, "mountPath": A.CONFIG_DIR, "readOnly": True},
            {"name": TOKEN_VOLUME, "mountPath": TOKEN_DIR, "readOnly": True},
        ],
        "securityContext": container_security(),
    }


def sidecar_volumes(cluster: ClusterModel) -> list[dict[str, Any]]:
    """The config, and the service account's token as the kubelet would mount it, but in the
    sidecar alone: ray-node runs user code (job drivers), which gets no API credentials."""
    return [
        {"name": A.VOLUME, "configMap": {"name": A.autoscaler_name(cluster.name),
                                         "defaultMode": CONFIG_DEFAULT_MODE}},
        {"name": TOKEN_VOLUME, "projected": {"defaultMode": TOKEN_DEFAULT_MODE, "sources": [
            {"serviceAccountToken": {"path": "token", "expirationSeconds": TOKEN_EXPIRATION_SECONDS}},
            {"configMap": {"name": ROOT_CA_CONFIG_MAP, "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
            {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {
                "apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
        ]}},
    ]

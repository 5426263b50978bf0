"""What the autoscaler tests share: a RayCluster with worker groups, its pods as the operator
labels them, and the autoscaler's own ServiceAccount, Role and RoleBinding (exactly the rules
the design gives it), made through the emulator's API; and the provider config that points
rayguard's provider at the emulator with that ServiceAccount's token."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes.client

from tests.integration.cluster_objects import GROUP, NS, PLURAL, VERSION, raycluster
from testkit.kube import KubeApi

from rayguard_node.contract import autoscaler as contract

RBAC_GROUP = 'rbac.authorization.k8s.io'
MERGE = 'application/merge-patch+json'


def autoscaled_cluster(api: KubeApi, name: str, groups: dict[str, tuple[int, int, int]]) -> dict[str, Any]:
    """groups: name -> (replicas, minReplicas, maxReplicas)."""
    body = raycluster(name)
    body['spec']['workerGroups'] = [
        {'name': g, 'replicas': r, 'minReplicas': lo, 'maxReplicas': hi,
         'resources': {'limits': {'cpu': '1', 'memory': '1Gi'}}} for g, (r, lo, hi) in groups.items()]
    body['spec']['autoscaling'] = {'enabled': True}
    return api.custom.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, body)


def make_pod(api: KubeApi, cluster: str, name: str, group: str | None, ready: bool = True,
             ip: str = '10.0.0.1') -> None:
    labels = {contract.LABEL_CLUSTER: cluster, contract.LABEL_NODE_TYPE: 'worker' if group else 'head',
              contract.LABEL_GROUP: group or 'head'}
    api.core.create_namespaced_pod(NS, {'metadata': {'name': name, 'labels': labels},
                                        'spec': {'containers': [{'name': 'ray-node', 'image': 'x'}]}})
    status = {'phase': 'Running', 'podIP': ip, 'conditions': [{'type': 'Ready', 'status': str(ready)}]}
    api.core.patch_namespaced_pod_status(name, NS, {'status': status}, _content_type=MERGE)


def autoscaler_rules(cluster: str) -> list[dict[str, Any]]:
    """The design's Role: get and patch on this one RayCluster; get and list on pods."""
    return [{'apiGroups': [GROUP], 'resources': [PLURAL], 'verbs': ['get', 'patch'], 'resourceNames': [cluster]},
            {'apiGroups': [''], 'resources': ['pods'], 'verbs': ['get', 'list']}]


def grant_autoscaler(api: KubeApi, cluster: str) -> str:
    """The cluster's autoscaler ServiceAccount, Role and RoleBinding (created by the admin, as
    the operator would); returns the ServiceAccount's token."""
    name = contract.autoscaler_name(cluster)
    api.core.create_namespaced_service_account(NS, {'metadata': {'name': name}})
    rbac = kubernetes.client.RbacAuthorizationV1Api(api.client)
    rbac.create_namespaced_role(NS, {'metadata': {'name': name}, 'rules': autoscaler_rules(cluster)})
    rbac.create_namespaced_role_binding(NS, {
        'metadata': {'name': name}, 'roleRef': {'apiGroup': RBAC_GROUP, 'kind': 'Role', 'name': name},
        'subjects': [{'kind': 'ServiceAccount', 'name': name, 'namespace': NS}]})
    return api.token_for(NS, name)


def provider_config(api: KubeApi, token: str, directory: Path, **extra: Any) -> dict[str, Any]:
    token_file = directory / 'sa-token'
    token_file.write_text(token)
    return {'type': 'external', 'module': contract.PROVIDER_CLASS, 'namespace': NS,
            'disable_node_updaters': True, 'disable_launch_config_check': True, 'foreground_node_launch': True,
            'worker_liveness_check': False, 'kube_host': api.url, 'kube_token_file': str(token_file), **extra}


def autoscaling_config(cluster: str, provider: dict[str, Any], groups: dict[str, tuple[int, int, dict[str, float]]],
                       idle_timeout_s: int = 60) -> dict[str, Any]:
    """Ray's autoscaler config for `cluster`, written by hand (the operator generates the real
    one): groups are name -> (minReplicas, maxReplicas, Ray resources of one worker)."""
    types = {contract.HEAD_NODE_TYPE: {'resources': {'CPU': 0}, 'node_config': {}, 'min_workers': 0, 'max_workers': 0}}
    for name, (low, high, resources) in groups.items():
        types[name] = {'resources': resources, 'node_config': {}, 'min_workers': low, 'max_workers': high}
    empty_lists = ('cluster_synced_files', 'initialization_commands', 'setup_commands', 'head_setup_commands',
                   'worker_setup_commands', 'head_start_ray_commands', 'worker_start_ray_commands')
    return {'cluster_name': cluster, 'provider': provider, 'available_node_types': types,
            'head_node_type': contract.HEAD_NODE_TYPE, 'max_workers': sum(g[1] for g in groups.values()),
            'idle_timeout_minutes': idle_timeout_s / 60, 'upscaling_speed': contract.UPSCALING_SPEED['Default'],
            'file_mounts': {}, 'file_mounts_sync_continuously': False, 'auth': {}, 'head_node': {},
            'worker_nodes': {}, **{key: [] for key in empty_lists}}

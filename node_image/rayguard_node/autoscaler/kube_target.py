"""`KubeTarget`: the RayCluster and its pods through the Kubernetes API (the sidecar's target).

It reads with one GET of the RayCluster and one LIST of its pods (label
`rayguard.dev/cluster=<name>`), and scales with one JSON merge patch of the RayCluster:
`spec.workerGroups` (replicas, workersToDelete) and the reasons annotation, carrying the
resourceVersion it read, so that a write in between (the operator's, a user's) is a 409; it then
reads again and retries, a bounded number of times with backoff. Its ServiceAccount's Role
grants exactly these calls: get and patch on this one RayCluster, get and list on pods.

Credentials: an explicit `kube_host` (+ `kube_token_file`) in the provider config, else the
in-cluster ServiceAccount in a pod, else a kubeconfig (`kubeconfig`, or $KUBECONFIG).
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
from pathlib import Path
from typing import AbstractSet, Any, Callable, Mapping

import kubernetes.client
import kubernetes.config
import urllib3
from kubernetes.client import ApiClient, ApiException
from ray.autoscaler.batching_node_provider import NodeData

from rayguard_node.autoscaler.scaling import groups_of, nodes_of, plan_scale, scale_patch, unconsumed
from rayguard_node.autoscaler.target import TargetUnavailable
from rayguard_node.contract.autoscaler import LABEL_CLUSTER, RAYCLUSTER_GROUP, RAYCLUSTER_PLURAL, RAYCLUSTER_VERSION

log = logging.getLogger(__name__)

MERGE_PATCH = "application/merge-patch+json"
REQUEST_TIMEOUT_S = 15.0
CONFLICT_ATTEMPTS = 5
CONFLICT_BACKOFF_S = 0.2
FIELD_MANAGER = "rayguard-autoscaler"


def api_client(provider_config: Mapping[str, Any]) -> ApiClient:
    """A client from the provider config's `kube_host` (+ `kube_token_file`), else in-cluster,
    else the kubeconfig (`kubeconfig` or $KUBECONFIG)."""
    host = provider_config.get("kube_host")
    if host:
        configuration = kubernetes.client.Configuration(host=str(host))
        token_file = provider_config.get("kube_token_file")
        if token_file:
            token = Path(str(token_file)).read_text().strip()
            configuration.api_key = {"authorization": f"Bearer {token}"}
        return ApiClient(configuration)
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        configuration = kubernetes.client.Configuration()
        kubernetes.config.load_incluster_config(client_configuration=configuration)  # refreshes its token
        return ApiClient(configuration)
    return kubernetes.config.new_client_from_config(config_file=provider_config.get("kubeconfig"))


def kube_target(provider_config: Mapping[str, Any], cluster_name: str) -> KubeTarget:
    namespace = provider_config.get("namespace")
    if not namespace:
        raise ValueError("provider.namespace: required (the RayCluster's namespace)")
    return KubeTarget(api_client(provider_config), str(namespace), cluster_name)


def _why(error: Exception) -> str:
    if isinstance(error, ApiException):
        try:
            message = json.loads(error.body or "{}").get("message")
        except (ValueError, AttributeError):
            message = None
        return f"{error.status} {error.reason}" + (f": {message}" if message else "")
    return f"{type(error).__name__}: {error}"


class KubeTarget:
    def __init__(self, client: ApiClient, namespace: str, cluster: str,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.namespace, self.cluster = namespace, cluster
        self._custom = kubernetes.client.CustomObjectsApi(client)
        self._core = kubernetes.client.CoreV1Api(client)
        self._sleep = sleep
        self._raycluster: dict[str, Any] | None = None
        self._node_types: dict[str, str] = {}
        self.conflicts = 0  # 409s retried, for tests and logs

    def _get_raycluster(self) -> dict[str, Any]:
        try:
            return dict(self._custom.get_namespaced_custom_object(
                RAYCLUSTER_GROUP, RAYCLUSTER_VERSION, self.namespace, RAYCLUSTER_PLURAL, self.cluster,
                _request_timeout=REQUEST_TIMEOUT_S))
        except (ApiException, urllib3.exceptions.HTTPError, OSError) as error:
            raise TargetUnavailable(f"get RayCluster {self.namespace}/{self.cluster}: {_why(error)}") from None

    def _list_pods(self) -> list[dict[str, Any]]:
        try:
            response = self._core.list_namespaced_pod(self.namespace, label_selector=f"{LABEL_CLUSTER}={self.cluster}",
                                                      _preload_content=False, _request_timeout=REQUEST_TIMEOUT_S)
            return list(json.loads(response.data)["items"])
        except (ApiException, urllib3.exceptions.HTTPError, OSError, ValueError, KeyError) as error:
            raise TargetUnavailable(f"list pods of {self.namespace}/{self.cluster}: {_why(error)}") from None

    def nodes(self) -> dict[str, NodeData]:
        self._raycluster = self._get_raycluster()
        nodes = nodes_of(self._list_pods())
        self._node_types = {name: data.type for name, data in nodes.items()}
        return nodes

    def unconsumed_deletions(self) -> frozenset[str]:
        return unconsumed(groups_of(self._raycluster or {}))

    def submit(self, desired: Mapping[str, int], to_delete: AbstractSet[str], reasons: Mapping[str, str]) -> None:
        raycluster = self._raycluster or self._get_raycluster()
        for attempt in range(1, CONFLICT_ATTEMPTS + 1):
            changes = plan_scale(groups_of(raycluster), self._node_types, desired, to_delete, reasons)
            if not changes:
                return
            try:
                self._raycluster = dict(self._custom.patch_namespaced_custom_object(
                    RAYCLUSTER_GROUP, RAYCLUSTER_VERSION, self.namespace, RAYCLUSTER_PLURAL, self.cluster,
                    scale_patch(raycluster, changes), field_manager=FIELD_MANAGER, _content_type=MERGE_PATCH,
                    _request_timeout=REQUEST_TIMEOUT_S))
            except ApiException as error:
                if error.status != 409 or attempt == CONFLICT_ATTEMPTS:
                    raise TargetUnavailable(f"patch RayCluster {self.namespace}/{self.cluster}: {_why(error)}") from None
                self.conflicts += 1
                delay = CONFLICT_BACKOFF_S * 2 ** (attempt - 1) * random.uniform(0.5, 1.0)
                log.info("RayCluster %s/%s changed since it was read (409); reading it again in %.2fs",
                         self.namespace, self.cluster, delay)
                self._sleep(delay)
                raycluster = self._get_raycluster()
                continue
            except (urllib3.exceptions.HTTPError, OSError) as error:
                raise TargetUnavailable(f"patch RayCluster {self.namespace}/{self.cluster}: {_why(error)}") from None
            for name, change in sorted(changes.items()):
                log.info("RayCluster %s/%s group %s: replicas %d, workersToDelete %s (%s)", self.namespace,
                         self.cluster, name, change.replicas, list(change.workers_to_delete), change.reason)
            return

"""The one module that talks to the Kubernetes API, with the official client.

get returns None on 404; create tolerates 409 (the object exists: a retry or a race); delete
tolerates 404. Every other failure becomes `KubeApiError`, whose message holds the server's
reason, never a request body (a Secret's values must not reach a log); a merge patch of a
RayCluster sends the resourceVersion it is given, so a write made in between is a 409 error,
never overwritten. Objects go in and come out as plain dicts in the API's own camelCase, the
shape the builders produce.

The client is made once at operator startup (in kopf's memo); it is synchronous, and kopf runs
the synchronous handlers that use it in its thread pool. Each request's User-Agent names the
part of the operator that made it (`kube/caller.py`).
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Callable

import kubernetes.client
import kubernetes.config
from kubernetes.client.exceptions import ApiException

from rayguard_operator import names
from rayguard_operator.errors import KubeApiError
from rayguard_operator.kube.caller import user_agent

log = logging.getLogger(__name__)

MERGE_PATCH = "application/merge-patch+json"
# Server-side apply: the API server creates the object or merges it, and records which fields
# each field manager owns. Creating through it needs `create` as well as `patch`.
APPLY_PATCH = "application/apply-patch+yaml"
TIMEOUT_SECONDS = 30


def _read(response: Any) -> Any:
    data = response.data if hasattr(response, "data") else response.read()
    return json.loads(data) if data else None


def _error(verb: str, what: str, error: ApiException) -> KubeApiError:
    message = ""
    try:
        message = str(json.loads(error.body or "{}").get("message", ""))
    except (ValueError, AttributeError):
        pass
    return KubeApiError(verb, what, error.status, str(error.reason or ""), message)


class KubeApi:
    def __init__(self, api_client: kubernetes.client.ApiClient) -> None:
        self.api_client = api_client
        # Sent with each request instead, with the operator's part added (`_call`): the client's
        # default header would override a request's own.
        self._agent = str(api_client.default_headers.pop("User-Agent", "") or "")
        self.core = kubernetes.client.CoreV1Api(api_client)
        self.custom = kubernetes.client.CustomObjectsApi(api_client)
        self.rbac = kubernetes.client.RbacAuthorizationV1Api(api_client)  # the autoscaler's Role

    @classmethod
    def from_environment(cls) -> "KubeApi":
        """In a pod: its service account. Elsewhere: $KUBECONFIG (read now, not when the
        client library was imported) or ~/.kube/config. No process-wide default is changed."""
        configuration = kubernetes.client.Configuration()
        try:
            kubernetes.config.load_incluster_config(client_configuration=configuration)
        except kubernetes.config.ConfigException:
            return cls(kubernetes.config.new_client_from_config(
                config_file=os.environ.get("KUBECONFIG") or None))
        return cls(kubernetes.client.ApiClient(configuration))

    def close(self) -> None:
        self.api_client.close()

    def _call(self, verb: str, what: str, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return _read(call(*args, _preload_content=False, _request_timeout=TIMEOUT_SECONDS,
                              _headers={"User-Agent": f"{self._agent} {user_agent()}".strip()}, **kwargs))
        except ApiException as error:
            raise _error(verb, what, error) from None

    def _get(self, what: str, call: Callable[..., Any], *args: Any) -> dict[str, Any] | None:
        try:
            return self._call("get", what, call, *args)
        except KubeApiError as error:
            if error.status == 404:
                return None
            raise

    # --- RayClusters

    def get_cluster(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._get(f"RayCluster {namespace}/{name}", self.custom.get_namespaced_custom_object,
                         names.GROUP, names.VERSION, namespace, names.PLURAL, name)

    def patch_cluster(self, namespace: str, name: str, patch: dict[str, Any]) -> None:
        """A JSON merge patch of the RayCluster (the operator clears workersToDelete with it);
        `patch` carries metadata.resourceVersion, so a concurrent write makes it a 409."""
        self._call("patch", f"RayCluster {namespace}/{name}", self.custom.patch_namespaced_custom_object,
                   names.GROUP, names.VERSION, namespace, names.PLURAL, name, patch, _content_type=MERGE_PATCH)

    def patch_cluster_status(self, namespace: str, name: str, patch: dict[str, Any]) -> None:
        self._call("patch", f"RayCluster {namespace}/{name} status",
                   self.custom.patch_namespaced_custom_object_status,
                   names.GROUP, names.VERSION, namespace, names.PLURAL, name, {"status": patch},
                   _content_type=MERGE_PATCH)

    # --- children

    def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._get(f"Secret {namespace}/{name}", self.core.read_namespaced_secret, name, namespace)

    def get_service(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._get(f"Service {namespace}/{name}", self.core.read_namespaced_service, name, namespace)

    def list_pods(self, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        result = self._call("list", f"Pods in {namespace}", self.core.list_namespaced_pod, namespace,
                            label_selector=label_selector)
        return list((result or {}).get("items") or [])

    _CREATE = {"Secret": "create_namespaced_secret", "Pod": "create_namespaced_pod",
               "Event": "create_namespaced_event", "ConfigMap": "create_namespaced_config_map",
               "ServiceAccount": "create_namespaced_service_account"}  # the head Service: `apply`
    _PATCH = {"Service": "patch_namespaced_service", "Pod": "patch_namespaced_pod",
              "Event": "patch_namespaced_event", "ConfigMap": "patch_namespaced_config_map"}
    # The autoscaler's children (rayguard_node.contract.autoscaler.autoscaler_name): read by
    # name, created, deleted; only the ConfigMap is ever patched (a Role or RoleBinding that
    # drifted is deleted and created again: roleRef is immutable, and no patch right is needed).
    _READ = {"ConfigMap": "read_namespaced_config_map", "ServiceAccount": "read_namespaced_service_account"}
    _DELETE = {"ConfigMap": "delete_namespaced_config_map",
               "ServiceAccount": "delete_namespaced_service_account"}
    _RBAC_CREATE = {"Role": "create_namespaced_role", "RoleBinding": "create_namespaced_role_binding"}
    _RBAC_READ = {"Role": "read_namespaced_role", "RoleBinding": "read_namespaced_role_binding"}
    _RBAC_DELETE = {"Role": "delete_namespaced_role", "RoleBinding": "delete_namespaced_role_binding"}

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """One of the autoscaler's children by kind and name; None when it is missing."""
        what = f"{kind} {namespace}/{name}"
        if kind in self._RBAC_READ:
            return self._get(what, getattr(self.rbac, self._RBAC_READ[kind]), name, namespace)
        return self._get(what, getattr(self.core, self._READ[kind]), name, namespace)

    def delete(self, kind: str, namespace: str, name: str) -> bool:
        """Delete one of the autoscaler's children; False when it was already gone (404)."""
        what = f"{kind} {namespace}/{name}"
        try:
            if kind in self._RBAC_DELETE:
                self._call("delete", what, getattr(self.rbac, self._RBAC_DELETE[kind]), name, namespace)
            else:
                self._call("delete", what, getattr(self.core, self._DELETE[kind]), name, namespace)
        except KubeApiError as error:
            if error.status == 404:
                return False
            raise
        return True

    def get_pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._get(f"Pod {namespace}/{name}", self.core.read_namespaced_pod, name, namespace)

    def patch_event(self, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        return self.patch("Event", namespace, name, patch)

    def create(self, obj: dict[str, Any]) -> dict[str, Any] | None:
        """Create `obj`; None when it already exists (409)."""
        kind, meta = obj["kind"], obj["metadata"]
        what = f"{kind} {meta['namespace']}/{meta['name']}"
        try:
            if kind in self._RBAC_CREATE:
                return self._call("create", what, getattr(self.rbac, self._RBAC_CREATE[kind]), meta["namespace"], obj)
            return self._call("create", what, getattr(self.core, self._CREATE[kind]), meta["namespace"], obj)
        except KubeApiError as error:
            if error.status == 409:
                log.info("%s already exists", what)
                return None
            raise

    def patch(self, kind: str, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        """A JSON merge patch."""
        return self._call("patch", f"{kind} {namespace}/{name}", getattr(self.core, self._PATCH[kind]),
                          name, namespace, patch, _content_type=MERGE_PATCH)

    def apply(self, obj: dict[str, Any], field_manager: str) -> dict[str, Any]:
        """Server-side apply of a Service as `field_manager`, forced: it takes the fields `obj`
        sets from any other manager, and drops those it applied before that `obj` leaves out."""
        meta = obj["metadata"]
        return self._call("apply", f"{obj['kind']} {meta['namespace']}/{meta['name']}",
                          self.core.patch_namespaced_service, meta["name"], meta["namespace"], obj,
                          field_manager=field_manager, force=True, _content_type=APPLY_PATCH)

    def delete_service(self, namespace: str, name: str, uid: str | None = None) -> bool:
        """Delete the Service (only the one with `uid`, when given); False when it was gone (404)."""
        body = {"preconditions": {"uid": uid}} if uid else None
        try:
            self._call("delete", f"Service {namespace}/{name}", self.core.delete_namespaced_service, name, namespace,
                       body=body)
        except KubeApiError as error:
            if error.status == 404:
                return False
            raise
        return True

    def delete_pod(self, namespace: str, name: str) -> bool:
        """Delete with the pod's own grace period; False when it was already gone (404)."""
        try:
            self._call("delete", f"Pod {namespace}/{name}", self.core.delete_namespaced_pod, name, namespace)
        except KubeApiError as error:
            if error.status == 404:
                return False
            raise
        return True

"""An in-memory SyncerApi that records every call in order, for the syncer's unit tests."""

from __future__ import annotations

import copy
import itertools
from typing import Any

from rayguard_operator.errors import KubeApiError
from rayguard_operator.reconcile.cache import ClusterCache
from testkit.kube.apply import server_side_apply

NS = "default"
NOW = "2030-01-01T00:00:00Z"
WRITES = ("create", "patch", "delete_pod", "patch_cluster_status", "apply", "delete_service", "delete",
          "patch_cluster")


def merge(target: dict[str, Any], patch: dict[str, Any]) -> None:
    """Apply a JSON merge patch in place (None deletes)."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)


class FakeApi:
    """A SyncerApi in memory. `calls` holds every call, reads and writes, in order; an Event
    create is recorded as ("event", type, reason) so that tests can see where it came.
    `refuse` maps (verb, kind) to the server's message: that write raises `KubeApiError`
    (after being recorded), as KubeApi does for a 403."""

    def __init__(self, cluster: dict[str, Any] | None) -> None:
        self.cluster = copy.deepcopy(cluster)
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}  # (kind, name), one namespace
        self.events: list[dict[str, Any]] = []
        self.calls: list[tuple[str, ...]] = []
        self.refuse: dict[tuple[str, str], str] = {}
        self.unseen: set[tuple[str, str]] = set()  # (kind, name) that get_* does not see yet
        self.clock = itertools.count(1)

    def _check(self, verb: str, kind: str, name: str) -> None:
        if (verb, kind) in self.refuse:
            raise KubeApiError(verb, f"{kind} {NS}/{name}", 403, "Forbidden", self.refuse[(verb, kind)])

    def writes(self) -> list[tuple[str, ...]]:
        return [call for call in self.calls if call[0] in WRITES or call[0] == "event"]

    # --- SyncerApi

    def _written(self) -> None:
        """A write of the RayCluster: a new resourceVersion, as the API server gives it."""
        assert self.cluster is not None
        self.cluster["metadata"]["resourceVersion"] = str(next(self.clock) + 1000)

    def get_cluster(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.calls.append(("get_cluster", name))
        return copy.deepcopy(self.cluster)

    def patch_cluster(self, namespace: str, name: str, patch: dict[str, Any]) -> None:
        """A merge patch of the RayCluster; a resourceVersion in it that is not the current one
        is a 409, as on the API server."""
        self.calls.append(("patch_cluster", name))
        self._check("patch", "RayCluster", name)
        assert self.cluster is not None
        sent = (patch.get("metadata") or {}).get("resourceVersion")
        if sent is not None and sent != self.cluster["metadata"].get("resourceVersion"):
            raise KubeApiError("patch", f"RayCluster {NS}/{name}", 409, "Conflict", "the object has been modified")
        merge(self.cluster, {k: v for k, v in patch.items() if k != "metadata"})
        self._written()

    def patch_cluster_status(self, namespace: str, name: str, patch: dict[str, Any]) -> None:
        self.calls.append(("patch_cluster_status", name))
        assert self.cluster is not None
        status = self.cluster.setdefault("status", {})
        merge(status, patch)
        self._written()

    def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.calls.append(("get_secret", name))
        return None if ("Secret", name) in self.unseen else copy.deepcopy(self.objects.get(("Secret", name)))

    def get_service(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.calls.append(("get_service", name))
        return copy.deepcopy(self.objects.get(("Service", name)))

    def list_pods(self, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        self.calls.append(("list_pods", label_selector))
        key, value = label_selector.split("=")
        return [copy.deepcopy(obj) for (kind, _), obj in sorted(self.objects.items())
                if kind == "Pod" and obj["metadata"]["labels"].get(key) == value]

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        self.calls.append(("get", kind, name))
        return copy.deepcopy(self.objects.get((kind, name)))

    def delete(self, kind: str, namespace: str, name: str) -> bool:
        self.calls.append(("delete", kind, name))
        self._check("delete", kind, name)
        return self.objects.pop((kind, name), None) is not None

    def create(self, obj: dict[str, Any]) -> dict[str, Any] | None:
        kind, name = obj["kind"], obj["metadata"]["name"]
        if kind == "Event":
            self.calls.append(("event", obj["type"], obj["reason"]))
            self._check("create", kind, name)
            self.events.append(copy.deepcopy(obj))
            return obj
        self.calls.append(("create", kind, name))
        self._check("create", kind, name)
        if (kind, name) in self.objects:
            return None  # 409
        stored = copy.deepcopy(obj)
        stored["metadata"]["creationTimestamp"] = f"2030-01-01T00:00:{next(self.clock):02d}Z"
        self.objects[(kind, name)] = stored
        return copy.deepcopy(stored)

    def patch(self, kind: str, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(("patch", kind, name))
        self._check("patch", kind, name)
        merge(self.objects[(kind, name)], patch)
        return copy.deepcopy(self.objects[(kind, name)])

    def apply(self, obj: dict[str, Any], field_manager: str) -> dict[str, Any]:
        """Server-side apply with the emulator's semantics (testkit/kube/apply.py), forced."""
        kind, name = obj["kind"], obj["metadata"]["name"]
        self.calls.append(("apply", kind, name))
        self._check("apply", kind, name)
        live = self.objects.get((kind, name))
        stored = server_side_apply(copy.deepcopy(live), obj, field_manager, True, "v1", NOW)
        if live is None:
            stored["metadata"]["uid"] = f"uid-{kind}-{next(self.clock)}"
        self.objects[(kind, name)] = stored
        return copy.deepcopy(stored)

    def delete_service(self, namespace: str, name: str, uid: str | None = None) -> bool:
        self.calls.append(("delete_service", name))
        self._check("delete", "Service", name)
        return self.objects.pop(("Service", name), None) is not None

    def delete_pod(self, namespace: str, name: str) -> bool:
        self.calls.append(("delete_pod", name))
        self._check("delete", "Pod", name)
        return self.objects.pop(("Pod", name), None) is not None


def deliver(api: FakeApi, cache: ClusterCache, name: str = "demo") -> None:
    """The watches catch up with the fake API: the cluster as it is, every pod, and the deletions."""
    if api.cluster is not None:
        cache.put_cluster(api.cluster)
    pods = {pod: obj for (kind, pod), obj in api.objects.items() if kind == "Pod"}
    for pod in cache.pod_names(NS, name) - set(pods):
        cache.remove_pod({"metadata": {"namespace": NS, "name": pod}})
    for obj in pods.values():
        cache.put_pod(obj)

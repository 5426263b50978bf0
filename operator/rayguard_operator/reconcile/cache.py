"""What the watches deliver, kept in memory, so that a reconcile pass reads no API.

kopf already watches RayClusters and the pods labelled with a cluster. Its index handlers
(`handlers/cluster.py`) put every object it delivers here, and kopf runs no handler before
both lists are in. What no watch delivers is learned from the syncer's own reads and writes
(`Known`): whether the Secret exists, the head Service as last read or written, the
autoscaler's children as last read or written, and the status as last written. None of the
Secret's values is kept.

A watch lags the operator's own writes. So that a pass never acts twice on one write (pod
names have random suffixes: a pod created but not yet delivered would be created again), the
cache keeps the syncer's expectations, as Kubernetes controllers do: a pod it created counts
as there until the watch delivers it, and a pod it deleted counts as terminating until the
watch shows it terminating or gone. An expectation lasts at most `EXPECTATION_TTL_S`.

The resync timer's pass reads the API instead (`Syncer.sync(fresh=True)`), the safety net for
an event a watch missed: kopf lists again after a broken watch, but an object deleted in
between would stay here; that pass drops the pods the API no longer lists (`listed`).

Thread-safe: kopf's event loop writes, reconcile passes read from worker threads. Pods are kept
slim (`slim_pod`); what is handed out is never changed in place, by the cache or its readers.
"""

from __future__ import annotations

import copy
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

from rayguard_operator import names

# False: no cache and no coalescing; every pass reads the API and each pod event runs its own
# pass, as before the cache. Only bench/reconcile.py sets it (its "before" mode), before kopf
# imports the handlers.
ENABLED = True
# How long an expectation waits for the watch (Kubernetes' controllers wait 5 minutes too).
EXPECTATION_TTL_S = 300.0

Key = tuple[str, str]  # (namespace, name)
Pod = dict[str, Any]

_POD_META = ("name", "namespace", "uid", "labels", "annotations", "creationTimestamp", "deletionTimestamp",
             "resourceVersion")
_POD_STATUS = ("phase", "podIP", "conditions", "containerStatuses")


def slim_pod(body: Mapping[str, Any]) -> Pod:
    """What reconcile, status and OOM counting read of a pod (a pod's spec is most of its size)."""
    meta, status = body.get("metadata") or {}, body.get("status") or {}
    containers = (body.get("spec") or {}).get("containers") or []
    return copy.deepcopy({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {k: meta[k] for k in _POD_META if k in meta},
        "spec": {"containers": [{"name": c.get("name"), "resources": c.get("resources") or {}}
                                for c in containers]},
        "status": {k: status[k] for k in _POD_STATUS if k in status},
    })


def _terminating(pod: Mapping[str, Any]) -> bool:
    return bool(pod["metadata"].get("deletionTimestamp"))


def overlay(pods: Mapping[str, Pod], created: Mapping[str, Pod], deleted: Mapping[str, str]) -> tuple[Pod, ...]:
    """The pods a pass sees, by name: `pods`, plus `created` where `pods` lacks them, with those in
    `deleted` (name -> deletion time) marked terminating. Pure."""
    view = dict(pods)
    for name, pod in created.items():
        view.setdefault(name, pod)
    for name, when in deleted.items():
        pod = view.get(name)
        if pod is not None and not _terminating(pod):
            view[name] = {**pod, "metadata": {**pod["metadata"], "deletionTimestamp": when}}
    return tuple(view[name] for name in sorted(view))


@dataclass(frozen=True)
class Known:
    """What the syncer learned about a cluster's children and status; None: not known yet."""

    secret: bool | None = None
    service: dict[str, Any] | None = None
    service_known: bool = False
    status: dict[str, Any] | None = None
    # The autoscaler's children: kind -> as last read or written, or None when it does not
    # exist; a kind not in it is not known (reconcile/autoscaler.py).
    autoscaler: Mapping[str, dict[str, Any] | None] = field(default_factory=dict)


@dataclass
class _Record:
    """Known, and the expectations, of one cluster (by uid: a new cluster of the same name
    starts afresh)."""

    uid: str
    known: Known = field(default_factory=Known)
    created: dict[str, tuple[Pod, float]] = field(default_factory=dict)  # name -> (pod, since)
    deleted: dict[str, tuple[str, float]] = field(default_factory=dict)  # name -> (when, since)


class ClusterCache:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._clusters: dict[Key, dict[str, Any]] = {}
        self._pods: dict[Key, dict[str, Pod]] = {}  # (namespace, cluster) -> pod name -> pod
        self._home: dict[Key, str] = {}  # (namespace, pod) -> its cluster
        self._records: dict[Key, _Record] = {}

    # --- fed by the watches ---------------------------------------------------------------

    def put_cluster(self, body: Mapping[str, Any]) -> None:
        meta = body["metadata"]
        copied = copy.deepcopy(dict(body))
        with self._lock:
            self._clusters[(meta["namespace"], meta["name"])] = copied

    def forget_cluster(self, namespace: str, name: str) -> None:
        """The cluster is gone. Its pods leave with their own deletions."""
        with self._lock:
            self._clusters.pop((namespace, name), None)
            self._records.pop((namespace, name), None)

    def put_pod(self, body: Mapping[str, Any]) -> None:
        pod = slim_pod(body)
        meta = pod["metadata"]
        namespace, name = meta.get("namespace", ""), meta["name"]
        cluster = (meta.get("labels") or {}).get(names.LABEL_CLUSTER)
        with self._lock:
            self._drop(namespace, name)  # from the cluster it had, should its label have changed
            if cluster is None:
                return
            self._pods.setdefault((namespace, cluster), {})[name] = pod
            self._home[(namespace, name)] = cluster
            record = self._records.get((namespace, cluster))
            if record is not None:
                record.created.pop(name, None)
                if _terminating(pod):
                    record.deleted.pop(name, None)

    def remove_pod(self, body: Mapping[str, Any]) -> None:
        meta = body["metadata"]
        namespace, name = meta.get("namespace", ""), meta["name"]
        with self._lock:
            cluster = self._drop(namespace, name)
            record = self._records.get((namespace, cluster)) if cluster is not None else None
            if record is not None:
                record.created.pop(name, None)
                record.deleted.pop(name, None)

    def _drop(self, namespace: str, name: str) -> str | None:
        cluster = self._home.pop((namespace, name), None)
        if cluster is not None:
            pods = self._pods.get((namespace, cluster), {})
            pods.pop(name, None)
            if not pods:
                self._pods.pop((namespace, cluster), None)
        return cluster

    # --- read by reconcile passes -------------------------------------------------------------

    def cluster(self, namespace: str, name: str) -> dict[str, Any] | None:
        with self._lock:
            return self._clusters.get((namespace, name))

    def pods(self, namespace: str, cluster: str) -> tuple[Pod, ...]:
        """The cluster's pods as the watch delivered them, with the expectations laid over."""
        with self._lock:
            cached = dict(self._pods.get((namespace, cluster), {}))
            record = self._records.get((namespace, cluster))
            if record is None:
                return overlay(cached, {}, {})
            self._expire(record)
            return overlay(cached, {n: p for n, (p, _) in record.created.items()},
                           {n: when for n, (when, _) in record.deleted.items()})

    def pod(self, namespace: str, cluster: str, name: str) -> Pod | None:
        """One of the cluster's pods as the watch delivered it (slim); None if not delivered."""
        with self._lock:
            return self._pods.get((namespace, cluster), {}).get(name)

    def pod_names(self, namespace: str, cluster: str) -> frozenset[str]:
        with self._lock:
            return frozenset(self._pods.get((namespace, cluster), {}))

    def known(self, namespace: str, name: str, uid: str) -> Known:
        with self._lock:
            record = self._records.get((namespace, name))
            return record.known if record is not None and record.uid == uid else Known()

    def expecting(self, namespace: str, name: str) -> int:
        """Expectations the watch has not met yet (for tests and logs)."""
        with self._lock:
            record = self._records.get((namespace, name))
            return 0 if record is None else len(record.created) + len(record.deleted)

    # --- learned from the syncer's own reads and writes ---------------------------------------

    def learn(self, namespace: str, name: str, uid: str, **known: Any) -> None:
        """Replace fields of `Known` (secret, service with service_known, status)."""
        with self._lock:
            record = self._record(namespace, name, uid)
            record.known = Known(**{**record.known.__dict__, **known})

    def expect_created(self, namespace: str, cluster: str, uid: str, pod: Mapping[str, Any]) -> None:
        slim = slim_pod(pod)
        name = slim["metadata"]["name"]
        with self._lock:
            if name not in self._pods.get((namespace, cluster), {}):  # else the watch was first
                self._record(namespace, cluster, uid).created[name] = (slim, self.clock())

    def expect_deleted(self, namespace: str, cluster: str, uid: str, name: str, when: str) -> None:
        with self._lock:
            record = self._record(namespace, cluster, uid)
            record.created.pop(name, None)
            cached = self._pods.get((namespace, cluster), {}).get(name)
            if cached is None or not _terminating(cached):
                # Absent too: the watch may not have delivered its creation yet.
                record.deleted[name] = (when, self.clock())

    def listed(self, namespace: str, cluster: str, before: frozenset[str], listed: Iterable[str]) -> None:
        """After a full read: the cached pods (`before`: those cached before the list was asked
        for) and the expectations whose pod the API did not list are gone. Call it under the
        cluster's lock, so that no expectation is newer than the list."""
        present = set(listed)
        with self._lock:
            for name in before - present:
                if self._home.get((namespace, name)) == cluster:
                    self._drop(namespace, name)
            record = self._records.get((namespace, cluster))
            if record is not None:
                for table in (record.created, record.deleted):
                    for name in [n for n in table if n not in present]:
                        del table[name]

    def _record(self, namespace: str, name: str, uid: str) -> _Record:
        record = self._records.get((namespace, name))
        if record is None or record.uid != uid:
            record = self._records[(namespace, name)] = _Record(uid)
        return record

    def _expire(self, record: _Record) -> None:
        oldest = self.clock() - EXPECTATION_TTL_S
        for table in (record.created, record.deleted):
            for name in [n for n, (_, since) in table.items() if since < oldest]:
                del table[name]

"""What a pass reads before it plans: the `Observed` snapshot of one cluster's children.

From the cache (`reconcile/cache.py`) where the watches deliver (the pods) or the syncer has
learned (the Secret, the head Service, the autoscaler's children); from the API what is not
known yet. The resync timer's pass (`cached=False` with a cache) reads the Secret, the head
Service, the pods and, for an autoscaled cluster, its four autoscaler children again: the
safety net against a change no watch reports. A cluster without autoscaling needs to know only
whether any of those children is left over from when it was on. While the syncer knows them
(it made or read them), its own deletes say so; otherwise (an operator restarted since) a pod
that still runs the autoscaler sidecar (the head, until it is replaced) is the sign, and then it
reads their marker, the ConfigMap, once. So a cluster that never autoscaled reads none of them.
Without a cache every pass reads all it needs.
"""

from __future__ import annotations

from typing import Any

from rayguard_node.contract.autoscaler import CONTAINER, autoscaler_name

from rayguard_operator import names
from rayguard_operator.kube.protocols import SyncerApi
from rayguard_operator.reconcile.action import Observed
from rayguard_operator.reconcile.autoscaler import KINDS, MARKER
from rayguard_operator.reconcile.cache import ClusterCache
from rayguard_operator.spec.model import ClusterModel


def runs_sidecar(pods: tuple[dict[str, Any], ...]) -> bool:
    """Whether a pod (the head of a cluster that autoscaled) still runs the autoscaler sidecar."""
    return any(c.get("name") == CONTAINER for p in pods for c in (p.get("spec") or {}).get("containers") or [])


def _autoscaler(api: SyncerApi, cache: ClusterCache | None, cluster: ClusterModel, uid: str, cached: bool,
                pods: tuple[dict[str, Any], ...]) -> dict[str, dict[str, Any] | None]:
    ns, name = cluster.namespace, cluster.name
    enabled = cluster.autoscaling.enabled
    wanted = KINDS if enabled else (MARKER,) if runs_sidecar(pods) else ()
    known = {} if cache is None else dict(cache.known(ns, name, uid).autoscaler)
    if cache is None or (enabled and not cached):
        reading = wanted
    else:
        reading = tuple(kind for kind in wanted if kind not in known)
    for kind in reading:
        known[kind] = api.get(kind, ns, autoscaler_name(name))
    if cache is not None and reading:
        cache.learn(ns, name, uid, autoscaler=known)
    return known


def observe(api: SyncerApi, cache: ClusterCache | None, cluster: ClusterModel, uid: str, cached: bool) -> Observed:
    """The snapshot a pass plans against (`cached`: the pass reads from the cache)."""
    ns, name = cluster.namespace, cluster.name
    if cache is None:
        secret = api.get_secret(ns, names.secret_name(name))
        service = api.get_service(ns, names.head_service_name(name))
        pods = tuple(api.list_pods(ns, names.cluster_selector(name)))
        return Observed(secret=secret, service=service, pods=pods,
                        autoscaler=_autoscaler(api, cache, cluster, uid, cached, pods))
    if cached:
        known = cache.known(ns, name, uid)
        if known.secret is None:
            secret = api.get_secret(ns, names.secret_name(name))
            cache.learn(ns, name, uid, secret=secret is not None)
            exists = secret is not None
        else:
            exists = known.secret
        service = known.service
        if not known.service_known:
            service = api.get_service(ns, names.head_service_name(name))
            cache.learn(ns, name, uid, service=service, service_known=True)
        pods = cache.pods(ns, name)
        return Observed(secret={"metadata": {"name": names.secret_name(name)}} if exists else None,
                        service=service, pods=pods, autoscaler=_autoscaler(api, cache, cluster, uid, cached, pods))
    before = cache.pod_names(ns, name)
    secret = api.get_secret(ns, names.secret_name(name))
    service = api.get_service(ns, names.head_service_name(name))
    pods = tuple(api.list_pods(ns, names.cluster_selector(name)))
    observed = Observed(secret=secret, service=service, pods=pods,
                        autoscaler=_autoscaler(api, cache, cluster, uid, cached, pods))
    cache.learn(ns, name, uid, secret=observed.secret is not None, service=observed.service,
                service_known=True)
    cache.listed(ns, name, before, (p["metadata"]["name"] for p in observed.pods))
    return observed

"""Thin kopf handlers: each names the cluster and hands it to `Syncer.sync`, or feeds the cache.

Triggers: create, update and resume (one `ensure`), a timer at the resync interval, and
events of pods labelled with a cluster, so that a deleted, failed or newly ready pod is acted
on at once rather than at the next resync. Pod events are coalesced per cluster
(`reconcile/coalesce.py`): a burst of them is one pass over the cache, not one pass each.

The cache (`reconcile/cache.py`) is fed by two kopf indexes, over RayClusters and over the
pods labelled with a cluster: kopf calls index handlers first for every object it is told
about, and starts no other handler before both first lists are in, so a pass never sees a
partial cache. Their deletions come through the event handlers. The resync timer reads the
API afresh (`fresh=True`): the safety net against an event a watch missed, cheap at its
interval; its first tick waits an interval, as `ensure` has just passed over the cluster.

On deletion, `drain` only waits for a pass in flight; owner references let the API server
collect the children. Handlers return None: the status has no room for kopf's handler
results, and rayguard writes its own.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf

from rayguard_operator import names
from rayguard_operator.errors import KubeApiError
from rayguard_operator.handlers.startup import SETTINGS, run_pass
from rayguard_operator.reconcile import cache

RETRY_DELAY_SECONDS = 10

log = logging.getLogger(__name__)


@kopf.on.resume(names.GROUP, names.VERSION, names.PLURAL)
@kopf.on.create(names.GROUP, names.VERSION, names.PLURAL)
@kopf.on.update(names.GROUP, names.VERSION, names.PLURAL)
def ensure(namespace: str, name: str, memo: kopf.Memo, **_: Any) -> None:
    try:
        result = memo.syncer.sync(namespace, name)
    except KubeApiError as error:
        raise kopf.TemporaryError(str(error), delay=RETRY_DELAY_SECONDS) from None
    if result is None:
        return None
    if not result.valid:
        # Status and the InvalidSpec event are written; retrying cannot help until the spec changes.
        raise kopf.PermanentError(result.error)
    if result.error:
        raise kopf.TemporaryError(result.error, delay=RETRY_DELAY_SECONDS)
    return None


@kopf.on.delete(names.GROUP, names.VERSION, names.PLURAL, optional=True)
def drain(namespace: str, name: str, memo: kopf.Memo, **_: Any) -> None:
    """Before kopf releases its finalizer, let a pass already under way finish. Every later
    pass sees the deletion and writes nothing, so no child outlives its cluster."""
    memo.syncer.drain(namespace, name)


@kopf.timer(names.GROUP, names.VERSION, names.PLURAL, interval=SETTINGS.resync_seconds,
            initial_delay=SETTINGS.resync_seconds if cache.ENABLED else None, backoff=SETTINGS.resync_seconds)
def resync(namespace: str, name: str, memo: kopf.Memo, **_: Any) -> None:
    """Periodic reconcile from a fresh read. An API failure is logged and contained: the next
    tick retries (kopf's own backoff after a failed timer is a minute, whatever the interval)."""
    run_pass(memo.syncer, namespace, name, fresh=True)


@kopf.index(names.GROUP, names.VERSION, names.PLURAL)
async def cached_clusters(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    if memo.cache is not None:
        memo.cache.put_cluster(body)


@kopf.on.event(names.GROUP, names.VERSION, names.PLURAL,
               when=lambda event, **_: event.get("type") == "DELETED")  # type: ignore[misc]
async def cluster_deleted(namespace: str, name: str, memo: kopf.Memo, **_: Any) -> None:
    if memo.cache is not None:
        memo.cache.forget_cluster(namespace, name)


@kopf.index("v1", "pods", labels={names.LABEL_CLUSTER: kopf.PRESENT})
async def cached_pods(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    if memo.cache is not None:
        memo.cache.put_pod(body)


@kopf.on.event("v1", "pods", labels={names.LABEL_CLUSTER: kopf.PRESENT})
async def pod_event(event: kopf.RawEvent, body: kopf.Body, namespace: str, labels: dict[str, str],
                    memo: kopf.Memo, **_: Any) -> None:
    """A pod of a cluster was added, changed or deleted: reconcile its cluster."""
    cluster = labels[names.LABEL_CLUSTER]
    if memo.cache is not None and event.get("type") == "DELETED":
        memo.cache.remove_pod(body)
    if memo.coalescer is not None:
        memo.coalescer.touch((namespace, cluster))
    else:  # as before the cache: a pass per event, in a thread
        await asyncio.to_thread(run_pass, memo.syncer, namespace, cluster)

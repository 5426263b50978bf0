"""Thin kopf handlers: each names the cluster and hands it to `Syncer.sync`.

Triggers: create, update and resume (one `ensure`), a timer at the resync interval, and
events of pods labelled with a cluster, so that a deleted, failed or newly ready pod is acted
on at once rather than at the next resync. On deletion, `drain` only waits for a pass in
flight; owner references let the API server collect the children. Handlers return None: the
status has no room for kopf's handler results, and rayguard writes its own.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from rayguard_operator import names
from rayguard_operator.errors import KubeApiError
from rayguard_operator.handlers.startup import SETTINGS

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
            backoff=SETTINGS.resync_seconds)
def resync(namespace: str, name: str, memo: kopf.Memo, **_: Any) -> None:
    """Periodic reconcile. An API failure is logged and contained: the next tick retries
    (kopf's own backoff after a failed timer is a minute, whatever the interval)."""
    _contained(memo, namespace, name)


@kopf.on.event("v1", "pods", labels={names.LABEL_CLUSTER: kopf.PRESENT})
def pod_event(namespace: str, labels: dict[str, str], memo: kopf.Memo, **_: Any) -> None:
    """A pod of a cluster was added, changed or deleted: reconcile its cluster."""
    _contained(memo, namespace, labels[names.LABEL_CLUSTER])


def _contained(memo: kopf.Memo, namespace: str, name: str) -> None:
    try:
        memo.syncer.sync(namespace, name)
    except KubeApiError as error:
        log.warning("RayCluster %s/%s: %s; retrying at the next resync", namespace, name, error)


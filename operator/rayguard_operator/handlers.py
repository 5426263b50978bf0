"""Thin kopf handlers: each names the cluster and hands it to `Syncer.sync`.

Triggers: create, update and resume (one `ensure`), a timer at the resync interval, and
events of pods labelled with a cluster, so that a deleted, failed or newly ready pod is acted
on at once rather than at the next resync. On deletion, `drain` only waits for a pass in
flight; owner references let the API server collect the children. Handlers return None: the
status has no room for kopf's handler results, and rayguard writes its own.

Settings are read from the environment when this module is imported, because the timer's
interval is a decorator argument.
"""

from __future__ import annotations

import importlib
import logging
import sys
from typing import Any

import kopf

from . import names
from .errors import KubeApiError
from .kube_api import KubeApi
from .settings import OperatorSettings
from .oom_events import EventAggregator
from .oom_tracker import OomTracker
from .sync import Syncer

SETTINGS = OperatorSettings.from_env()
RETRY_DELAY_SECONDS = 10

log = logging.getLogger(__name__)


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.persistence.finalizer = names.FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=names.KOPF_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=names.KOPF_PREFIX, key="last-handled-configuration")
    # rayguard posts its own events (events.py); kopf 1.45 posts none of its log lines.
    # A resync pass in flight when its cluster is deleted keeps kopf's finalizer until kopf
    # looks again; by default that is a minute later.
    settings.background.cancellation_polling = 1.0
    settings.watching.server_timeout = 600
    settings.watching.client_timeout = 660
    settings.watching.connect_timeout = 30
    api = KubeApi.from_environment()
    memo.oom_tracker = OomTracker(api, EventAggregator(api))
    memo.syncer = Syncer(api, SETTINGS, count_ooms=memo.oom_tracker.count_pod_ooms)
    log.info("rayguard operator: node image %s, resync every %ss, namespaces %s", SETTINGS.node_image,
             SETTINGS.resync_seconds, ",".join(SETTINGS.namespaces) or "all")


@kopf.on.cleanup()
def close(memo: kopf.Memo, **_: Any) -> None:
    syncer = getattr(memo, "syncer", None)
    if syncer is not None:
        syncer.api.close()


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


# The OOM report daemon lives in its own module; reloading this one (a fresh kopf registry)
# must register it again too.
if f"{__package__}.oom_handlers" in sys.modules:
    importlib.reload(sys.modules[f"{__package__}.oom_handlers"])
else:
    from . import oom_handlers  # noqa: F401,E402

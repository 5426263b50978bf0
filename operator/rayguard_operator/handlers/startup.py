"""Operator start and stop: kopf's persistence and watch settings, the shared client, the
reconciler with its cache and coalescer, and the OOM tracker (kept in kopf's memo for the
other handlers).

Settings are read from the environment when this module is imported, because the resync
timer's interval in `cluster.py` is a decorator argument.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

import kopf

from rayguard_operator import names
from rayguard_operator.errors import KubeApiError
from rayguard_operator.kube.api import KubeApi
from rayguard_operator.metrics import MetricsServer, OperatorMetrics
from rayguard_operator.oom.counts import uncounted
from rayguard_operator.oom.events import EventAggregator
from rayguard_operator.oom.tracker import OomTracker
from rayguard_operator.reconcile import cache
from rayguard_operator.reconcile.coalesce import Coalescer
from rayguard_operator.reconcile.syncer import Syncer
from rayguard_operator.settings import OperatorSettings

SETTINGS = OperatorSettings.from_env()

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
    memo.metrics = OperatorMetrics()
    memo.metrics_server = None
    port = OperatorSettings.from_env().metrics_port  # read now: an in-process restart may change it
    if port:
        try:
            memo.metrics_server = MetricsServer(memo.metrics, port)
            log.info("rayguard operator: metrics on :%d/metrics", port)
        except OSError as error:  # reconciling matters more than being scraped
            log.error("rayguard operator: no metrics, port %d: %s", port, error)
    memo.cache = cache.ClusterCache() if cache.ENABLED else None
    memo.oom_tracker = OomTracker(api, EventAggregator(api), metrics=memo.metrics, cache=memo.cache)
    memo.syncer = Syncer(api, SETTINGS, count_ooms=fresh_oom_counter(api, memo.oom_tracker), cache=memo.cache,
                         metrics=memo.metrics)
    syncer = memo.syncer
    memo.coalescer = Coalescer(lambda key, started: run_pass(syncer, *key, started=started)) \
        if cache.ENABLED else None
    log.info("rayguard operator: node image %s, resync every %ss, namespaces %s, %s", SETTINGS.node_image,
             SETTINGS.resync_seconds, ",".join(SETTINGS.namespaces) or "all",
             "reading from the watches' cache" if cache.ENABLED else "reading the API on every pass")


@kopf.on.cleanup()
async def close(memo: kopf.Memo, **_: Any) -> None:
    coalescer = getattr(memo, "coalescer", None)
    if coalescer is not None:
        await coalescer.close()
    syncer = getattr(memo, "syncer", None)
    if syncer is not None:
        syncer.api.close()
    server = getattr(memo, "metrics_server", None)
    if server is not None:
        server.close()


def run_pass(syncer: Syncer, namespace: str, name: str, fresh: bool = False,
             started: Callable[[], None] | None = None) -> None:
    """A pass no kopf handler waits for: an API failure is logged, and the next event or
    resync tries again."""
    try:
        syncer.sync(namespace, name, fresh, started)
    except KubeApiError as error:
        log.warning("RayCluster %s/%s: %s; retrying at the next resync", namespace, name, error)


def fresh_oom_counter(api: KubeApi, tracker: OomTracker) -> Callable[[str, str, tuple[dict[str, Any], ...]], int]:
    """The tracker's `count_pod_ooms`, given a fresh read of each pod that shows an uncounted
    OOM kill: the cache may not have the pod annotation that the last count wrote yet."""
    def count(namespace: str, name: str, pods: tuple[dict[str, Any], ...]) -> int:
        fresh = tuple(api.get_pod(namespace, p["metadata"]["name"]) if uncounted(p) else p for p in pods)
        return tracker.count_pod_ooms(namespace, name, tuple(p for p in fresh if p is not None))
    return count

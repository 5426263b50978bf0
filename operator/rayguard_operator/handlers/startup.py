"""Operator start and stop: kopf's persistence and watch settings, the shared client, the
reconciler and the OOM tracker (kept in kopf's memo for the other handlers).

Settings are read from the environment when this module is imported, because the resync
timer's interval in `cluster.py` is a decorator argument.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from rayguard_operator import names
from rayguard_operator.kube.api import KubeApi
from rayguard_operator.oom.events import EventAggregator
from rayguard_operator.oom.tracker import OomTracker
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
    memo.oom_tracker = OomTracker(api, EventAggregator(api))
    memo.syncer = Syncer(api, SETTINGS, count_ooms=memo.oom_tracker.count_pod_ooms)
    log.info("rayguard operator: node image %s, resync every %ss, namespaces %s", SETTINGS.node_image,
             SETTINGS.resync_seconds, ",".join(SETTINGS.namespaces) or "all")


@kopf.on.cleanup()
def close(memo: kopf.Memo, **_: Any) -> None:
    syncer = getattr(memo, "syncer", None)
    if syncer is not None:
        syncer.api.close()

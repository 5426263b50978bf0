"""kopf handlers for OOM surfacing: one report-stream daemon per RayCluster.

Containers that Kubernetes OOMKilled are counted by the reconcile pass (`Syncer`), which
sees every pod, and before it replaces a Failed pod. Reports from the runtimes arrive
through the head Redis stream, read here by an async daemon per cluster so that one slow
or dead head never delays another.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf

from rayguard_node.contract.reports import Report

from rayguard_operator import names
from rayguard_operator.errors import KubeApiError
from rayguard_operator.oom.stream import BLOCK_MS, RedisTarget, follow, redis_target

log = logging.getLogger(__name__)
START_OF_STREAM = "0-0"


# On stopping, kopf first only signals `stopped` for `cancellation_backoff` seconds (the
# follower sees it after at most one blocking read), and cancels the daemon after that.
@kopf.daemon(names.GROUP, names.VERSION, names.PLURAL, cancellation_backoff=BLOCK_MS / 1000 + 3,
             cancellation_timeout=10.0)
async def follow_oom_reports(namespace: str, name: str, body: kopf.Body, stopped: kopf.DaemonStopped,
                             memo: kopf.Memo, **_: Any) -> None:
    api, tracker = memo.syncer.api, memo.oom_tracker
    last_id = str(((body.get("status") or {}).get("oom") or {}).get("lastReportId") or START_OF_STREAM)

    async def target() -> RedisTarget | None:
        service = await asyncio.to_thread(api.get_service, namespace, names.head_service_name(name))
        secret = await asyncio.to_thread(api.get_secret, namespace, names.secret_name(name))
        return redis_target(service, secret, namespace)

    async def handle(entries: list[tuple[str, Report]], _newest: str) -> bool:
        try:
            return await asyncio.to_thread(tracker.count_reports, namespace, name, entries)
        except KubeApiError as error:  # not counted: the same entries are read again next time
            log.warning("RayCluster %s/%s: could not count OOM reports yet: %s", namespace, name, error)
            await asyncio.sleep(1)
            return False

    async def flush_events() -> None:
        if tracker.aggregator.pending_count:
            await asyncio.to_thread(tracker.flush_events, name)

    log.info("RayCluster %s/%s: following OOM reports after %s", namespace, name, last_id)
    try:
        await follow(target, last_id, handle, stopped.is_set, f"RayCluster {namespace}/{name}",
                     after_read=flush_events)
    finally:
        # Stopping (the operator exits, or the cluster is gone), even when cancelled while
        # waiting out a backoff: Events held back by the rate limit would be lost with this
        # process (status.oom already has them).
        if tracker.aggregator.pending_count:
            await asyncio.to_thread(tracker.flush_events, name, True)

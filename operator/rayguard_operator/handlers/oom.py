"""kopf handlers for OOM surfacing: one report-stream daemon per RayCluster.

Containers that Kubernetes OOMKilled are counted by the reconcile pass (`Syncer`), which
sees every pod, and before it replaces a Failed pod. Reports from the runtimes arrive
through the head Redis stream, read here by an async daemon per cluster so that one slow
or dead head never delays another. The daemons' blocking calls (reading the head Service and
Secret once per connection, counting, posting Events) share one pool of `RAYGUARD_OPERATOR_OOM_THREADS` threads
(`oom/workers.py`), made at startup and closed at cleanup, after every daemon has stopped:
counting a batch (status first, then the RayCluster's Events) in its urgent lane, the Events on
pods and those held back by the rate limit in its later lane.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf

from rayguard_node.contract.reports import STREAM_KEY, Report

from rayguard_operator import names
from rayguard_operator.errors import KubeApiError, SpecError
from rayguard_operator.gcs_redis import CredentialsUnavailable, endpoint
from rayguard_operator.kube import caller
from rayguard_operator.oom.stream import BLOCK_MS, RedisTarget, follow, redis_target
from rayguard_operator.oom.workers import LATER, OomWorkers
from rayguard_operator.settings import OperatorSettings
from rayguard_operator.spec.gcs import parse_gcs

log = logging.getLogger(__name__)
START_OF_STREAM = "0-0"


def stream_id_ms(stream_id: str) -> int | None:
    """A Redis stream id is `<ms since the epoch>-<sequence>`."""
    head = stream_id.split("-", 1)[0]
    return int(head) if head.isdigit() else None


@kopf.on.startup()
def start_oom_workers(memo: kopf.Memo, **_: Any) -> None:
    # Read now rather than at import (as startup.SETTINGS is): `rayguard operator` has
    # already refused a bad value, and the operator started again in-process sees a new one.
    memo.oom_workers = OomWorkers(OperatorSettings.from_env().oom_threads)
    log.info("OOM surfacing: %d threads for status and Event writes", memo.oom_workers.threads)


# kopf runs cleanup after the daemons are gone, their last Event flush included.
@kopf.on.cleanup()
def stop_oom_workers(memo: kopf.Memo, **_: Any) -> None:
    workers = getattr(memo, "oom_workers", None)
    if workers is not None:
        workers.close()


# On stopping, kopf first only signals `stopped` for `cancellation_backoff` seconds (the
# follower sees it after at most one blocking read), and cancels the daemon after that.
@kopf.daemon(names.GROUP, names.VERSION, names.PLURAL, cancellation_backoff=BLOCK_MS / 1000 + 3,
             cancellation_timeout=10.0)
async def follow_oom_reports(namespace: str, name: str, body: kopf.Body, stopped: kopf.DaemonStopped,
                             memo: kopf.Memo, **_: Any) -> None:
    api, tracker, workers = memo.syncer.api, memo.oom_tracker, memo.oom_workers
    metrics = getattr(memo, "metrics", None)
    if metrics is not None:
        metrics.watch_held_back(namespace, name, lambda: tracker.aggregator.pending_for(name))
    last_id = str(((body.get("status") or {}).get("oom") or {}).get("lastReportId") or START_OF_STREAM)

    uid = str(body.get("metadata", {}).get("uid", ""))

    async def target() -> RedisTarget | None:
        try:
            gcs = parse_gcs((body.get("spec") or {}).get("gcsFaultTolerance"), uid)
        except SpecError:
            return None  # the syncer reports the invalid spec; nothing to follow until it is fixed
        if gcs is not None:  # the reports are in the external Redis, under the cluster's prefix
            try:
                where = await workers.run(endpoint, gcs, namespace, api.get_secret)
            except CredentialsUnavailable as error:
                log.info("RayCluster %s/%s: external Redis credentials: %s", namespace, name, error)
                return None
            return RedisTarget(where.host, where.port, where.password, where.username,
                               stream_key=gcs.key_prefix + STREAM_KEY)
        cache = getattr(memo, "cache", None)
        if cache is not None:  # until the syncer has made (or seen) both, there is nothing to read
            known = cache.known(namespace, name, uid)
            if not known.secret or known.service is None:
                return None
        service = await workers.run(api.get_service, namespace, names.head_service_name(name))
        secret = await workers.run(api.get_secret, namespace, names.secret_name(name))
        return redis_target(service, secret, namespace)

    async def handle(entries: list[tuple[str, Report]], _newest: str) -> bool:
        if metrics is not None and entries:  # the oldest report not handled yet: its id's time
            metrics.set_stream_lag(namespace, name, stream_id_ms(entries[0][0]))
        try:
            counted = await workers.run(tracker.count_reports, namespace, name, entries)
        except KubeApiError as error:  # not counted: the same entries are read again next time
            log.warning("RayCluster %s/%s: could not count OOM reports yet: %s", namespace, name, error)
            await asyncio.sleep(1)
            return False
        if counted:  # after every cluster's counting that waits, which posts the RayClusters' Events
            await workers.run(tracker.post_pod_events, namespace, name, entries, lane=LATER)
            if metrics is not None:
                metrics.set_stream_lag(namespace, name, None)
        return counted

    async def flush_events() -> None:  # only this cluster's: the others' followers see to theirs
        if tracker.aggregator.pending_for(name):
            await workers.run(tracker.flush_events, name, lane=LATER)

    log.info("RayCluster %s/%s: following OOM reports after %s", namespace, name, last_id)
    with caller.calling_as(caller.OOM):  # this task's API calls (workers.run copies the context)
        try:
            await follow(target, last_id, handle, stopped.is_set, f"RayCluster {namespace}/{name}",
                         after_read=flush_events)
        finally:
            # Stopping (the operator exits, or the cluster is gone), even when cancelled while
            # waiting out a backoff: Events held back by the rate limit would be lost with this
            # process (status.oom already has them).
            if tracker.aggregator.pending_for(name):
                await workers.run(tracker.flush_events, name, True)
            tracker.forget(namespace, name)

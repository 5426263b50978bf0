"""kopf handler for GCS fault tolerance: on deletion, remove the cluster's keys from the
external Redis before the finalizer goes (README, "GCS fault tolerance").

Only a RayCluster whose spec names an external Redis gets the finalizer for this (kopf adds it
for the handler's `when`). The keys are Ray's GCS tables and rayguard's reports and ledger,
all under `RAY<namespace>@` (`gcs_redis.delete_namespace`: SCAN and UNLINK in batches). A Redis
that cannot be reached, or credentials that are gone, delay the deletion: a Warning Event each
attempt, a retry every `RETRY_DELAY_S`, and after `MAX_ATTEMPTS` the finalizer is released with
a last Warning that names the prefix left behind. The annotation
`rayguard.dev/skip-external-redis-cleanup: "true"` skips the cleanup.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf
import redis

from rayguard_operator import names
from rayguard_operator.errors import KubeApiError, SpecError
from rayguard_operator.gcs_redis import CredentialsUnavailable, connect, delete_namespace, endpoint
from rayguard_operator.manifests import events
from rayguard_operator.spec.gcs import parse_gcs

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 10
RETRY_DELAY_S = 30


def _configured(spec: kopf.Spec, **_: Any) -> bool:
    return bool(((spec or {}).get("gcsFaultTolerance") or {}).get("redisAddress"))


def skips_cleanup(annotations: Any) -> bool:
    return str((annotations or {}).get(names.ANNOTATION_SKIP_REDIS_CLEANUP, "")).strip().lower() == "true"


@kopf.on.delete(names.GROUP, names.VERSION, names.PLURAL, when=_configured)
def clean_external_redis(namespace: str, name: str, body: kopf.Body, retry: int, memo: kopf.Memo,
                         **_: Any) -> None:
    meta, syncer = body.get("metadata") or {}, memo.syncer
    if skips_cleanup(meta.get("annotations")):
        log.info("RayCluster %s/%s: %s is set; the external Redis keeps its keys", namespace, name,
                 names.ANNOTATION_SKIP_REDIS_CLEANUP)
        return
    try:
        gcs = parse_gcs((body.get("spec") or {}).get("gcsFaultTolerance"), str(meta.get("uid") or ""))
    except SpecError as error:  # never valid, so never used: nothing of it is in the Redis
        log.info("RayCluster %s/%s: no external Redis cleanup, the spec is invalid: %s", namespace, name, error)
        return
    if gcs is None:
        return
    where = f"{gcs.redis_address} (keys {gcs.key_prefix}*)"
    try:
        target = endpoint(gcs, namespace, syncer.api.get_secret)
        client = connect(target.host, target.port, target.password, target.username)
        try:
            removed = delete_namespace(client, gcs.namespace)
        finally:
            client.close()
    except (redis.RedisError, OSError, CredentialsUnavailable, KubeApiError) as error:
        attempt = retry + 1
        if attempt >= MAX_ATTEMPTS:
            message = (f"gave up removing this cluster's keys from the external Redis {where} after {attempt}"
                       f" attempts: {error}; they are left there")
            log.warning("RayCluster %s/%s: %s", namespace, name, message)
            syncer.post_event(dict(body), events.EventNote(events.WARNING, events.EXTERNAL_REDIS_CLEANUP_FAILED,
                                                            message))
            return
        message = (f"could not remove this cluster's keys from the external Redis {where} (attempt {attempt} of"
                   f" {MAX_ATTEMPTS}): {error}; the deletion waits and retries in {RETRY_DELAY_S}s. To skip the"
                   f" cleanup, annotate the RayCluster {names.ANNOTATION_SKIP_REDIS_CLEANUP}=true")
        log.warning("RayCluster %s/%s: %s", namespace, name, message)
        syncer.post_event(dict(body), events.EventNote(events.WARNING, events.EXTERNAL_REDIS_CLEANUP_FAILED,
                                                        message))
        raise kopf.TemporaryError(message, delay=RETRY_DELAY_S) from None
    log.info("RayCluster %s/%s: removed %d keys of namespace %s from the external Redis %s", namespace, name,
             removed, gcs.namespace, gcs.redis_address)

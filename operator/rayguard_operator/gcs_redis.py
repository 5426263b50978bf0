"""The external Redis of GCS fault tolerance (README, "GCS fault tolerance"): removing one
cluster's namespace from it when the RayCluster is deleted.

Every key of the cluster, Ray's tables and rayguard's reports and ledger alike, starts with
`RAY<namespace>@` (`rayguard_node.contract.gcs`). The cleanup walks them with SCAN MATCH (never
KEYS, which blocks the server for the whole keyspace) and removes each batch with UNLINK (the
memory is freed off the main thread), never FLUSHDB: the Redis may hold other clusters.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import redis

from rayguard_node.contract.gcs import match_pattern

from rayguard_operator.spec.gcs import GcsFaultTolerance, SecretKeyRef

SCAN_COUNT = 1000
UNLINK_BATCH = 500
CONNECT_TIMEOUT_S = 3.0
OPERATION_TIMEOUT_S = 10.0


def connect(host: str, port: int, password: str | None, username: str | None = None) -> redis.Redis:
    return redis.Redis(host=host, port=port, password=password or None, username=username or None,
                       socket_connect_timeout=CONNECT_TIMEOUT_S, socket_timeout=OPERATION_TIMEOUT_S)


def delete_namespace(client: redis.Redis, namespace: str, batch: int = UNLINK_BATCH) -> int:
    """UNLINK every key of `namespace`, in batches of at most `batch`; returns how many went.
    Raises redis's errors (and OSError) when the Redis cannot be reached: the caller retries."""
    removed, pending = 0, []
    for key in client.scan_iter(match=match_pattern(namespace), count=SCAN_COUNT):
        pending.append(key)
        if len(pending) >= batch:
            removed += int(client.unlink(*pending))
            pending.clear()
    if pending:
        removed += int(client.unlink(*pending))
    return removed


class CredentialsUnavailable(Exception):
    """A Secret that spec.gcsFaultTolerance names is missing, or lacks its key."""


def secret_value(secret: Mapping[str, Any] | None, ref: SecretKeyRef, namespace: str) -> str:
    """The decoded value `ref` names in `secret` (as read from the API: base64 in data)."""
    if secret is None:
        raise CredentialsUnavailable(f"Secret {namespace}/{ref.name} does not exist")
    encoded = (secret.get("data") or {}).get(ref.key)
    if encoded is None:
        raise CredentialsUnavailable(f"Secret {namespace}/{ref.name} has no key {ref.key!r}")
    return base64.b64decode(encoded).decode()


@dataclass(frozen=True)
class Endpoint:
    """Where the external Redis is and how to log in; the password is never printed."""

    host: str
    port: int
    password: str | None = field(default=None, repr=False)
    username: str | None = None


def endpoint(gcs: GcsFaultTolerance, namespace: str,
             get_secret: Callable[[str, str], Mapping[str, Any] | None]) -> Endpoint:
    """The external Redis of `gcs`, with the credentials read from the Secrets it names
    (`get_secret(namespace, name)`); CredentialsUnavailable when one is missing."""
    host, _, port = gcs.redis_address.rpartition(":")
    password = username = None
    if gcs.password_secret is not None:
        password = secret_value(get_secret(namespace, gcs.password_secret.name), gcs.password_secret, namespace)
    if gcs.username_secret is not None:
        username = secret_value(get_secret(namespace, gcs.username_secret.name), gcs.username_secret, namespace)
    return Endpoint(host, int(port), password, username)

"""Following one cluster's `rayguard:reports` stream on its head Redis.

One async follower per RayCluster (a kopf daemon), so a slow or dead head never delays
another cluster. It resumes from `status.oom.lastReportId`: the id is written in the
same status patch as the counters, so an operator restart neither loses nor repeats a
report. While the head is down it reconnects with backoff, saying so once per outage.

Where the head Redis is (the head Service and the Secret's password) is read once and kept
across reconnects: a head that restarts keeps its Service and its password. It is read again
when Redis refuses the password, and at most every `TARGET_TTL_S` while the head stays
unreachable (a Service made again has a new clusterIP).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Mapping

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import AuthenticationError, RedisError, ResponseError

from rayguard_node.errors import MalformedReport
from rayguard_node.contract.reports import STREAM_KEY, Report

from rayguard_operator import names

log = logging.getLogger(__name__)

BATCH = 500
BLOCK_MS = 2000
MAX_BACKOFF_S = 30.0
TARGET_TTL_S = 60.0


@dataclass(frozen=True)
class RedisTarget:
    host: str
    port: int
    password: str | None = field(repr=False)
    # With GCS fault tolerance: the external Redis, its ACL user, and the stream under the
    # cluster's namespace prefix (rayguard_node.contract.gcs).
    username: str | None = None
    stream_key: str = STREAM_KEY


def redis_target(service: Mapping[str, Any] | None, secret: Mapping[str, Any] | None,
                 namespace: str) -> RedisTarget | None:
    """The head Redis from the head Service (its ClusterIP, else its DNS name) and the
    cluster Secret; None while either does not exist yet."""
    if service is None or secret is None:
        return None
    port = next((p["port"] for p in service["spec"].get("ports", []) if p.get("name") == names.PORT_REDIS[0]),
                names.PORT_REDIS[1])
    cluster_ip = service["spec"].get("clusterIP")
    host = cluster_ip if cluster_ip and cluster_ip != "None" else \
        f"{service['metadata']['name']}.{namespace}.svc"
    encoded = (secret.get("data") or {}).get(names.SECRET_KEY_REDIS_PASSWORD)
    password = base64.b64decode(encoded).decode() if encoded else None
    return RedisTarget(host, int(port), password)


def decode_entries(raw: list[tuple[bytes, dict[bytes, bytes]]]) -> tuple[list[tuple[str, Report]], str | None]:
    """(parsed entries, id of the last entry read); a malformed entry is logged and skipped."""
    entries, last = [], None
    for entry_id, fields in raw:
        last = entry_id.decode()
        try:
            entries.append((last, Report.from_dict(json.loads(fields[b"report"]))))
        except (KeyError, ValueError, MalformedReport) as error:
            log.warning("skipping malformed report %s: %s", last, error)
    return entries, last


async def _sleep_unless(stopped: Callable[[], bool], seconds: float) -> None:
    """Sleep, but wake within a quarter second of `stopped()`: a backoff must not hold up
    the daemon's graceful exit."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not stopped() and loop.time() < deadline:
        await asyncio.sleep(min(0.25, deadline - loop.time()))


def _refused_password(error: BaseException) -> bool:
    if isinstance(error, AuthenticationError):
        return True
    return isinstance(error, ResponseError) and str(error).split(" ", 1)[0] in {"WRONGPASS", "NOAUTH"}


async def follow(
    target: Callable[[], Awaitable[RedisTarget | None]],
    last_id: str,
    handle: Callable[[list[tuple[str, Report]], str], Awaitable[bool]],
    stopped: Callable[[], bool],
    label: str,
    after_read: Callable[[], Awaitable[None]] | None = None,
    first_backoff_s: float = 1.0,
    target_ttl_s: float = TARGET_TTL_S,
) -> None:
    """Read reports after `last_id` until `stopped()`; `handle(entries, last_id)` persists
    them and returns True, after which reading moves on. `after_read` runs after every
    read, reports or not (at least every BLOCK_MS)."""
    backoff, down_since_logged = first_backoff_s, False
    client: aioredis.Redis | None = None
    where: RedisTarget | None = None
    loop = asyncio.get_running_loop()
    where_read_at = loop.time()
    while not stopped():
        try:
            if client is None:
                if where is None or loop.time() - where_read_at > target_ttl_s:
                    where, where_read_at = await target(), loop.time()
                if where is None:
                    raise ConnectionError("the head Service or Secret does not exist yet")
                # One immediate retry (a pooled connection the server dropped), not redis-py's
                # own backoff: this loop's backoff is the one that says the head is down.
                client = aioredis.Redis(host=where.host, port=where.port, password=where.password,
                                        username=where.username,
                                        socket_connect_timeout=2, socket_timeout=BLOCK_MS / 1000 + 3,
                                        retry=Retry(NoBackoff(), 1))
            assert where is not None
            raw = await client.xread({where.stream_key: last_id}, count=BATCH, block=BLOCK_MS)
            if down_since_logged:
                log.info("%s: head Redis reachable again; reading reports after %s", label, last_id)
                down_since_logged = False
            backoff = first_backoff_s
            for _stream, stream_entries in raw or []:
                entries, newest = decode_entries(stream_entries)
                if newest is not None and await handle(entries, newest):
                    last_id = newest
            if after_read is not None:
                await after_read()  # e.g. Events held back by the rate limit
        except (RedisError, OSError, ConnectionError) as error:
            if _refused_password(error):
                where = None  # the Secret may have changed: read it again
            if not down_since_logged:
                log.info("%s: head Redis not reachable (%s); retrying with backoff", label, error)
                down_since_logged = True
            if client is not None:
                await client.aclose()
                client = None
            await _sleep_unless(stopped, backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_S)
    if client is not None:
        await client.aclose()

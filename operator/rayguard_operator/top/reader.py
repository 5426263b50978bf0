"""`rayguard top`, reading: one refresh is two round trips and `2 + nodes` Redis commands.

1. `TIME` and `HGETALL rayguard:live:nodes`, pipelined: Redis's clock (the writers are on the
   cluster's side of any clock skew) and every node's entry.
2. For each node to show, `ZREVRANGE rayguard:live:pod:<pod> 0 N-1 WITHSCORES`, pipelined: its
   N largest rows.

So a refresh costs O(nodes + rows shown), whatever the ledger holds (`bench/top.py`).
"""

from __future__ import annotations

from pathlib import Path

import redis

from rayguard_node.contract.live import NODES_KEY, rows_key
from rayguard_node.contract.secrets import read_secret
from rayguard_node.errors import RayguardError

from rayguard_operator.top.view import Snapshot, build_snapshot, fresh_nodes

CONNECT_TIMEOUT_S = 5.0
OPERATION_TIMEOUT_S = 10.0


class TopError(RayguardError):
    """Why `rayguard top` cannot show anything: one line, exit status 2."""


def read_password_file(path: Path) -> str:
    """The password in a file, read as the runtime reads it (bounded, non-blocking, stripped);
    an unreadable, empty or oversized file is an `InvalidSetting` naming it."""
    return read_secret(path, "--redis-password-file")


def redis_client(url: str, password: str | None = None) -> redis.Redis:
    """A client for `url` (`redis://host:port/db`); an explicit password wins over the URL's."""
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=CONNECT_TIMEOUT_S,
                                      socket_timeout=OPERATION_TIMEOUT_S, decode_responses=False)
    except ValueError as error:
        raise TopError(f"bad --redis-url {url!r}: {error}") from None
    if password is not None:
        client.connection_pool.connection_kwargs["password"] = password
    return client


def describe(error: BaseException, where: str, password_given: bool = True) -> str:
    """One line for a Redis failure: wrong password, none given, or not reachable."""
    text = str(error) or type(error).__name__
    refused = isinstance(error, redis.exceptions.AuthenticationError) or any(
        marker in text for marker in ("NOAUTH", "WRONGPASS", "Authentication required"))
    if refused:
        if not password_given or "NOAUTH" in text:
            return f"Redis at {where} wants a password: give --redis-password-file"
        return f"Redis at {where} refused the password"
    if isinstance(error, (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)):
        return f"cannot reach Redis at {where}: {text}"
    return f"Redis at {where} failed: {text}"


class LiveReader:
    """Reads one `Snapshot` per call of `read`."""

    def __init__(self, client: redis.Redis, rows_per_node: int) -> None:
        if rows_per_node < 1:
            raise ValueError("rows per node must be at least 1")
        self.client = client
        self.rows_per_node = rows_per_node

    def read(self) -> Snapshot:
        """Raises Redis errors (the caller decides whether one is fatal)."""
        pipe = self.client.pipeline(transaction=False)
        pipe.time()
        pipe.hgetall(NODES_KEY)
        (seconds, micros), raw_nodes = pipe.execute()
        now_ms = int(seconds) * 1000 + int(micros) // 1000
        nodes, skipped, hidden = fresh_nodes(raw_nodes, now_ms)
        members: dict[str, list[tuple[bytes, float]]] = {}
        if nodes:
            pipe = self.client.pipeline(transaction=False)
            for view in nodes:
                pipe.zrevrange(rows_key(view.node.pod), 0, self.rows_per_node - 1, withscores=True)
            members = {view.node.pod: found for view, found in zip(nodes, pipe.execute())}
        return build_snapshot(now_ms, nodes, members, skipped, hidden)

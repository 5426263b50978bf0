"""Where reports go: one JSON line on stdout at once, then the head Redis stream.

docs/architecture.md ("The data path", step 5): each report is printed to stdout as one line and XADDed to
`rayguard:reports` (`MAXLEN ~ 10000`). When Redis is unreachable, reports wait in a bounded
buffer and are retried; the runtime never crashes because of Redis.

Exactly once: one Lua script, atomic in Redis, XADDs the report only if the marker
`rayguard:report-sent:<id>` is absent, and sets that marker (one day TTL) with it. When a
reply is lost and the send is retried, the marker is there and nothing is added twice.
The XADD is the script's first write, so a refused XADD (out of memory: Redis checks
`maxmemory` on a script's first write) leaves no marker behind and the retry still sends.
"""

from __future__ import annotations

import collections
import logging
import sys
import threading
from typing import Callable, TextIO

import redis

from rayguard_node.contract.reports import STREAM_KEY, STREAM_MAXLEN, Report

SENT_MARKER_PREFIX = "rayguard:report-sent:"
SENT_MARKER_TTL_S = 86_400
DEFAULT_BUFFER_MAX = 1000

# KEYS: marker, stream. ARGV: marker ttl, maxlen, json, kind, id.
# Returns the new entry's stream id, or nil when this report was already sent.
# The same as "SET NX, then XADD if it succeeded", ordered so that the XADD is the first
# write: if it fails (out of memory, wrong type), no marker is left to hide the report.
XADD_ONCE_LUA = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  return false
end
local entry = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*',
                         'report', ARGV[3], 'kind', ARGV[4], 'id', ARGV[5])
redis.call('SET', KEYS[1], '1', 'EX', ARGV[1])
return entry
"""

REDIS_ERRORS = (redis.exceptions.RedisError, OSError)


def sent_marker_key(report_id: str) -> str:
    return SENT_MARKER_PREFIX + report_id


class ReportSink:
    """Prints reports and ships them to Redis, at most `buffer_max` waiting at a time.

    `emit` may be called from any thread; `flush_pending` from one loop (and on shutdown).
    """

    def __init__(self, client_factory: Callable[[], redis.Redis], stdout: TextIO | None = None,
                 buffer_max: int = DEFAULT_BUFFER_MAX, logger: logging.Logger | None = None,
                 stream_key: str = STREAM_KEY, stream_maxlen: int = STREAM_MAXLEN,
                 marker_ttl_s: int = SENT_MARKER_TTL_S, key_prefix: str = "") -> None:
        if buffer_max < 1:
            raise ValueError(f"buffer_max must be at least 1, not {buffer_max}")
        self._client_factory = client_factory
        self._stdout = stdout
        self.buffer_max = buffer_max
        self._log = logger or logging.getLogger(__name__)
        # With GCS fault tolerance every key starts with the cluster's namespace prefix
        # (contract/gcs.py): the stream, and each report's sent marker.
        self.key_prefix = key_prefix
        self.stream_key = key_prefix + stream_key
        self.stream_maxlen = stream_maxlen
        self.marker_ttl_s = marker_ttl_s
        self._pending: collections.deque[Report] = collections.deque()
        self._lock = threading.Lock()        # guards _pending and the counters
        self._send_lock = threading.Lock()   # one flush at a time
        self._client: redis.Redis | None = None
        self._script: redis.commands.core.Script | None = None
        self._redis_ok = True
        self._stdout_ok = True
        self.sent_total = 0
        self.dropped_total = 0
        self.failed_attempts_total = 0

    @property
    def pending_count(self) -> int:
        with self._lock:
            return len(self._pending)

    @property
    def redis_ok(self) -> bool:
        """False from the first failed send until the next successful one."""
        return self._redis_ok

    def emit(self, report: Report) -> None:
        """Print the report now; queue it for Redis (dropping the oldest when full)."""
        self._print(report.to_json())
        with self._lock:
            dropped = None
            if len(self._pending) >= self.buffer_max:
                dropped = self._pending.popleft()
                self.dropped_total += 1
            self._pending.append(report)
            total = self.dropped_total
        if dropped is not None:
            self._log.warning(
                "report buffer full (%d waiting for Redis): dropped the oldest report %s (%s);"
                " %d dropped so far (each was printed to stdout)",
                self.buffer_max, dropped.id, dropped.kind, total)

    def flush_pending(self) -> int:
        """Send waiting reports, oldest first, until done or Redis fails. Returns how many."""
        sent = 0
        with self._send_lock:
            while True:
                with self._lock:
                    if not self._pending:
                        break
                    report = self._pending[0]
                try:
                    self._send(report)
                except REDIS_ERRORS as error:
                    self._on_failure(error)
                    break
                with self._lock:
                    if self._pending and self._pending[0] is report:
                        self._pending.popleft()
                    self.sent_total += 1
                    left = len(self._pending)
                sent += 1
                if not self._redis_ok:
                    self._redis_ok = True
                    self._log.info("Redis is reachable again: sending reports (%d still waiting)",
                                   left)
        return sent

    def send_once(self, report: Report) -> bool:
        """The atomic marker-and-XADD step; True if this call added the entry.

        Raises Redis errors: `flush_pending` is the caller that must not raise.
        """
        return self._send(report)

    def _send(self, report: Report) -> bool:
        client, script = self._connection()
        try:
            entry_id = script(keys=[self.key_prefix + sent_marker_key(report.id), self.stream_key],
                              args=[self.marker_ttl_s, self.stream_maxlen, report.to_json(),
                                    report.kind, report.id], client=client)
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError):
            self._drop_client()  # a fresh client next time: the address may have moved
            raise
        return entry_id is not None

    def _connection(self) -> tuple[redis.Redis, redis.commands.core.Script]:
        if self._client is None or self._script is None:
            client = self._client_factory()
            self._script = client.register_script(XADD_ONCE_LUA)
            self._client = client
        return self._client, self._script

    def _drop_client(self) -> None:
        client, self._client, self._script = self._client, None, None
        if client is not None:
            try:
                client.close()
            except REDIS_ERRORS:
                pass

    def _on_failure(self, error: BaseException) -> None:
        self.failed_attempts_total += 1
        if self._redis_ok:
            self._redis_ok = False
            self._log.warning("cannot send reports to Redis (%s: %s); %d waiting, retrying",
                              type(error).__name__, error, self.pending_count)

    def _print(self, line: str) -> None:
        stream = self._stdout if self._stdout is not None else sys.stdout
        try:
            stream.write(line + "\n")
            stream.flush()
        except (OSError, ValueError) as error:  # closed or broken stdout: Redis still gets it
            if self._stdout_ok:
                self._stdout_ok = False
                self._log.warning("cannot print reports to stdout: %s", error)

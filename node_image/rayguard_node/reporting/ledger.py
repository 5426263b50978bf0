"""The memory ledger: per-process samples and per-task peaks in the head Redis.

See docs/ledger.md. Every node's runtime writes; the head runs the flush policy.

Key layout (all values are bytes on the wire; numbers are decimal strings):

- `rayguard:sample:<pod>:<time_ms>:<pid>`: a hash, one process at one instant, with the
  fields `name`, `class`, `rss`, `shared`, `rss_minus_shr`, `time` (ms since the epoch)
  and, when it was measured, `uss`. It has a TTL (`sample_ttl_s`, default one hour), so
  that Redis's `volatile-lru` evicts samples first if Redis fills anyway.
- `rayguard:samples`: a sorted set indexing every sample key, scored by `time_ms`. No TTL.
  The flush policy deletes from its low end (oldest first); writers also drop index
  entries older than the sample TTL, whose keys have expired.
- `rayguard:peaks:<pod>`: a hash, field = task name (the worker's `ray::<task>` title),
  value = the largest RSS - SHR seen for that task on that pod, in bytes. A Lua script
  raises a field only when the new value is larger. Its TTL (`peak_ttl_s`, default seven
  days) is refreshed on every write.

Only processes of a known class are sampled (everything but `other`); peaks are kept for
task workers (class `worker`).

The SimpleGcsFlushPolicy (Ray's own, see docs/ledger.md): once Redis's `used_memory` reaches
`flush_when_at_least_bytes` (never above 80% of `maxmemory`), every `flush_period_secs`
it deletes the `flush_num_entries_each_time` oldest samples. It touches only keys named in
`rayguard:samples` that start with `rayguard:sample:`; the reports stream `rayguard:reports`
is never flushed (and, having no TTL, never evicted).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable, Iterable

import redis

from rayguard_node.cgroup.processes import OTHER, WORKER, ProcessMemory

SAMPLE_PREFIX = "rayguard:sample:"
SAMPLES_INDEX_KEY = "rayguard:samples"
PEAKS_PREFIX = "rayguard:peaks:"
DEFAULT_SAMPLE_TTL_S = 3600
DEFAULT_PEAK_TTL_S = 7 * 86_400
MAX_THRESHOLD_FRACTION = 0.8
DELETE_CHUNK = 1000

REDIS_ERRORS = (redis.exceptions.RedisError, OSError)

# KEYS: peaks hash. ARGV: ttl, then name, bytes pairs. Returns how many fields rose.
RAISE_PEAKS_LUA = """
local raised = 0
for i = 2, #ARGV, 2 do
  local current = redis.call('HGET', KEYS[1], ARGV[i])
  if not current or tonumber(ARGV[i + 1]) > tonumber(current) then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
    raised = raised + 1
  end
end
redis.call('EXPIRE', KEYS[1], ARGV[1])
return raised
"""


def sample_key(pod: str, time_ms: int, pid: int) -> str:
    return f"{SAMPLE_PREFIX}{pod}:{time_ms}:{pid}"


def peaks_key(pod: str) -> str:
    return PEAKS_PREFIX + pod


def sample_fields(process: ProcessMemory, time_ms: int) -> dict[str, str | int]:
    fields: dict[str, str | int] = {
        "name": process.name, "class": process.process_class, "rss": process.rss_bytes,
        "shared": process.shared_bytes, "rss_minus_shr": process.rss_minus_shr_bytes,
        "time": time_ms,
    }
    if process.uss_bytes is not None:
        fields["uss"] = process.uss_bytes
    return fields


def task_peaks(processes: Iterable[ProcessMemory]) -> dict[str, int]:
    """The largest RSS - SHR per task name among task workers."""
    peaks: dict[str, int] = {}
    for process in processes:
        if process.process_class == WORKER:
            peaks[process.name] = max(peaks.get(process.name, 0), process.rss_minus_shr_bytes)
    return peaks


class Ledger:
    """Writes one node's samples and peaks. `record` never raises because of Redis."""

    def __init__(self, client_factory: Callable[[], redis.Redis], identity_pod: str,
                 sample_ttl_s: int = DEFAULT_SAMPLE_TTL_S, peak_ttl_s: int = DEFAULT_PEAK_TTL_S,
                 logger: logging.Logger | None = None, key_prefix: str = "") -> None:
        if sample_ttl_s < 1 or peak_ttl_s < 1:
            raise ValueError("ledger TTLs must be at least one second")
        self._client_factory = client_factory
        self.pod = identity_pod
        self.key_prefix = key_prefix  # GCS fault tolerance: the cluster's namespace (contract/gcs.py)
        self.sample_ttl_s = sample_ttl_s
        self.peak_ttl_s = peak_ttl_s
        self._log = logger or logging.getLogger(__name__)
        self._client: redis.Redis | None = None
        self._peaks_script: redis.commands.core.Script | None = None
        self._ok = True
        self.samples_total = 0
        self.errors_total = 0

    def record(self, processes: Iterable[ProcessMemory], now_ms: int) -> int:
        """Write one snapshot in one pipeline; returns the samples written (0 on error)."""
        kept = [p for p in processes if p.process_class != OTHER]
        if not kept:
            return 0
        try:
            client, peaks_script = self._connection()
            pipe = client.pipeline(transaction=False)
            index: dict[str, int] = {}
            for process in kept:
                key = self.key_prefix + sample_key(self.pod, now_ms, process.pid)
                pipe.hset(key, mapping=sample_fields(process, now_ms))
                pipe.expire(key, self.sample_ttl_s)
                index[key] = now_ms
            pipe.zadd(self.key_prefix + SAMPLES_INDEX_KEY, index)
            # Index entries older than the TTL point at expired keys.
            pipe.zremrangebyscore(self.key_prefix + SAMPLES_INDEX_KEY, "-inf", f"({now_ms - self.sample_ttl_s * 1000}")
            peaks = task_peaks(kept)
            if peaks:
                args: list[str | int] = [self.peak_ttl_s]
                for name, peak in sorted(peaks.items()):
                    args += [name, peak]
                peaks_script(keys=[self.key_prefix + peaks_key(self.pod)], args=args, client=pipe)
            pipe.execute()
        except REDIS_ERRORS as error:
            self._on_error(error)
            return 0
        self.samples_total += len(kept)
        if not self._ok:
            self._ok = True
            self._log.info("memory ledger: Redis accepts samples again")
        return len(kept)

    def _connection(self) -> tuple[redis.Redis, redis.commands.core.Script]:
        if self._client is None or self._peaks_script is None:
            client = self._client_factory()
            self._peaks_script = client.register_script(RAISE_PEAKS_LUA)
            self._client = client
        return self._client, self._peaks_script

    def _on_error(self, error: BaseException) -> None:
        self.errors_total += 1
        if isinstance(error, (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError,
                              OSError)):
            client, self._client, self._peaks_script = self._client, None, None
            if client is not None:
                try:
                    client.close()
                except REDIS_ERRORS:
                    pass
        if self._ok:
            self._ok = False
            self._log.warning("memory ledger: cannot write samples to Redis (%s: %s);"
                              " dropping them until it can", type(error).__name__, error)


@dataclass(frozen=True)
class RedisMemory:
    used_bytes: int
    maxmemory_bytes: int  # 0: no limit


def read_memory(client: redis.Redis) -> RedisMemory:
    """From `INFO memory`, which works where `CONFIG` is renamed or forbidden."""
    info = client.info("memory")
    return RedisMemory(int(info["used_memory"]), int(info.get("maxmemory") or 0))


def effective_threshold(configured_bytes: int, maxmemory_bytes: int) -> int:
    """The flush threshold: as configured, but never above 80% of `maxmemory`."""
    if maxmemory_bytes > 0:
        return min(configured_bytes, int(maxmemory_bytes * MAX_THRESHOLD_FRACTION))
    return configured_bytes


class FlushPolicy:
    """Ray's SimpleGcsFlushPolicy, over the ledger's samples. Run by the head."""

    def __init__(self, flush_when_at_least_bytes: int = 1 << 31, flush_period_secs: float = 10,
                 flush_num_entries_each_time: int = 10_000,
                 logger: logging.Logger | None = None) -> None:
        if flush_when_at_least_bytes < 0 or flush_period_secs < 0 or flush_num_entries_each_time < 1:
            raise ValueError("flush policy: bytes and period must be >= 0, entries >= 1")
        self.flush_when_at_least_bytes = flush_when_at_least_bytes
        self.flush_period_secs = flush_period_secs
        self.flush_num_entries_each_time = flush_num_entries_each_time
        self._log = logger or logging.getLogger(__name__)
        self._last_run: float | None = None
        self._ok = True
        self.last_threshold_bytes: int | None = None
        self.flushed_total = 0
        self.errors_total = 0

    def threshold(self, client: redis.Redis) -> int:
        return effective_threshold(self.flush_when_at_least_bytes, read_memory(client).maxmemory_bytes)

    def flush_once(self, client: redis.Redis) -> int:
        """Delete the oldest samples if Redis is at the threshold; returns how many.

        Raises Redis errors (`maybe_flush` is the caller that must not).
        """
        memory = read_memory(client)
        threshold = effective_threshold(self.flush_when_at_least_bytes, memory.maxmemory_bytes)
        self.last_threshold_bytes = threshold
        if memory.used_bytes < threshold:
            return 0
        members: list[bytes] = client.zrange(SAMPLES_INDEX_KEY, 0, self.flush_num_entries_each_time - 1)
        if not members:
            return 0
        # Only sample keys are ever deleted, whatever else the index might name.
        keys = [m for m in members if m.startswith(SAMPLE_PREFIX.encode())]
        pipe = client.pipeline(transaction=False)
        for start in range(0, len(keys), DELETE_CHUNK):
            pipe.delete(*keys[start:start + DELETE_CHUNK])
        for start in range(0, len(members), DELETE_CHUNK):
            pipe.zrem(SAMPLES_INDEX_KEY, *members[start:start + DELETE_CHUNK])
        pipe.execute()
        flushed = len(members)
        self.flushed_total += flushed
        self._log.debug("flushed %d oldest ledger samples (used %d >= threshold %d bytes)",
                        flushed, memory.used_bytes, threshold)
        return flushed

    def maybe_flush(self, client: redis.Redis, now: float | None = None) -> int:
        """`flush_once` at most every `flush_period_secs` (`now`: a monotonic time)."""
        now = time.monotonic() if now is None else now
        if self._last_run is not None and now - self._last_run < self.flush_period_secs:
            return 0
        self._last_run = now
        try:
            flushed = self.flush_once(client)
        except REDIS_ERRORS as error:
            self.errors_total += 1
            if self._ok:
                self._ok = False
                self._log.warning("ledger flush failed (%s: %s); retrying every %gs",
                                  type(error).__name__, error, self.flush_period_secs)
            return 0
        if not self._ok:
            self._ok = True
            self._log.info("ledger flush works again")
        return flushed

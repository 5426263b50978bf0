"""The live view `rayguard top` shows: this node's memory and its tasks, written every second.

Keys and row shape: `rayguard_node.contract.live` (and docs/ledger.md). Each `write` puts this
node's `LiveNode` into `rayguard:live:nodes` and replaces its sorted set of `LiveRow`s in one
MULTI (DEL, ZADD, EXPIRE), so a reader never sees half a picture and rows of processes that
are gone vanish at once. Only task and actor workers (class `worker`) are rows: idle workers
run no user code and the guard never picks them; their memory is in the node's working set.

The peak of a row is the largest RSS − SHR this writer has seen for that process (pid and
start time: a pid may be reused). Its age comes from the process's start, in clock ticks since
boot, and `/proc/uptime`. The quota is the actor's `memory=` when the quota path knows the
actor (`quota_of`), else None.

Runs on the monitor loop's thread (a poller), so it must stay cheap and never block for long:
Redis errors are contained, logged once until writes work again, and after a failure the next
try waits (1, 2, 4 ... up to 30 s) so that an unreachable Redis costs the loop at most one
connect timeout per back-off period. The head also forgets nodes that stopped writing
(`FORGET_AFTER_MS`), at most once a minute.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Callable, Iterable, Protocol

import redis

from rayguard_node.cgroup.files import read_small
from rayguard_node.cgroup.processes import WORKER, ProcessMemory
from rayguard_node.contract.live import (FORGET_AFTER_MS, MAX_ROWS_PER_NODE, NODES_KEY, ROWS_TTL_S,
                                         LiveNode, LiveRow, MalformedLive, rows_key)

CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")
REDIS_ERRORS = (redis.exceptions.RedisError, OSError)
MAX_BACKOFF_S = 30.0
PRUNE_PERIOD_S = 60.0

PeakKey = tuple[int, int]  # (pid, start ticks)


class NodeNumbers(Protocol):
    """What the monitor loop's state says about the node (`guard.loop.MonitorState`)."""

    limit_bytes: int
    working_set_bytes: int
    threshold: float


def parse_uptime(text: bytes | str) -> float:
    """Seconds since boot: the first field of /proc/uptime."""
    return float(text.split()[0])


def age_s(start_ticks: int, uptime_s: float, ticks_per_s: int = CLOCK_TICKS_PER_S) -> int:
    return max(0, int(uptime_s - start_ticks / ticks_per_s))


def live_rows(processes: Iterable[ProcessMemory], peaks: dict[PeakKey, int],
              quota_of: Callable[[ProcessMemory], int | None], uptime_s: float | None,
              ticks_per_s: int = CLOCK_TICKS_PER_S, limit: int = MAX_ROWS_PER_NODE
              ) -> tuple[list[LiveRow], dict[PeakKey, int]]:
    """The rows for this scan, largest first, and the peaks to keep (only of live workers)."""
    rows: list[LiveRow] = []
    kept: dict[PeakKey, int] = {}
    for process in processes:
        if process.process_class != WORKER:
            continue
        key = (process.pid, process.start_ticks)
        used = process.rss_minus_shr_bytes
        peak = kept[key] = max(used, peaks.get(key, 0))
        age = age_s(process.start_ticks, uptime_s, ticks_per_s) if uptime_s is not None else 0
        rows.append(LiveRow(process.pid, process.name, process.process_class, used,
                            quota_of(process), peak, age))
    rows.sort(key=lambda row: (-row.rss_minus_shr_bytes, row.pid))
    return rows[:limit], kept


class LiveView:
    """Writes one node's live picture. `write` never raises because of Redis."""

    def __init__(self, client_factory: Callable[[], redis.Redis], pod: str, group: str, role: str,
                 numbers: NodeNumbers, processes: Callable[[], Iterable[ProcessMemory]],
                 procfs_root: Path, quota_of: Callable[[ProcessMemory], int | None] | None = None,
                 forget_stale: bool = False, ttl_s: int = ROWS_TTL_S,
                 wall_clock: Callable[[], float] = time.time,
                 clock: Callable[[], float] = time.monotonic,
                 logger: logging.Logger | None = None) -> None:
        if ttl_s < 1:
            raise ValueError("the live view's TTL must be at least one second")
        self._client_factory = client_factory
        self.pod, self.group, self.role = pod, group, role
        self.numbers = numbers
        self.processes = processes
        self.procfs_root = procfs_root
        self.quota_of = quota_of or (lambda _process: None)
        self.forget_stale = forget_stale
        self.ttl_s = ttl_s
        self.wall_clock, self.clock = wall_clock, clock
        self._log = logger or logging.getLogger(__name__)
        self._client: redis.Redis | None = None
        self._peaks: dict[PeakKey, int] = {}
        self._ok = True
        self._failures_in_a_row = 0
        self._retry_at = float("-inf")
        self._next_prune = float("-inf")
        self.writes_total = 0
        self.errors_total = 0
        self.forgotten_total = 0

    def uptime_s(self) -> float | None:
        try:
            return parse_uptime(read_small(f"{self.procfs_root}/uptime"))
        except (OSError, ValueError, IndexError):
            return None

    def snapshot(self, now_ms: int) -> tuple[LiveNode, list[LiveRow]]:
        rows, self._peaks = live_rows(self.processes(), self._peaks, self.quota_of, self.uptime_s())
        numbers = self.numbers
        node = LiveNode(self.pod, self.group, self.role, numbers.limit_bytes,
                        numbers.working_set_bytes, numbers.threshold, now_ms, len(rows))
        return node, rows

    def write(self) -> bool:
        """One MULTI: this node's entry and its rows. False when skipped or failed."""
        now = self.clock()
        if now < self._retry_at:
            return False
        now_ms = int(self.wall_clock() * 1000)
        node, rows = self.snapshot(now_ms)
        try:
            client = self._connection()
            pipe = client.pipeline(transaction=True)
            key = rows_key(self.pod)
            pipe.delete(key)
            if rows:
                pipe.zadd(key, {row.to_json(): row.rss_minus_shr_bytes for row in rows})
            pipe.expire(key, self.ttl_s)
            pipe.hset(NODES_KEY, self.pod, node.to_json())
            pipe.expire(NODES_KEY, FORGET_AFTER_MS // 1000)  # all gone: the hash goes too
            pipe.execute()
            if self.forget_stale and now >= self._next_prune:
                self._next_prune = now + PRUNE_PERIOD_S
                self.forgotten_total += forget_stale_nodes(client, now_ms)
        except REDIS_ERRORS as error:
            self._on_error(error, now)
            return False
        self.writes_total += 1
        self._failures_in_a_row = 0
        if not self._ok:
            self._ok = True
            self._log.info("live view: Redis accepts writes again")
        return True

    def remove(self) -> None:
        """Take this node out of the view (on a clean stop); errors are ignored. Skipped while
        Redis fails, so that a stop never waits on an unreachable Redis."""
        if not self._ok or self.writes_total == 0:
            return
        try:
            client = self._connection()
            pipe = client.pipeline(transaction=True)
            pipe.hdel(NODES_KEY, self.pod)
            pipe.delete(rows_key(self.pod))
            pipe.execute()
        except REDIS_ERRORS:
            pass

    def _connection(self) -> redis.Redis:
        if self._client is None:
            self._client = self._client_factory()
        return self._client

    def _on_error(self, error: BaseException, now: float) -> None:
        self.errors_total += 1
        self._failures_in_a_row += 1
        self._retry_at = now + min(MAX_BACKOFF_S, 2.0 ** (self._failures_in_a_row - 1))
        if isinstance(error, (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)):
            client, self._client = self._client, None
            if client is not None:
                try:
                    client.close()
                except REDIS_ERRORS:
                    pass
        if self._ok:
            self._ok = False
            self._log.warning("live view: cannot write to Redis (%s: %s); `rayguard top` will not"
                              " show this node until it can", type(error).__name__, error)


def forget_stale_nodes(client: redis.Redis, now_ms: int, after_ms: int = FORGET_AFTER_MS) -> int:
    """Delete the node entries not written for `after_ms` (or not readable); returns how many."""
    stale = []
    for field, raw in client.hgetall(NODES_KEY).items():
        try:
            if now_ms - LiveNode.from_json(raw).time_ms > after_ms:
                stale.append(field)
        except MalformedLive:
            stale.append(field)
    if stale:
        client.hdel(NODES_KEY, *stale)
    return len(stale)

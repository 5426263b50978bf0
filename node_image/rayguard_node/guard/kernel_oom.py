"""Kernel OOM kills inside the container: the cgroup's oom_kill counter rose.

The kernel says how many, not whom. The victim is the process that vanished since the
last scan, task workers first and the largest first, with its last known memory. A
process the kernel killed can take a moment to exit, so a rise of the counter waits up
to `settle_s` for its victims to be gone before it is reported.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

from rayguard_node.cgroup.processes import IDLE_WORKER, WORKER, ProcessMemory


@dataclass(frozen=True)
class KernelKill:
    victim: ProcessMemory | None  # None: the kernel killed something we never saw
    processes_before: tuple[ProcessMemory, ...]


@dataclass
class _Pending:
    count: int
    before: tuple[ProcessMemory, ...]
    deadline: float
    excluded: frozenset[tuple[int, int]]


class KernelOomDetector:
    def __init__(self, read_count: Callable[[], int | None], is_gone: Callable[[int], bool],
                 clock: Callable[[], float] = time.monotonic, settle_s: float = 2.0) -> None:
        self._read_count = read_count
        self._is_gone = is_gone
        self._clock = clock
        self._settle_s = settle_s
        self._last_count = read_count()
        self._pending: _Pending | None = None
        self._excluded: set[tuple[int, int]] = set()

    @property
    def supported(self) -> bool:
        return self._last_count is not None

    def check(self, before: list[ProcessMemory],
              killed_by_others: set[tuple[int, int]]) -> list[KernelKill]:
        """Kills since the last check; `before` is the latest scan, `killed_by_others` the
        (pid, start ticks) of processes killed by someone else. Cheap when nothing moved:
        one small file read."""
        self._excluded = killed_by_others
        count = self._read_count()
        if count is not None and self._last_count is not None and count > self._last_count:
            now = self._clock()
            if self._pending is None:
                self._pending = _Pending(0, tuple(before), now + self._settle_s,
                                         frozenset(killed_by_others))
            self._pending.count += count - self._last_count
        if count is not None:
            self._last_count = count
        return self._settle() if self._pending is not None else []

    def _settle(self) -> list[KernelKill]:
        pending = self._pending
        assert pending is not None
        excluded = pending.excluded | self._excluded
        vanished = [p for p in pending.before
                    if (p.pid, p.start_ticks) not in excluded and self._is_gone(p.pid)]
        if len(vanished) < pending.count and self._clock() < pending.deadline:
            return []  # the victims are still exiting
        self._pending = None
        vanished.sort(key=lambda p: (p.process_class not in (WORKER, IDLE_WORKER), -p.rss_minus_shr_bytes))
        kills = [KernelKill(p, pending.before) for p in vanished[:pending.count]]
        kills += [KernelKill(None, pending.before)] * (pending.count - len(kills))
        return kills

"""The guard: kill the newest task before the kernel OOM killer takes the node.

Ray's own monitor picks "the most recently scheduled" task. From outside Ray we see a
worker's task through its process title (`ray::IDLE` -> `ray::<task>`), so the task
tracker notes when each worker's title last changed; the newest change is the most
recently scheduled task. Only task workers are ever chosen: never the raylet, GCS,
Redis, dashboard or agents, idle workers, the driver, or rayguard itself.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from rayguard_node.cgroup.processes import WORKER, ProcessMemory

log = logging.getLogger(__name__)


class TaskTracker:
    """When each worker started its current task, as seen by successive scans."""

    def __init__(self) -> None:
        self._since: dict[int, tuple[str, float]] = {}

    def observe(self, processes: list[ProcessMemory], now: float) -> None:
        current: dict[int, tuple[str, float]] = {}
        for process in processes:
            if process.process_class != WORKER:
                continue
            previous = self._since.get(process.pid)
            if previous is not None and previous[0] == process.name:
                current[process.pid] = previous
            else:
                current[process.pid] = (process.name, now)
        self._since = current

    def newest(self, processes: list[ProcessMemory]) -> ProcessMemory | None:
        workers = [p for p in processes if p.process_class == WORKER]
        if not workers:
            return None
        return max(workers, key=lambda p: (self._since.get(p.pid, (p.name, float("inf")))[1],
                                           p.start_ticks, p.pid))


@dataclass(frozen=True)
class GuardKill:
    victim: ProcessMemory
    used_bytes: int
    limit_bytes: int
    fraction: float
    threshold: float
    processes: tuple[ProcessMemory, ...]
    seconds_over_threshold: float


def process_gone(procfs_root: Path, pid: int) -> bool:
    """True once the process has exited (a zombie or no /proc entry at all).

    A zombie is not proof that its memory is back: a multi-threaded worker's main thread
    turns zombie within milliseconds while its pages are still being freed. The guard
    therefore also watches usage (see `Guard`).
    """
    try:
        stat = (procfs_root / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def process_reaped(procfs_root: Path, pid: int) -> bool:
    return not (procfs_root / str(pid)).exists()


@dataclass(frozen=True)
class _Waiting:
    pid: int
    killed_at: float
    used_at_kill: int
    victim_bytes: int


EXPECTED_RELEASE_S = 0.1  # until a kill's memory is seen back; then what was measured


class Guard:
    """Decides and performs kills; one `tick` per sample of the cgroup's working set.

    After a kill it waits for the victim's memory to come back before it kills again, unless
    the growth rate says the limit comes first: several tasks growing at once can outrun one
    victim's release. Then the next newest task goes too, decided from fresh numbers.
    """

    def __init__(
        self,
        threshold: float,
        limit_bytes: int,
        tracker: TaskTracker,
        scan: Callable[[], list[ProcessMemory]],
        procfs_root: Path = Path("/proc"),
        kill: Callable[[int, int], None] = os.kill,
        clock: Callable[[], float] = time.monotonic,
        release_timeout_s: float = 2.0,
    ) -> None:
        self.threshold = threshold
        self.limit_bytes = limit_bytes
        self.tracker = tracker
        self.scan = scan
        self.procfs_root = procfs_root
        self.kill = kill
        self.clock = clock
        self.release_timeout_s = release_timeout_s
        self.expected_release_s = EXPECTED_RELEASE_S
        self._waiting: list[_Waiting] = []
        self._over_since: float | None = None
        self._warned_no_victim = False

    @property
    def waiting_pids(self) -> set[int]:
        return {w.pid for w in self._waiting}

    def _released(self, waiting: _Waiting, working_set_bytes: int, now: float) -> bool:
        """The victim's memory is back: usage fell by half of what it held, or it was
        reaped, or (a victim that freed little) the wait timed out."""
        if now - waiting.killed_at >= self.release_timeout_s:
            return True
        if working_set_bytes <= waiting.used_at_kill - waiting.victim_bytes // 2:
            took = now - waiting.killed_at
            self.expected_release_s = (self.expected_release_s + took) / 2
            return True
        return process_reaped(self.procfs_root, waiting.pid)

    def no_time_to_wait(self, working_set_bytes: int, rate_bytes_s: float) -> bool:
        """At this rate the limit is reached before a victim's memory is expected back."""
        if rate_bytes_s <= 0:
            return False
        return (self.limit_bytes - working_set_bytes) / rate_bytes_s < self.expected_release_s

    def tick(self, working_set_bytes: int, rate_bytes_s: float = 0.0) -> GuardKill | None:
        now = self.clock()
        fraction = working_set_bytes / self.limit_bytes
        if fraction < self.threshold:
            self._over_since = None
            self._warned_no_victim = False
        elif self._over_since is None:
            self._over_since = now
        self._waiting = [w for w in self._waiting if not self._released(w, working_set_bytes, now)]
        if fraction < self.threshold:
            return None
        if self._waiting and not self.no_time_to_wait(working_set_bytes, rate_bytes_s):
            return None  # the last victim has not given its memory back yet, and there is time
        processes = self.scan()
        self.tracker.observe(processes, now)
        dying = self.waiting_pids
        victim = self.tracker.newest([p for p in processes if p.pid not in dying])
        if victim is None:
            if not self._warned_no_victim and not dying:
                log.warning("memory at %.1f%% of the limit, over the guard threshold %.3f, but no"
                            " task worker is running: nothing rayguard may kill", fraction * 100,
                            self.threshold)
                self._warned_no_victim = True
            return None
        try:
            self.kill(victim.pid, signal.SIGKILL)
        except ProcessLookupError:
            return None  # it finished on its own between the scan and the kill
        self._waiting.append(_Waiting(victim.pid, now, working_set_bytes, victim.rss_minus_shr_bytes))
        return GuardKill(victim, working_set_bytes, self.limit_bytes, fraction, self.threshold,
                         tuple(processes), now - (self._over_since or now))

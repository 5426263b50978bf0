"""One loop: sample memory, guard, detect kills, report, and keep the ledger.

Everything the runtime watches runs on this loop's thread. A full tick (scan, detectors,
pollers) runs at the guard's period; between full ticks, when memory grows towards the
threshold, fast ticks read only the usage counter and let the guard decide (`pace.py` says
how soon). A tick's error is logged and contained, so one bad tick never stops the guard.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Protocol

from rayguard_node.cgroup.processes import ProcessMemory, top
from rayguard_node.guard.killer import Guard, GuardKill
from rayguard_node.guard.kernel_oom import KernelKill, KernelOomDetector
from rayguard_node.guard.pace import GrowthRate, Pace
from rayguard_node.contract.reports import (KERNEL_OOM_KILL, GUARD_KILL, QUOTA_EXCEEDED, RAY_MONITOR_KILL,
                                            Identity, NodeUsage, Report, TopEntry, Victim, new_report,
                                            with_profile)
from rayguard_node.guard.quota import QuotaAction

log = logging.getLogger(__name__)

SCAN_PERIOD_S = 0.5
SCAN_EVERY_TICK_AT = 0.8  # of the guard threshold: track tasks closely when it matters
IDLE_PERIOD_MS = 250  # loop period when the guard is off (detectors still run)
RECENTLY_SEEN_S = 3.0
KERNEL_CHECK_EVERY = 5  # ticks, far from the threshold; every tick when close
SAME_KILL_WINDOW_S = 5.0  # a Ray kill of a pid the guard killed this recently is the same kill


class ReportEmitter(Protocol):
    def emit(self, report: Report) -> None: ...


TICK_BUCKETS_S = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1)


@dataclass
class TickHistogram:
    """Tick durations as fixed buckets: constant memory however long nobody scrapes."""

    bucket_counts: list[int] = field(default_factory=lambda: [0] * (len(TICK_BUCKETS_S) + 1))
    sum_s: float = 0.0

    def observe(self, seconds: float) -> None:
        index = next((i for i, bound in enumerate(TICK_BUCKETS_S) if seconds <= bound),
                     len(TICK_BUCKETS_S))
        self.bucket_counts[index] += 1
        self.sum_s += seconds


@dataclass
class MonitorState:
    """The latest numbers, read by /metrics and /healthz (from another thread)."""

    limit_bytes: int = 0
    usage_bytes: int = 0
    working_set_bytes: int = 0
    threshold: float = 0.0
    kills_by_kind: dict[str, int] = field(default_factory=dict)
    last_tick_monotonic: float = 0.0
    ticks: TickHistogram = field(default_factory=TickHistogram)
    fast_ticks: int = 0
    failed_ticks: int = 0
    growth_bytes_s: float = 0.0

    def count(self, kind: str) -> None:
        self.kills_by_kind[kind] = self.kills_by_kind.get(kind, 0) + 1


class Pollers:
    """Periodic jobs besides the guard, each with its own period."""

    def __init__(self) -> None:
        self._jobs: list[tuple[float, Callable[[], None]]] = []
        self._next: list[float] = []

    def add(self, period_s: float, job: Callable[[], None]) -> None:
        self._jobs.append((period_s, job))
        self._next.append(0.0)

    def run_due(self, now: float) -> None:
        for index, (period, job) in enumerate(self._jobs):
            if now >= self._next[index]:
                self._next[index] = now + period
                try:
                    job()
                except Exception:  # contained: a broken job must not stop the guard
                    log.exception("periodic job %s failed", getattr(job, "__name__", job))


def to_top(processes: tuple[ProcessMemory, ...] | list[ProcessMemory]) -> list[TopEntry]:
    return [TopEntry(p.pid, p.name, p.rss_minus_shr_bytes) for p in top(processes)]


def victim_of(process: ProcessMemory | None) -> Victim:
    if process is None:
        return Victim(None, "unknown (vanished before rayguard saw it)")
    return Victim(process.pid, process.name, process.rss_bytes, process.shared_bytes)


class MonitorLoop:
    def __init__(
        self,
        *,
        identity: Identity,
        limit_bytes: int,
        threshold: float,
        read_usage: Callable[[], tuple[int, int]],
        scan: Callable[[], list[ProcessMemory]],
        emitter: ReportEmitter,
        guard: Guard | None,
        kernel: KernelOomDetector | None,
        pollers: Pollers,
        period_ms: int,
        min_period_ms: int | None = None,
        quota_check: Callable[[list[ProcessMemory], float], list[QuotaAction]] | None = None,
        profile_of: Callable[[int | None, str, int | None], str | None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.quota_check = quota_check
        self.profile_of = profile_of  # the victim's memray file, when its group profiles
        self.identity = identity
        self.read_usage = read_usage
        self.scan = scan
        self.emitter = emitter
        self.guard = guard
        self.kernel = kernel
        self.pollers = pollers
        self.period_s = (period_ms or IDLE_PERIOD_MS) / 1000
        # Adaptive only with a guard to feed, and a floor under the period.
        self.pace = (Pace(min_period_ms / 1000, self.period_s)
                     if guard is not None and min_period_ms and min_period_ms < (period_ms or 0) else None)
        self.growth = GrowthRate()
        self._next_full_tick = float("-inf")
        self.clock = clock
        self.state = MonitorState(limit_bytes=limit_bytes, threshold=threshold)
        self.last_scan: list[ProcessMemory] = []
        self._last_scan_at = float("-inf")
        self._ticks = 0
        self.recently_seen: dict[int, tuple[ProcessMemory, float]] = {}
        # (pid, start ticks): a pid the guard killed may later belong to someone else.
        self.killed_by_guard: set[tuple[int, int]] = set()
        self.guard_kill_times: dict[int, float] = {}
        self.stop_event = threading.Event()
        self._thread: threading.Thread | None = None

    # -- one tick -------------------------------------------------------------------
    def _sample(self, now: float) -> tuple[int, float]:
        usage, working_set = self.read_usage()
        self.state.usage_bytes, self.state.working_set_bytes = usage, working_set
        # The rate comes from usage, the counter read every time (the working set's
        # inactive-file part is refreshed less often and would jump).
        self.growth.observe(now, usage)
        self.state.growth_bytes_s = self.growth.latest_bytes_s
        # The guard decides on fresh numbers: the latest rate, not the remembered peak.
        return working_set, self.growth.latest_bytes_s

    def fast_tick(self) -> None:
        """Between full ticks: one counter, and the guard's decision."""
        started = self.clock()
        working_set, rate = self._sample(started)
        self.state.fast_ticks += 1
        if self.guard is not None:
            kill = self.guard.tick(working_set, rate)
            if kill is not None:
                self._report_guard_kill(kill)

    def next_wait(self) -> float:
        """Seconds until the next tick: the pace's answer, never past the next full tick."""
        now = self.clock()
        until_full = max(0.0, self._next_full_tick - now)
        if self.pace is None:
            return until_full
        threshold_bytes = int(self.state.threshold * self.state.limit_bytes)
        wait = self.pace.interval(threshold_bytes - self.state.working_set_bytes,
                                  self.growth.planning_rate(now))
        return min(wait, until_full)

    def tick(self) -> None:
        started = self.clock()
        self._next_full_tick = started + self.period_s
        working_set, rate = self._sample(started)
        fraction = working_set / self.state.limit_bytes
        close = fraction >= self.state.threshold * SCAN_EVERY_TICK_AT
        self._ticks += 1
        if self.kernel is not None and (close or self._ticks % KERNEL_CHECK_EVERY == 0):
            self._check_kernel(working_set, fraction)
        if close or started - self._last_scan_at >= SCAN_PERIOD_S:
            self.refresh_scan(started)
        if self.guard is not None:
            kill = self.guard.tick(working_set, rate)
            if kill is not None:
                self._report_guard_kill(kill)
        self.pollers.run_due(started)
        finished = self.clock()
        self.state.last_tick_monotonic = finished
        self.state.ticks.observe(finished - started)

    def refresh_scan(self, now: float) -> None:
        self.last_scan = self.scan()
        self._last_scan_at = now
        # Processes seen lately, gone or not: a kernel kill between two reads of the
        # counter may already be missing from the latest scan.
        for process in self.last_scan:
            self.recently_seen[process.pid] = (process, now)
        self.recently_seen = {pid: seen for pid, seen in self.recently_seen.items()
                              if now - seen[1] <= RECENTLY_SEEN_S}
        if self.guard is not None:
            self.guard.tracker.observe(self.last_scan, now)
        if self.quota_check is not None:
            for action in self.quota_check(self.last_scan, now):
                self._report_quota(action)

    def _check_kernel(self, working_set: int, fraction: float) -> None:
        assert self.kernel is not None
        kills = self.kernel.check([p for p, _at in self.recently_seen.values()], self.killed_by_guard)
        for kill in kills:
            self._report_kernel_kill(kill, working_set, fraction)

    def _node(self, used: int, fraction: float) -> NodeUsage:
        return NodeUsage(used, self.state.limit_bytes, fraction, self.state.threshold)

    def _report_guard_kill(self, kill: GuardKill) -> None:
        self.killed_by_guard.add((kill.victim.pid, kill.victim.start_ticks))
        now = self.clock()
        self.guard_kill_times = {pid: at for pid, at in self.guard_kill_times.items()
                                 if at >= now - SAME_KILL_WINDOW_S}
        self.guard_kill_times[kill.victim.pid] = now
        self.state.count(GUARD_KILL)
        log.warning("guard killed pid %d (%s) at %.1f%% of the limit", kill.victim.pid,
                    kill.victim.name, kill.fraction * 100)
        self._emit(new_report(GUARD_KILL, self.identity, victim_of(kill.victim),
                              self._node(kill.used_bytes, kill.fraction), to_top(kill.processes)))

    def _report_quota(self, action: QuotaAction) -> None:
        self.state.count(QUOTA_EXCEEDED)
        used = self.state.working_set_bytes
        log.warning("actor %s (pid %d) over its memory= quota: %s", action.breach.actor_class,
                    action.process.pid, "killed" if action.breach.enforcement == "Kill" else "reported")
        self._emit(new_report(QUOTA_EXCEEDED, self.identity, victim_of(action.process),
                              self._node(used, used / self.state.limit_bytes),
                              to_top(self.last_scan), quota=action.breach))

    def _report_kernel_kill(self, kill: KernelKill, used: int, fraction: float) -> None:
        self.state.count(KERNEL_OOM_KILL)
        self._emit(new_report(KERNEL_OOM_KILL, self.identity, victim_of(kill.victim),
                              self._node(used, fraction), to_top(kill.processes_before)))

    def report(self, report: Report) -> None:
        """For detectors that run as pollers (Ray's monitor kills)."""
        if report.kind == RAY_MONITOR_KILL and report.victim.pid in self._recent_guard_pids():
            # Both monitors shot the same task within moments: one kill, one report.
            log.info("Ray's monitor also killed pid %s, which the guard had just killed",
                     report.victim.pid)
            return
        self.state.count(report.kind)
        self._emit(report)

    def _emit(self, report: Report) -> None:
        """Every report leaves here, naming the victim's memray file when there is one."""
        if self.profile_of is not None:
            seen = self.recently_seen.get(report.victim.pid) if report.victim.pid is not None else None
            try:  # the start time tells the victim from an older process that had its pid
                profile = self.profile_of(report.victim.pid, report.victim.name,
                                          seen[0].start_ticks if seen else None)
            except Exception:  # a report must never be lost to the profile index
                log.exception("cannot look up the memray file of pid %s", report.victim.pid)
                profile = None
            if profile:
                report = with_profile(report, profile)
        self.emitter.emit(report)

    def _recent_guard_pids(self) -> set[int]:
        horizon = self.clock() - SAME_KILL_WINDOW_S
        return {pid for pid, at in self.guard_kill_times.items() if at >= horizon}

    # -- the loop -------------------------------------------------------------------
    def run(self) -> None:
        while not self.stop_event.is_set():
            try:
                if self.clock() >= self._next_full_tick:
                    self.tick()
                else:
                    self.fast_tick()
            except Exception:
                self.state.failed_ticks += 1
                self._next_full_tick = self.clock() + self.period_s  # no hot loop on errors
                log.exception("monitor tick failed; continuing")
            self.stop_event.wait(self.next_wait())

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name="rayguard-monitor", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self.stop_event.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

"""A memory cgroup's working set, sampled every ~2 ms from a thread, and the processes of the
Ray tasks (`ray::hog`) watched until the first is killed and the memory is back."""

from __future__ import annotations

import threading
import time

from bench.harness.procfs import cmdline, exit_state
from rayguard_node.cgroup.files import UsageReader
from rayguard_node.cgroup.scratch import MemoryCgroup

MiB = 1 << 20
SAMPLE_PERIOD_S = 0.002
HOG_SCAN_PERIOD_S = 0.01
FREED_FRACTION = 0.5  # after the kill, the working set back under this: the memory is back


class Sampler(threading.Thread):
    """Samples the cgroup's working set every ~2 ms and watches the hog's process."""

    def __init__(self, cgroup: MemoryCgroup, limit_bytes: int, thresholds: list[float]) -> None:
        super().__init__(name="oom-race-sampler", daemon=True)
        self.cgroup = cgroup
        self.reader = UsageReader(cgroup.directory, cgroup.version)
        self.limit = limit_bytes
        self.crossed: dict[float, float | None] = {t: None for t in thresholds}
        self.rate_marks: dict[float, float | None] = {0.5: None, 0.85: None}
        self.peak_ws = 0
        self.hog_pids: set[int] = set()  # every task seen
        self.hog_pid: int | None = None  # the first to start exiting (or the first seen)
        self.hog_seen: float | None = None
        self.hog_killed: float | None = None  # the first of them started to exit
        self.hog_gone: float | None = None  # gone or a zombie
        self.freed: float | None = None  # killed, and the working set is back under FREED_FRACTION
        self.samples = 0
        self.gaps: list[tuple[float, float]] = []  # (time, gap since previous sample)
        self.errors: list[str] = []
        self.series: list[tuple[float, int]] = []  # (time, working set), every ~20 ms
        self._halt = threading.Event()

    def stop(self) -> None:
        self._halt.set()
        if self.is_alive():
            self.join(5)

    def _find_hog(self) -> None:
        try:
            pids = self.cgroup.pids()
        except OSError:
            return
        for pid in pids:
            if pid not in self.hog_pids and cmdline(pid).startswith(b"ray::hog"):
                self.hog_pids.add(pid)
                if self.hog_pid is None:
                    self.hog_pid, self.hog_seen = pid, time.monotonic()

    def run(self) -> None:
        previous = None
        last_scan = 0.0
        while not self._halt.is_set():
            now = time.monotonic()
            try:
                ws = self.reader.read().working_set_bytes
            except OSError as error:  # the cgroup went away under us
                self.errors.append(str(error))
                return
            self.samples += 1
            if previous is not None:
                self.gaps.append((now, now - previous))
            previous = now
            self.peak_ws = max(self.peak_ws, ws)
            if not self.series or now - self.series[-1][0] >= 0.02:
                self.series.append((now, ws))
            for table in (self.crossed, self.rate_marks):
                for fraction, when in table.items():
                    if when is None and ws >= fraction * self.limit:
                        table[fraction] = now
            if self.hog_killed is not None and self.freed is None and ws < FREED_FRACTION * self.limit:
                self.freed = now
            if self.hog_killed is None and now - last_scan >= HOG_SCAN_PERIOD_S:
                last_scan = now
                self._find_hog()
            if self.hog_killed is None:
                for pid in self.hog_pids:
                    killed, _gone = exit_state(pid)
                    if killed:
                        self.hog_killed, self.hog_pid = now, pid
                        break
            if self.hog_killed is not None and self.hog_gone is None and self.hog_pid is not None:
                if exit_state(self.hog_pid)[1]:
                    self.hog_gone = now
            time.sleep(SAMPLE_PERIOD_S)

    def max_gap_near(self, start: float | None, end: float | None) -> float | None:
        """The worst sampling gap over [start, end]: the resolution of a latency there."""
        if start is None or end is None:
            return None
        gaps = [gap for when, gap in self.gaps if start <= when <= end + 0.001]
        return max(gaps) if gaps else None

    def measured_rate_mib_s(self) -> float | None:
        low, high = self.rate_marks[0.5], self.rate_marks[0.85]
        if low is None or high is None or high <= low:
            return None
        return (0.35 * self.limit / MiB) / (high - low)

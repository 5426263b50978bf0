"""The monitor loop: one tick samples, guards, detects and reports (all faked)."""

from __future__ import annotations

import logging
import math
import threading
import time

import pytest

from rayguard_node.cgroup.processes import GCS_SERVER, RAYLET, WORKER, ProcessMemory
from rayguard_node.guard.killer import Guard, TaskTracker
from rayguard_node.guard.kernel_oom import KernelOomDetector
from rayguard_node.guard.loop import KERNEL_CHECK_EVERY, IDLE_PERIOD_MS, MonitorLoop, Pollers
from rayguard_node.contract.reports import (KERNEL_OOM_KILL, GUARD_KILL, RAY_MONITOR_KILL, Identity,
                                   NodeUsage, TopEntry, Victim, new_report)

MiB, GiB = 1024**2, 1024**3
LIMIT = 4 * GiB
IDENTITY = Identity("demo", "default", "demo-worker-cpu-x7k2p", "cpu", "worker")


def proc(pid, name, cls=WORKER, rss=100 * MiB, shr=0, start=1000):
    return ProcessMemory(pid, name, cls, rss, shr, start)


def processes():
    return [proc(10, "/ray/raylet", RAYLET, rss=300 * MiB, shr=100 * MiB, start=10),
            proc(11, "/ray/gcs_server", GCS_SERVER, rss=200 * MiB, start=11),
            proc(20, "ray::old", rss=2 * GiB, shr=512 * MiB, start=200),
            proc(21, "ray::new", rss=700 * MiB, shr=200 * MiB, start=300)]



def idle_loop(read_usage=lambda: (0, 0), period_ms: int = 50) -> MonitorLoop:
    """A loop with no guard, no kernel detector and no processes."""
    return MonitorLoop(identity=IDENTITY, limit_bytes=LIMIT, threshold=0.95, read_usage=read_usage,
                       scan=list, emitter=Emitter(), guard=None, kernel=None, pollers=Pollers(),
                       period_ms=period_ms)

class Emitter:
    def __init__(self):
        self.reports = []

    def emit(self, report):
        self.reports.append(report)


class World:
    """Fake clock, cgroup counters, procfs and kill for one MonitorLoop."""

    def __init__(self, tmp_path, guard=True, kernel=True, threshold=0.95):
        self.t = 100.0
        self.working_set = int(LIMIT * 0.5)
        self.oom_count = 0
        self.procs = processes()
        self.alive = {p.pid for p in self.procs}
        self.scans = 0
        self.sent = []
        self.procfs = tmp_path
        self.emitter = Emitter()
        self.pollers = Pollers()
        self.guard = Guard(threshold, LIMIT, TaskTracker(), self.scan, tmp_path, self.kill,
                           self.clock) if guard else None
        self.kernel = KernelOomDetector(lambda: self.oom_count, lambda pid: pid not in self.alive,
                                        self.clock, settle_s=2.0) if kernel else None
        self.loop = MonitorLoop(identity=IDENTITY, limit_bytes=LIMIT, threshold=threshold,
                                read_usage=self.read_usage, scan=self.scan, emitter=self.emitter,
                                guard=self.guard, kernel=self.kernel, pollers=self.pollers,
                                period_ms=50, clock=self.clock)
        for p in self.procs:
            self.write_stat(p.pid, "R")

    def write_stat(self, pid, state):
        (self.procfs / str(pid)).mkdir(exist_ok=True)
        (self.procfs / str(pid) / "stat").write_text(f"{pid} (x) {state} 1 1 1\n")

    def clock(self):
        return self.t

    def read_usage(self):
        return self.working_set + 10 * MiB, self.working_set

    def scan(self):
        self.scans += 1
        return [p for p in self.procs if p.pid in self.alive]

    def kill(self, pid, sig):
        self.sent.append((pid, sig))

    def tick(self, dt=0.125):
        self.loop.tick()
        self.t += dt


def test_guard_kill_emits_one_monitor_kill_report(tmp_path):
    world = World(tmp_path)
    world.tick()
    assert world.emitter.reports == []
    world.working_set = math.ceil(LIMIT * 0.97)
    world.tick()
    [report] = world.emitter.reports
    assert report.kind == GUARD_KILL
    assert report.identity == IDENTITY
    assert report.victim == Victim(21, "ray::new", 700 * MiB, 200 * MiB)
    assert report.node == NodeUsage(world.working_set, LIMIT, world.working_set / LIMIT, 0.95)
    assert report.top == (TopEntry(20, "ray::old", 1536 * MiB), TopEntry(21, "ray::new", 500 * MiB),
                          TopEntry(10, "/ray/raylet", 200 * MiB),  # ties: lower pid first
                          TopEntry(11, "/ray/gcs_server", 200 * MiB))
    assert world.loop.state.kills_by_kind == {GUARD_KILL: 1}
    assert world.loop.state.working_set_bytes == world.working_set
    assert world.loop.state.usage_bytes == world.working_set + 10 * MiB
    assert world.loop.state.limit_bytes == LIMIT and world.loop.state.threshold == 0.95
    assert world.loop.killed_by_guard == {(21, 300)}  # (pid, start ticks)
    world.tick()  # the victim has not released its memory yet: nothing new
    assert len(world.emitter.reports) == 1 and len(world.sent) == 1


def test_kernel_kill_emits_kernel_oom_kill_and_spares_the_guards_victim(tmp_path):
    world = World(tmp_path)
    world.working_set = math.ceil(LIMIT * 0.97)
    world.tick()  # guard kills 21
    world.alive -= {21, 20}  # 21 exits from SIGKILL; the kernel takes 20
    world.oom_count = 1
    world.working_set = 3 * GiB  # far from the threshold: the counter is read every 5th tick
    for _ in range(KERNEL_CHECK_EVERY):
        world.tick()
    kinds = [r.kind for r in world.emitter.reports]
    assert kinds == [GUARD_KILL, KERNEL_OOM_KILL]
    kernel = world.emitter.reports[1]
    assert kernel.victim == Victim(20, "ray::old", 2 * GiB, 512 * MiB)
    assert kernel.node == NodeUsage(3 * GiB, LIMIT, 0.75, 0.95)
    assert kernel.top[0] == TopEntry(20, "ray::old", 1536 * MiB)
    assert world.loop.state.kills_by_kind == {GUARD_KILL: 1, KERNEL_OOM_KILL: 1}


def test_two_unknown_kernel_kills_are_two_reports(tmp_path):
    world = World(tmp_path, guard=False)
    world.tick()
    world.oom_count = 2
    for _ in range(4 * KERNEL_CHECK_EVERY):  # seen, then reported once settle_s has passed
        world.tick(dt=0.25)
    assert [r.kind for r in world.emitter.reports] == [KERNEL_OOM_KILL] * 2
    assert [r.victim.pid for r in world.emitter.reports] == [None, None]
    assert world.emitter.reports[0].victim.name.startswith("unknown")
    assert world.loop.state.kills_by_kind == {KERNEL_OOM_KILL: 2}


def test_scan_cadence_depends_on_closeness(tmp_path):
    world = World(tmp_path, guard=False, kernel=False)
    for _ in range(8):  # t = 100.0 .. 100.875, far below the threshold
        world.tick()
    assert world.scans == 2  # at 100.0 and 100.5
    world.working_set = math.ceil(LIMIT * 0.95 * 0.8)
    for _ in range(8):
        world.tick()
    assert world.scans == 10  # every tick once close to the threshold


def test_tick_records_duration_and_runs_pollers(tmp_path):
    world = World(tmp_path, guard=False, kernel=False)
    ran = []

    def slow_scan():
        world.t += 0.001
        return []

    world.loop.scan = slow_scan
    world.pollers.add(1.0, lambda: ran.append(world.t))
    world.loop.tick()
    assert sum(world.loop.state.ticks.bucket_counts) == 1
    assert world.loop.state.ticks.sum_s == pytest.approx(0.001)
    assert world.loop.state.last_tick_monotonic == pytest.approx(100.001)
    assert ran == [pytest.approx(100.001)]


def test_report_from_a_poller_is_counted(tmp_path):
    world = World(tmp_path)
    report = new_report(RAY_MONITOR_KILL, IDENTITY, Victim(5, "ray::x"), NodeUsage(1, 2, 0.5, 0.95))
    world.loop.report(report)
    assert world.emitter.reports == [report]
    assert world.loop.state.kills_by_kind == {RAY_MONITOR_KILL: 1}


def test_disabled_guard_uses_the_idle_period(tmp_path):
    loop = idle_loop(period_ms=0)
    assert loop.period_s == IDLE_PERIOD_MS / 1000
    loop.tick()
    assert loop.state.kills_by_kind == {}


# -- Pollers --------------------------------------------------------------------------

def test_pollers_respect_their_periods():
    runs = []
    pollers = Pollers()
    pollers.add(1.0, lambda: runs.append("a"))
    pollers.add(0.5, lambda: runs.append("b"))
    for now, expected in [(10.0, ["a", "b"]), (10.4, []), (10.5, ["b"]), (10.9, []),
                          (11.0, ["a", "b"]), (11.2, [])]:
        runs.clear()
        pollers.run_due(now)
        assert runs == expected, now


def test_a_raising_job_does_not_stop_the_others(caplog):
    runs = []

    def boom():
        raise RuntimeError("redis gone")

    pollers = Pollers()
    pollers.add(1.0, boom)
    pollers.add(1.0, lambda: runs.append(1))
    with caplog.at_level(logging.ERROR, logger="rayguard_node.guard.loop"):
        pollers.run_due(0.0)
        pollers.run_due(0.5)
        pollers.run_due(1.0)
    assert runs == [1, 1]
    messages = [r.getMessage() for r in caplog.records]
    assert messages == ["periodic job boom failed"] * 2
    assert "redis gone" in caplog.records[0].exc_text


def test_pollers_take_jobs_only_through_add():
    with pytest.raises(TypeError):
        Pollers(jobs=[(1.0, print)])  # type: ignore[call-arg]


# -- run / stop -----------------------------------------------------------------------

def failing_loop(on_call=None):
    calls = []

    def read_usage():
        calls.append(1)
        if on_call:
            on_call(len(calls))
        raise OSError("memory.current vanished")

    loop = idle_loop(read_usage, period_ms=1)
    return loop, calls


def test_run_contains_failing_ticks_and_stops(caplog):
    holder = {}
    loop, calls = failing_loop(lambda n: n == 3 and holder["loop"].stop_event.set())
    holder["loop"] = loop
    with caplog.at_level(logging.ERROR, logger="rayguard_node.guard.loop"):
        loop.run()
    assert loop.state.failed_ticks == 3 and len(calls) == 3
    assert [r.getMessage() for r in caplog.records] == ["monitor tick failed; continuing"] * 3


def test_start_and_stop_in_a_thread():
    loop, calls = failing_loop()
    loop.start()
    deadline = time.monotonic() + 5
    while loop.state.failed_ticks < 3 and time.monotonic() < deadline:
        time.sleep(0.005)
    loop.stop(timeout_s=2)
    assert loop.state.failed_ticks >= 3
    assert not loop._thread.is_alive()
    assert "rayguard-monitor" not in [t.name for t in threading.enumerate()]
    stopped_at = loop.state.failed_ticks
    time.sleep(0.02)
    assert loop.state.failed_ticks == stopped_at


# -- found bugs -----------------------------------------------------------------------

def test_a_reused_pid_can_be_a_kernel_victim(tmp_path):
    world = World(tmp_path)
    world.working_set = math.ceil(LIMIT * 0.97)
    world.tick()  # guard kills 21
    world.alive.discard(21)
    world.write_stat(21, "Z")
    world.working_set = int(LIMIT * 0.5)
    world.tick(dt=60)
    world.procs.append(proc(21, "ray::reborn", rss=1 * GiB, start=90000))  # pid 21 reused
    world.alive.add(21)
    world.tick()
    world.alive.discard(21)
    world.oom_count = 1
    world.tick(dt=2.0)
    world.tick()
    assert [r.victim.name for r in world.emitter.reports] == ["ray::new", "ray::reborn"]


def test_tick_samples_are_bounded_without_scrapes():
    loop = idle_loop(period_ms=50)
    for _ in range(20_000):  # 1000 s of ticks at the default 50 ms
        loop.tick()
    assert sum(loop.state.ticks.bucket_counts) == 20_000  # counted, in constant memory
    assert len(loop.state.ticks.bucket_counts) == 11

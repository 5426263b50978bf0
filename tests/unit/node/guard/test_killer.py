"""The guard's decisions: which worker is newest, when to kill, when to wait (all faked)."""

from __future__ import annotations

import logging
import math
import signal
from pathlib import Path

import pytest

from rayguard_node.cgroup.processes import (
    DASHBOARD, GCS_SERVER, IDLE_WORKER, OTHER, RAYLET, REDIS, RUNTIME, WORKER, ProcessMemory,
)
from rayguard_node.guard.killer import Guard, GuardKill, TaskTracker, process_gone

MiB, GiB = 1024**2, 1024**3
LIMIT = 4 * GiB


def proc(pid, name, cls=WORKER, rss=100 * MiB, shr=10 * MiB, start=1000):
    return ProcessMemory(pid, name, cls, rss, shr, start)


class Clock:
    def __init__(self, t=100.0):
        self.t = t

    def __call__(self):
        return self.t


class Kills:
    def __init__(self, error=None):
        self.sent: list[tuple[int, int]] = []
        self.error = error

    def __call__(self, pid, sig):
        if self.error is not None:
            raise self.error
        self.sent.append((pid, sig))


def write_stat(root: Path, pid: int, comm: str, state: str) -> None:
    (root / str(pid)).mkdir(parents=True, exist_ok=True)
    (root / str(pid) / "stat").write_text(f"{pid} ({comm}) {state} 1 1 1 0 -1 4194560 0 0 0 0\n")


# -- TaskTracker ----------------------------------------------------------------------

def test_newest_is_the_worker_whose_title_changed_last():
    tracker = TaskTracker()
    a, b = proc(1, "ray::f", start=500), proc(2, "ray::g", start=100)
    tracker.observe([a], 10.0)
    tracker.observe([a, b], 11.0)
    assert tracker.newest([a, b]) == b  # b's task started later though its process is older
    b2 = proc(2, "ray::g", start=100)
    a2 = proc(1, "ray::h", start=500)  # a picked up a new task
    tracker.observe([a2, b2], 12.0)
    assert tracker.newest([a2, b2]) == a2


def test_same_title_keeps_its_start_time():
    tracker = TaskTracker()
    a, b = proc(1, "ray::f", start=900), proc(2, "ray::g", start=100)
    tracker.observe([a], 10.0)
    tracker.observe([a, b], 11.0)
    tracker.observe([a, b], 12.0)
    tracker.observe([a, b], 13.0)
    assert tracker.newest([a, b]).pid == 2


def test_idle_then_task_again_counts_as_new():
    tracker = TaskTracker()
    a, b = proc(1, "ray::f", start=100), proc(2, "ray::g", start=200)
    tracker.observe([a], 1.0)
    tracker.observe([a, b], 2.0)
    assert tracker.newest([a, b]).pid == 2
    tracker.observe([proc(1, "ray::IDLE", IDLE_WORKER, start=100), b], 3.0)
    tracker.observe([a, b], 4.0)  # the same title as before, but after an idle spell
    assert tracker.newest([a, b]).pid == 1


def test_ties_are_broken_by_start_ticks():
    tracker = TaskTracker()
    old, new, mid = proc(7, "ray::a", start=300), proc(3, "ray::b", start=900), proc(5, "ray::c", start=600)
    tracker.observe([old, new, mid], 5.0)
    assert tracker.newest([old, new, mid]).pid == 3


@pytest.mark.parametrize("cls", [RAYLET, GCS_SERVER, REDIS, DASHBOARD, IDLE_WORKER, RUNTIME, OTHER])
def test_non_workers_are_never_chosen(cls):
    tracker = TaskTracker()
    worker = proc(1, "ray::f", start=1)
    other = proc(2, "something", cls, rss=3 * GiB, start=99999)
    tracker.observe([worker], 1.0)
    tracker.observe([worker, other], 2.0)
    assert tracker.newest([worker, other]) == worker
    assert tracker.newest([other]) is None


# -- process_gone -----------------------------------------------------------------

@pytest.mark.parametrize("comm, state, released", [
    ("ray::f", "R", False),
    ("ray::f", "S", False),
    ("ray::f", "Z", True),
    ("ray::f", "X", True),
    ("a) Z (b", "R", False),   # a comm that looks like a zombie's stat
    ("x) R (y", "Z", True),
    ("ray:: IDLE", "D", False),
    ("((()))", "Z", True),
])
def test_process_gone_reads_the_state_after_the_last_paren(tmp_path, comm, state, released):
    write_stat(tmp_path, 42, comm, state)
    assert process_gone(tmp_path, 42) is released


def test_process_gone_when_gone(tmp_path):
    assert process_gone(tmp_path, 42) is True


# -- Guard.tick -----------------------------------------------------------------------

class Rig:
    def __init__(self, tmp_path, processes, threshold=0.95, release_timeout_s=2.0, kill=None):
        self.clock = Clock()
        self.kills = kill or Kills()
        self.processes = list(processes)
        self.procfs = tmp_path
        for p in self.processes:
            write_stat(tmp_path, p.pid, p.name, "R")
        self.guard = Guard(threshold, LIMIT, TaskTracker(), lambda: list(self.processes),
                           procfs_root=tmp_path, kill=self.kills, clock=self.clock,
                           release_timeout_s=release_timeout_s)

    def tick(self, fraction, dt=0.05):
        self.clock.t += dt
        return self.guard.tick(int(LIMIT * fraction))

    def release(self, pid, how="reaped"):
        if how == "zombie":
            write_stat(self.procfs, pid, "ray::f", "Z")
        else:
            for entry in (self.procfs / str(pid)).iterdir():
                entry.unlink()
            (self.procfs / str(pid)).rmdir()
        self.processes = [p for p in self.processes if p.pid != pid]


def base_processes():
    return [proc(10, "/ray/raylet", RAYLET, rss=300 * MiB, start=10),
            proc(11, "/ray/gcs_server", GCS_SERVER, start=11),
            proc(20, "ray::old", rss=2 * GiB, start=200),
            proc(21, "ray::new", rss=500 * MiB, shr=100 * MiB, start=300)]


def test_below_threshold_never_kills(tmp_path):
    rig = Rig(tmp_path, base_processes())
    for fraction in (0.0, 0.5, 0.9, 0.9499):
        assert rig.tick(fraction) is None
    assert rig.kills.sent == []


def test_at_threshold_kills_the_newest_task_worker(tmp_path):
    rig = Rig(tmp_path, base_processes())
    used = math.ceil(LIMIT * 0.95)  # exactly at the threshold
    assert rig.guard.tick(used - 1) is None
    rig.clock.t += 1
    kill = rig.guard.tick(used)
    assert rig.kills.sent == [(21, signal.SIGKILL)]
    assert isinstance(kill, GuardKill)
    assert kill.victim.pid == 21 and kill.victim.name == "ray::new"
    assert kill.used_bytes == used and kill.limit_bytes == LIMIT
    assert kill.fraction == used / LIMIT
    assert kill.threshold == 0.95
    assert [p.pid for p in kill.processes] == [10, 11, 20, 21]
    assert kill.seconds_over_threshold == 0.0


def test_after_a_kill_waits_for_release_then_picks_again(tmp_path):
    rig = Rig(tmp_path, base_processes())
    assert rig.tick(0.97).victim.pid == 21
    for _ in range(5):  # the victim is still running: no second victim
        assert rig.tick(0.99) is None
    rig.release(21)
    second = rig.tick(0.99)
    assert second.victim.pid == 20
    assert second.seconds_over_threshold == pytest.approx(6 * 0.05)
    assert rig.kills.sent == [(21, signal.SIGKILL), (20, signal.SIGKILL)]


def test_a_zombie_holding_its_memory_is_not_released_yet(tmp_path):
    """A multi-threaded worker turns zombie long before its pages are freed."""
    rig = Rig(tmp_path, base_processes())
    rig.tick(0.97)
    rig.release(21, how="zombie")
    for _ in range(5):
        assert rig.tick(0.97) is None  # usage has not fallen: keep waiting
    assert len(rig.kills.sent) == 1


def test_usage_falling_by_half_the_victims_memory_counts_as_released(tmp_path):
    rig = Rig(tmp_path, base_processes())
    used_at_kill = LIMIT  # 4 GiB: even 200 MiB less stays over the 0.95 threshold
    assert rig.guard.tick(used_at_kill).victim.pid == 21  # 400 MiB of its own
    rig.processes = [p for p in rig.processes if p.pid != 21]
    rig.clock.t += 0.05
    assert rig.guard.tick(used_at_kill - 150 * MiB) is None  # not yet half of it
    rig.clock.t += 0.05
    second = rig.guard.tick(used_at_kill - 200 * MiB)  # half is back; still over: next victim
    assert second is not None and second.victim.pid == 20


def test_release_timeout_on_the_fake_clock(tmp_path):
    rig = Rig(tmp_path, base_processes(), release_timeout_s=2.0)
    rig.tick(0.97, dt=0)  # killed at t=100.0; the fake kill leaves it running
    assert rig.tick(0.97, dt=1.99) is None
    kill = rig.tick(0.97, dt=0.01)  # exactly 2.0 s later
    assert kill is not None and kill.victim.pid == 21  # still the newest: chosen again
    assert len(rig.kills.sent) == 2


def test_once_usage_dropped_a_new_rise_is_a_new_decision(tmp_path):
    rig = Rig(tmp_path, base_processes())
    rig.tick(0.97)
    assert rig.tick(0.5) is None  # the memory came back
    assert rig.tick(0.97) is not None  # over again: the guard acts again
    assert len(rig.kills.sent) == 2


def test_no_victim_warns_once_until_usage_falls(tmp_path, caplog):
    only_system = [p for p in base_processes() if p.process_class != WORKER]
    rig = Rig(tmp_path, only_system)
    with caplog.at_level(logging.WARNING, logger="rayguard_node.guard.killer"):
        for _ in range(4):
            assert rig.tick(0.98) is None
        assert len(caplog.records) == 1
        assert "no task worker" in caplog.records[0].getMessage()
        assert rig.tick(0.5) is None
        assert rig.tick(0.98) is None
        assert rig.tick(0.98) is None
    assert len(caplog.records) == 2
    assert rig.kills.sent == []


def test_process_lookup_error_gives_no_report_and_no_wait(tmp_path):
    rig = Rig(tmp_path, base_processes(), kill=Kills(ProcessLookupError()))
    assert rig.tick(0.99) is None
    rig.kills.error = None
    assert rig.tick(0.99).victim.pid == 21  # not waiting for a process it never killed

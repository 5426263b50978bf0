"""Kernel OOM kills: the oom_kill counter rose; whom did the kernel take? (all faked)."""

from __future__ import annotations

from rayguard_node.cgroup.processes import IDLE_WORKER, OTHER, RAYLET, WORKER, ProcessMemory
from rayguard_node.guard.kernel_oom import KernelKill, KernelOomDetector

MiB, GiB = 1024**2, 1024**3


def proc(pid, name, cls=WORKER, rss=100 * MiB, shr=0, start=1000):
    return ProcessMemory(pid, name, cls, rss, shr, start)


class Node:
    """A fake oom_kill counter, a fake set of live pids and a fake clock."""

    def __init__(self, count=0, alive=(), t=50.0):
        self.count = count
        self.alive = set(alive)
        self.t = t

    def read_count(self):
        return self.count

    def is_gone(self, pid):
        return pid not in self.alive

    def clock(self):
        return self.t

    def detector(self, settle_s=2.0):
        return KernelOomDetector(self.read_count, self.is_gone, self.clock, settle_s)


BEFORE = [
    proc(10, "/ray/raylet", RAYLET, rss=400 * MiB),
    proc(20, "ray::small", rss=300 * MiB, shr=100 * MiB),
    proc(21, "ray::big", rss=2 * GiB, shr=1 * GiB),
    proc(30, "python helper.py", OTHER, rss=3 * GiB),
]


def node_with(before=BEFORE, **kw):
    return Node(alive={p.pid for p in before}, **kw)


def test_no_rise_no_kills():
    node = node_with(count=3)
    detector = node.detector()
    assert detector.supported is True
    node.alive.discard(21)  # a worker exited on its own: not a kernel kill
    for _ in range(3):
        assert detector.check(BEFORE, set()) == []


def test_rise_by_one_names_the_vanished_worker():
    node = node_with(count=3)
    detector = node.detector()
    node.count, node.alive = 4, node.alive - {21}
    kills = detector.check(BEFORE, set())
    assert kills == [KernelKill(BEFORE[2], tuple(BEFORE))]
    assert kills[0].victim.rss_minus_shr_bytes == 1 * GiB
    assert detector.check(BEFORE, set()) == []  # reported once


def test_workers_before_others_then_largest_first():
    node = node_with(count=0)
    detector = node.detector()
    # the 'other' process is the largest of all, but a worker is blamed first
    node.count, node.alive = 1, {10}
    kills = detector.check(BEFORE, set())
    assert [k.victim.pid for k in kills] == [21]


def test_two_kills_take_the_two_largest_workers():
    node = node_with(count=0)
    detector = node.detector()
    node.count, node.alive = 2, {10}
    kills = detector.check(BEFORE, set())
    assert [k.victim.pid for k in kills] == [21, 20]


def test_workers_by_size_then_other_processes():
    node = node_with(count=0)
    detector = node.detector()
    node.count, node.alive = 3, {10}
    assert [k.victim.pid for k in detector.check(BEFORE, set())] == [21, 20, 30]


def test_idle_workers_count_as_workers():
    before = [proc(1, "python x", OTHER, rss=4 * GiB), proc(2, "ray::IDLE", IDLE_WORKER, rss=200 * MiB)]
    node = node_with(before, count=0)
    detector = node.detector()
    node.count, node.alive = 1, set()
    assert [k.victim.pid for k in detector.check(before, set())] == [2]


def test_victim_still_exiting_waits_until_gone():
    node = node_with(count=5)
    detector = node.detector(settle_s=2.0)
    node.count = 6  # counter rose; pid 21 still exiting
    assert detector.check(BEFORE, set()) == []
    node.t += 1.0
    assert detector.check(BEFORE, set()) == []
    node.alive.discard(21)
    node.t += 0.5
    kills = detector.check(BEFORE, set())
    assert [k.victim.pid for k in kills] == [21]


def test_victim_never_seen_gone_is_unknown_after_settle():
    node = node_with(count=5)
    detector = node.detector(settle_s=2.0)
    node.count = 6
    assert detector.check(BEFORE, set()) == []
    node.t += 1.999
    assert detector.check(BEFORE, set()) == []
    node.t += 0.001  # the deadline itself
    assert detector.check(BEFORE, set()) == [KernelKill(None, tuple(BEFORE))]
    assert detector.check(BEFORE, set()) == []


def test_rise_by_two_with_one_vanished():
    node = node_with(count=0)
    detector = node.detector(settle_s=2.0)
    node.count, node.alive = 2, node.alive - {20}
    assert detector.check(BEFORE, set()) == []  # one more may still be exiting
    node.t += 2.0
    kills = detector.check(BEFORE, set())
    assert [k.victim.pid if k.victim else None for k in kills] == [20, None]


def test_further_rises_while_pending_add_up():
    node = node_with(count=0)
    detector = node.detector(settle_s=2.0)
    node.count = 1
    assert detector.check(BEFORE, set()) == []
    node.count = 2
    node.alive -= {20, 21}
    kills = detector.check(BEFORE, set())
    assert [k.victim.pid for k in kills] == [21, 20]


def test_the_guards_own_kills_are_never_blamed():
    node = node_with(count=0)
    detector = node.detector(settle_s=2.0)
    node.count, node.alive = 1, node.alive - {21, 20}
    kills = detector.check(BEFORE, {(21, 1000)})  # (pid, start ticks) of the guard's victim
    assert [k.victim.pid for k in kills] == [20]


def test_a_reused_pid_is_not_mistaken_for_the_guards_victim():
    node = node_with(count=0)
    detector = node.detector(settle_s=2.0)
    node.count, node.alive = 1, node.alive - {21}
    kills = detector.check(BEFORE, {(21, 5)})  # the guard killed an older process with pid 21
    assert [k.victim.name for k in kills] == ["ray::big"]


def test_only_the_guards_kill_vanished_gives_unknown():
    node = node_with(count=0)
    detector = node.detector(settle_s=2.0)
    node.count, node.alive = 1, node.alive - {21}
    assert detector.check(BEFORE, {(21, 1000)}) == []
    node.t += 2.0
    assert detector.check(BEFORE, {(21, 1000)}) == [KernelKill(None, tuple(BEFORE))]


def test_unsupported_counter():
    node = node_with()
    node.count = None
    detector = node.detector()
    assert detector.supported is False
    node.alive = set()
    assert detector.check(BEFORE, set()) == []
    node.t += 10
    assert detector.check(BEFORE, set()) == []


def test_counter_unreadable_for_a_moment_then_back():
    node = node_with(count=4)
    detector = node.detector()
    node.count = None
    assert detector.check(BEFORE, set()) == []
    node.count, node.alive = 5, node.alive - {20}
    assert [k.victim.pid for k in detector.check(BEFORE, set())] == [20]


def test_the_scan_at_the_rise_is_kept():
    node = node_with(count=0)
    detector = node.detector(settle_s=2.0)
    node.count = 1
    assert detector.check(BEFORE, set()) == []
    node.alive.discard(21)
    later_scan = [p for p in BEFORE if p.pid != 21]  # the victim is no longer in a new scan
    kills = detector.check(later_scan, set())
    assert [k.victim.pid for k in kills] == [21]
    assert kills[0].processes_before == tuple(BEFORE)

"""The adaptive guard: how soon it looks again, and when one kill is not enough."""

from __future__ import annotations

import math
import signal

import pytest

from rayguard_node.guard.pace import LOOK_AGAIN_SHARE, GrowthRate, Pace

from .test_killer import LIMIT, Rig, base_processes, proc
from .test_loop import World

MiB, GiB = 1024**2, 1024**3


# -- Pace -----------------------------------------------------------------------------

def test_no_growth_or_far_away_waits_the_full_period():
    pace = Pace(0.002, 0.05)
    assert pace.interval(1 * GiB, 0.0) == 0.05
    assert pace.interval(1 * GiB, -5e9) == 0.05  # shrinking
    assert pace.interval(1 * GiB, 100 * MiB) == 0.05  # 10 s away


def test_growth_towards_the_threshold_shortens_the_wait_to_the_floor():
    pace = Pace(0.002, 0.05)
    # 128 MiB left at 1 GiB/s: 125 ms to go; half of it is more than the period.
    assert pace.interval(128 * MiB, 1 * GiB) == 0.05
    assert pace.interval(32 * MiB, 1 * GiB) == pytest.approx(LOOK_AGAIN_SHARE * 32 / 1024)
    assert pace.interval(1 * MiB, 10 * GiB) == 0.002
    assert pace.interval(0, 0.0) == 0.002  # at or over the threshold: as fast as allowed


def test_growth_rate_is_the_last_interval_and_remembers_its_peak():
    rate = GrowthRate(half_life_s=1.0)
    rate.observe(10.0, 0)
    rate.observe(10.1, 100 * MiB)
    assert rate.latest_bytes_s == pytest.approx(1000 * MiB)
    rate.observe(10.2, 100 * MiB)
    assert rate.latest_bytes_s == 0
    assert rate.planning_rate(10.2) == pytest.approx(1000 * MiB * 0.5 ** 0.1)
    assert rate.planning_rate(12.1) == pytest.approx(1000 * MiB / 4)  # two half-lives on
    rate.observe(12.2, 50 * MiB)  # shrinking: negative latest, the peak still counts
    assert rate.latest_bytes_s < 0 and rate.planning_rate(12.2) > 0


# -- the loop -------------------------------------------------------------------------

def adaptive_world(tmp_path, min_period_ms=2):
    world = World(tmp_path)
    world.loop = type(world.loop)(
        identity=world.loop.identity, limit_bytes=LIMIT, threshold=0.95, read_usage=world.read_usage,
        scan=world.scan, emitter=world.emitter, guard=world.guard, kernel=world.kernel,
        pollers=world.pollers, period_ms=50, min_period_ms=min_period_ms, clock=world.clock)
    return world


def test_the_loop_waits_the_period_when_idle_and_the_floor_when_racing(tmp_path):
    world = adaptive_world(tmp_path)
    world.loop.tick()
    assert world.loop.next_wait() == pytest.approx(0.05)
    world.t += 0.01
    before = world.working_set
    world.working_set = int(LIMIT * 0.95) - 100 * MiB  # fast, and 100 MiB below the threshold
    world.loop.fast_tick()
    assert world.loop.next_wait() == pytest.approx(0.002)
    assert world.loop.state.fast_ticks == 1 and world.scans == 1  # a fast tick scans nothing
    assert world.loop.state.growth_bytes_s == pytest.approx((world.working_set - before) / 0.01)


def test_fast_ticks_never_postpone_the_next_full_tick(tmp_path):
    world = adaptive_world(tmp_path)
    world.loop.tick()
    world.t += 0.049
    assert world.loop.next_wait() == pytest.approx(0.001)


def test_a_fixed_poll_when_the_floor_is_the_period(tmp_path):
    world = adaptive_world(tmp_path, min_period_ms=50)
    assert world.loop.pace is None
    world.loop.tick()
    world.t += 0.01
    world.working_set += 200 * MiB
    assert world.loop.next_wait() == pytest.approx(0.04)  # only the full tick's schedule


def test_a_fast_tick_over_the_threshold_kills_and_reports(tmp_path):
    world = adaptive_world(tmp_path)
    world.loop.tick()
    world.t += 0.005
    world.working_set = math.ceil(LIMIT * 0.97)
    world.loop.fast_tick()
    [report] = world.emitter.reports
    assert report.victim.pid == 21 and world.sent == [(21, signal.SIGKILL)]


# -- several kills --------------------------------------------------------------------

def growing_processes():
    return base_processes() + [proc(22, "ray::newer", rss=400 * MiB, start=400)]


def test_while_a_victim_frees_slowly_and_others_still_grow_fast_the_next_newest_goes(tmp_path):
    rig = Rig(tmp_path, growing_processes())
    rig.clock.t += 1
    first = rig.guard.tick(int(LIMIT * 0.96))
    assert first.victim.pid == 22
    # 10 ms later: 1% of the limit more, at ~4 GiB/s: the limit is ~10 ms away, the victim's
    # memory is not back (expected in ~100 ms): no time to wait.
    rig.clock.t += 0.01
    second = rig.guard.tick(int(LIMIT * 0.97), rate_bytes_s=0.01 * LIMIT / 0.01)
    assert second is not None and second.victim.pid == 21
    assert [pid for pid, _sig in rig.kills.sent] == [22, 21]
    assert rig.guard.waiting_pids == {22, 21}


def test_while_a_victim_frees_and_growth_has_stopped_the_guard_waits(tmp_path):
    rig = Rig(tmp_path, growing_processes())
    rig.clock.t += 1
    assert rig.guard.tick(int(LIMIT * 0.96)).victim.pid == 22
    rig.clock.t += 0.01
    assert rig.guard.tick(int(LIMIT * 0.97), rate_bytes_s=0.0) is None
    rig.clock.t += 0.01
    assert rig.guard.tick(int(LIMIT * 0.97), rate_bytes_s=50 * MiB) is None  # the limit is 2 s away
    assert [pid for pid, _sig in rig.kills.sent] == [22]


def test_a_victim_is_never_chosen_twice_while_it_dies(tmp_path):
    rig = Rig(tmp_path, growing_processes())
    rig.clock.t += 1
    rig.guard.tick(int(LIMIT * 0.96))
    rig.clock.t += 0.01
    rig.guard.tick(int(LIMIT * 0.98), rate_bytes_s=10 * GiB)
    rig.clock.t += 0.01
    rig.guard.tick(int(LIMIT * 0.99), rate_bytes_s=10 * GiB)
    sent = [pid for pid, _sig in rig.kills.sent]
    assert sent == [22, 21, 20]  # then no task worker is left: never the raylet or the GCS
    rig.clock.t += 0.01
    assert rig.guard.tick(int(LIMIT * 0.995), rate_bytes_s=10 * GiB) is None
    assert len(rig.kills.sent) == 3


def test_the_expected_release_time_is_learned(tmp_path):
    rig = Rig(tmp_path, growing_processes())
    rig.clock.t += 1
    rig.guard.tick(int(LIMIT * 0.96))
    rig.clock.t += 0.3
    assert rig.guard.tick(int(LIMIT * 0.5)) is None  # the victim's memory came back after 300 ms
    assert rig.guard.expected_release_s == pytest.approx((0.1 + 0.3) / 2)

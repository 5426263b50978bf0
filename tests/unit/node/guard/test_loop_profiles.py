"""Every report the loop emits names the victim's memray file when the profile index has one."""

from __future__ import annotations

import math
from pathlib import Path

from rayguard_node.contract.reports import (GUARD_KILL, RAY_MONITOR_KILL, NodeUsage, Victim, new_report)
from tests.unit.node.guard.test_loop import IDENTITY, LIMIT, World

PATH = "/tmp/ray/session_x/logs/memray/21-300.bin"


def test_a_guard_kill_names_the_victims_profile(tmp_path: Path) -> None:
    world = World(tmp_path)
    asked: list[tuple[int | None, str, int | None]] = []
    world.loop.profile_of = lambda pid, name, ticks: asked.append((pid, name, ticks)) or PATH
    world.working_set = math.ceil(LIMIT * 0.97)
    world.tick()
    [report] = world.emitter.reports
    assert report.kind == GUARD_KILL and report.profile == PATH
    assert f"memray profile: {PATH}" in report.message
    assert asked == [(21, "ray::new", 300)]  # the victim's start ticks, from the scan


def test_a_ray_monitor_kill_names_it_too(tmp_path: Path) -> None:
    world = World(tmp_path)
    world.tick()  # pid 21 seen
    world.loop.profile_of = lambda pid, name, ticks: PATH if (pid, ticks) == (21, 300) else None
    for pid in (21, 20):
        world.loop.report(new_report(RAY_MONITOR_KILL, IDENTITY, Victim(pid, "ray::x"), NodeUsage(1, LIMIT, 0.5, 0.95)))
    assert [r.profile for r in world.emitter.reports] == [PATH, None]
    assert "memray" not in world.emitter.reports[1].message


def test_a_failing_lookup_never_costs_the_report(tmp_path: Path) -> None:
    world = World(tmp_path)

    def broken(pid: int | None, name: str, ticks: int | None) -> str | None:
        raise OSError("disk gone")

    world.loop.profile_of = broken
    world.working_set = math.ceil(LIMIT * 0.97)
    world.tick()
    [report] = world.emitter.reports
    assert report.kind == GUARD_KILL and report.profile is None

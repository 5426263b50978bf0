"""`rayguard top`'s terminal loop: full screen on a TTY, plain lines otherwise, JSON, --once,
Ctrl-C, and Redis failures after the first refresh."""

from __future__ import annotations

import io
import json
import os
from typing import Callable

import pytest

from rayguard_node.contract.live import LiveNode, LiveRow
from rayguard_operator.top.screen import (ENTER_FULL_SCREEN, HOME_AND_CLEAR, LEAVE_FULL_SCREEN, ScreenOptions,
                                          run_screen)
from rayguard_operator.top.view import NodeView, RowView, Snapshot

NOW = 1_700_000_000_000


def snap(i: int) -> Snapshot:
    node = LiveNode("p-worker-0", "cpu", "worker", 1 << 31, (100 + i) << 20, 0.95, NOW + i * 1000, 1)
    row = LiveRow(40 + i, f"ray::task{i}", "worker", 10 << 20, None, 10 << 20, i)
    return Snapshot(NOW + i * 1000, (NodeView(node, 0),), (RowView("p-worker-0", row),))


class Script:
    """Reads that return snapshots 1, 2, ... or raise what the test queued; Ctrl-C after `stop_after`
    sleeps."""

    def __init__(self, outcomes: list[object], stop_after: int) -> None:
        self.outcomes = list(outcomes)
        self.sleeps: list[float] = []
        self.stop_after = stop_after
        self.now = 0.0

    def read(self) -> Snapshot:
        self.now += 0.25  # each read takes a quarter second
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome  # type: ignore[return-value]

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        if len(self.sleeps) >= self.stop_after:
            raise KeyboardInterrupt
        self.now += seconds

    def clock(self) -> float:
        return self.now


def run(options: ScreenOptions, script: Script) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = run_screen(script.read, snap(0), options, lambda e: f"Redis: {e}", (ConnectionError,), out, err,
                        terminal_size=lambda: os.terminal_size((60, 12)), sleep=script.sleep, clock=script.clock)
    return status, out.getvalue(), err.getvalue()


def test_once_prints_one_table_without_escape_codes_even_on_a_tty() -> None:
    script = Script([], stop_after=1)
    status, out, _ = run(ScreenOptions("src", once=True, tty=True), script)
    assert status == 0 and script.sleeps == []
    assert out.startswith("rayguard top  src  ") and "ray::task0" in out and "\x1b" not in out


def test_once_json_is_one_object() -> None:
    status, out, _ = run(ScreenOptions("src", once=True, as_json=True), Script([], 1))
    assert status == 0 and out.count("\n") == 1
    assert json.loads(out)["rows"][0]["name"] == "ray::task0"


def test_a_tty_gets_a_full_screen_redrawn_each_interval_and_restored_on_ctrl_c() -> None:
    script = Script([snap(1), snap(2)], stop_after=3)
    status, out, _ = run(ScreenOptions("src", interval_s=1.0, tty=True), script)
    assert status == 0
    assert out.startswith(ENTER_FULL_SCREEN) and out.endswith(LEAVE_FULL_SCREEN)
    frames = out[len(ENTER_FULL_SCREEN):-len(LEAVE_FULL_SCREEN)].split(HOME_AND_CLEAR)[1:]
    assert [("ray::task0" in f, "ray::task1" in f, "ray::task2" in f) for f in frames] == [
        (True, False, False), (False, True, False), (False, False, True)]
    assert all(len(line) <= 60 for f in frames for line in f.splitlines())
    assert all(len(f.splitlines()) <= 12 for f in frames)
    # One refresh per interval, the read's own time included.
    assert script.sleeps == [1.0, 0.75, 0.75]


def test_without_a_tty_each_refresh_is_plain_lines() -> None:
    status, out, _ = run(ScreenOptions("src", tty=False), Script([snap(1)], stop_after=2))
    assert status == 0 and "\x1b" not in out
    assert out.count("rayguard top  src") == 2 and "\n\nrayguard top" in out


def test_json_streams_one_object_per_refresh() -> None:
    status, out, _ = run(ScreenOptions("src", as_json=True, tty=True), Script([snap(1), snap(2)], 3))
    assert status == 0 and "\x1b" not in out
    assert [json.loads(line)["time_ms"] for line in out.splitlines()] == [NOW, NOW + 1000, NOW + 2000]


def test_a_failure_after_the_first_refresh_is_shown_and_retried() -> None:
    script = Script([ConnectionError("gone"), snap(2)], stop_after=3)
    status, out, _ = run(ScreenOptions("src"), script)
    assert status == 0
    assert out.count("rayguard top  src") == 3  # the first view, it again under the error, the next
    assert out.count("\nRedis: gone; retrying (the view below is from") == 1
    assert out.count("ray::task0") == 2 and out.count("ray::task2") == 1
    status, out, err = run(ScreenOptions("src", as_json=True), Script([ConnectionError("gone"), snap(2)], 3))
    assert err == "Redis: gone; retrying\n" and len(out.splitlines()) == 2


def test_other_errors_are_not_swallowed() -> None:
    with pytest.raises(ValueError):
        run(ScreenOptions("src"), Script([ValueError("bug")], 3))


def test_a_closed_pipe_ends_quietly() -> None:
    class ClosedPipe(io.StringIO):
        def write(self, text: str) -> int:
            raise BrokenPipeError

    reads: Callable[[], Snapshot] = lambda: snap(1)  # noqa: E731
    assert run_screen(reads, snap(0), ScreenOptions("src", once=True), str, (), ClosedPipe()) == 0

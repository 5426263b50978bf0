"""What the local-mode autoscaling tests read from `rayguard local up`'s output: the
ScaledUp/ScaledDown Events of one group, checked as one climb to a peak and one descent."""

from __future__ import annotations

import re

EVENT = re.compile(r"Event  Normal  Scaled(?:Up|Down)  raycluster/\S+\n  (.*)")


def scale_events(out: str) -> list[str]:
    return EVENT.findall(out)


def assert_up_to_peak_then_down(out: str, group: str, peak: int, low: int = 0) -> None:
    """From `low` up to `peak` for pending demand, then down to `low` when idle: in one step or
    several each way (demand and idleness may reach Ray's autoscaler an update apart), each
    step starting where the last ended, never above `peak`."""
    steps = [re.fullmatch(rf"group {re.escape(group)}: (\d+) -> (\d+) \((.*)\)", e) for e in scale_events(out)]
    assert steps and all(steps), out[-4000:]
    counts = [int(steps[0][1])] + [int(m[2]) for m in steps]  # type: ignore[index]
    assert counts[0] == low and counts[-1] == low and max(counts) == peak, counts
    assert all(int(m[1]) == before for m, before in zip(steps, counts)), counts  # type: ignore[index]
    top = counts.index(peak)
    assert counts[:top + 1] == sorted(counts[:top + 1]), counts
    assert counts[top:] == sorted(counts[top:], reverse=True), counts
    assert [m[3] for m in steps] == ["pending demand"] * top + ["idle"] * (len(steps) - top), out[-4000:]  # type: ignore[index]

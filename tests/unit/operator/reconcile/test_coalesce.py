"""Coalescer: a burst of touches is one pass; touches during a pass make one more."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from typing import Callable, Hashable

from rayguard_operator.reconcile.coalesce import Coalescer

SETTLE = 0.02


class Recorder:
    """A pass that records its key, optionally blocking until released (before it has
    `started`, as a pass waiting for its cluster's lock, when `locked`)."""

    def __init__(self) -> None:
        self.runs: list[Hashable] = []
        self.started = threading.Event()
        self.release = threading.Event()
        self.release.set()
        self.fail: set[Hashable] = set()
        self.locked = False

    def __call__(self, key: Hashable, started: Callable[[], None]) -> None:
        self.runs.append(key)
        if not self.locked:
            started()
        self.started.set()
        self.release.wait(5)
        if self.locked:
            started()
        if key in self.fail:
            raise RuntimeError(f"pass over {key} failed")


async def until(predicate, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.005)


async def idle(coalescer: Coalescer) -> None:
    await until(lambda: not coalescer._tasks)


def test_a_burst_is_one_pass() -> None:
    async def main() -> list[Hashable]:
        recorder = Recorder()
        coalescer = Coalescer(recorder, settle_s=SETTLE)
        for _ in range(26):
            coalescer.touch(("ns", "a"))
        await idle(coalescer)
        await coalescer.close()
        return recorder.runs
    assert asyncio.run(main()) == [("ns", "a")]


def test_touches_during_a_pass_make_exactly_one_more() -> None:
    async def main() -> tuple[list[Hashable], int]:
        recorder = Recorder()
        coalescer = Coalescer(recorder, settle_s=SETTLE)
        recorder.release.clear()
        coalescer.touch("a")
        await until(recorder.started.is_set)
        for _ in range(10):
            coalescer.touch("a")  # while the pass runs: it may have read the state already
        recorder.release.set()
        await idle(coalescer)
        await coalescer.close()
        return recorder.runs, coalescer.passes
    assert asyncio.run(main()) == (["a", "a"], 2)


def test_touches_while_a_pass_waits_for_its_lock_are_covered_by_it() -> None:
    async def main() -> list[Hashable]:
        recorder = Recorder()
        coalescer = Coalescer(recorder, settle_s=SETTLE)
        recorder.release.clear()
        recorder.locked = True
        coalescer.touch("a")
        await until(recorder.started.is_set)
        for _ in range(10):
            coalescer.touch("a")  # the pass has not read anything yet
        recorder.release.set()
        await idle(coalescer)
        await coalescer.close()
        return recorder.runs
    assert asyncio.run(main()) == ["a"]


def test_a_touch_after_the_last_pass_starts_a_new_one() -> None:
    async def main() -> list[Hashable]:
        recorder = Recorder()
        coalescer = Coalescer(recorder, settle_s=SETTLE)
        coalescer.touch("a")
        await idle(coalescer)
        coalescer.touch("a")
        await idle(coalescer)
        await coalescer.close()
        return recorder.runs
    assert asyncio.run(main()) == ["a", "a"]


def test_clusters_do_not_wait_for_each_other_and_a_failure_stops_nothing() -> None:
    async def main() -> Counter[Hashable]:
        recorder = Recorder()
        recorder.fail.add("bad")
        coalescer = Coalescer(recorder, settle_s=SETTLE, workers=2)
        for key in ("a", "bad", "b", "a", "bad"):
            coalescer.touch(key)
        await idle(coalescer)
        coalescer.touch("bad")
        await idle(coalescer)
        await coalescer.close()
        return Counter(recorder.runs)
    assert asyncio.run(main()) == Counter({"a": 1, "b": 1, "bad": 2})


def test_close_drops_the_passes_not_started() -> None:
    async def main() -> list[Hashable]:
        recorder = Recorder()
        coalescer = Coalescer(recorder, settle_s=1.0)
        coalescer.touch("a")
        await asyncio.sleep(0.01)
        await coalescer.close()
        assert not coalescer._tasks
        return recorder.runs
    assert asyncio.run(main()) == []

"""The OOM path's thread pool: as many calls at once as RAYGUARD_OPERATOR_OOM_THREADS says,
never more, nothing shared with asyncio's default pool, and urgent calls before later ones."""

from __future__ import annotations

import asyncio
import contextvars
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from rayguard_operator.oom.workers import LATER, THREAD_NAME_PREFIX, URGENT, OomWorkers
from rayguard_operator.settings import OperatorSettings

pytestmark = pytest.mark.timeout(60)


async def _calls_at_once(workers: OomWorkers, calls: int, parties: int) -> tuple[set[str], int]:
    """Run `calls` calls on `workers`, each first waiting at a barrier of `parties` (so none
    returns until `parties` of them run at the same time), and the rest held until then too.
    Returns the names of the threads that ran them, and the most that ran at once."""
    barrier = threading.Barrier(parties, timeout=20)  # too few threads: BrokenBarrierError, not a hang
    passed = threading.Event()
    lock = threading.Lock()
    running, most, threads = 0, 0, set()

    def call() -> None:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
            threads.add(threading.current_thread().name)
        try:
            if not passed.is_set():
                barrier.wait()
                passed.set()
        finally:
            with lock:
                running -= 1

    await asyncio.gather(*(workers.run(call) for _ in range(calls)))
    return threads, most


@pytest.mark.parametrize("threads", [1, 3, 8])
def test_as_many_calls_at_once_as_the_setting_says_and_never_more(threads: int) -> None:
    workers = OomWorkers(OperatorSettings.from_env({"RAYGUARD_OPERATOR_OOM_THREADS": str(threads)}).oom_threads)
    try:
        # `threads` calls meet at the barrier: all of them ran at once. One more call was
        # waiting for a thread meanwhile, and got one of the same threads afterwards.
        names, most = asyncio.run(_calls_at_once(workers, threads + 1, threads))
    finally:
        workers.close()
    assert most == threads
    assert len(names) == threads and all(n.startswith(f"{THREAD_NAME_PREFIX}_") for n in names), names


def test_fewer_threads_than_calls_at_once_break_the_barrier() -> None:
    """The check above can fail: 2 threads never hold 3 calls at once."""
    workers = OomWorkers(2)
    try:
        with pytest.raises(threading.BrokenBarrierError):
            asyncio.run(_calls_at_once_short(workers))
    finally:
        workers.close()


async def _calls_at_once_short(workers: OomWorkers) -> None:
    barrier = threading.Barrier(3, timeout=0.5)
    await asyncio.gather(*(workers.run(barrier.wait) for _ in range(3)), return_exceptions=False)


def test_the_default_pool_is_not_used() -> None:
    """Calls queued on the OOM pool go on while asyncio's default pool is full."""
    async def main() -> str:
        loop = asyncio.get_running_loop()
        blocked = threading.Event()
        loop.set_default_executor(ThreadPoolExecutor(1))
        hog = loop.run_in_executor(None, blocked.wait)  # the default pool's one thread, taken
        workers = OomWorkers(1)
        try:
            return await workers.run(lambda: threading.current_thread().name)
        finally:
            blocked.set()
            await hog
            workers.close()

    assert asyncio.run(main()).startswith(THREAD_NAME_PREFIX)


def test_a_call_sees_the_callers_context_and_its_result_or_error_comes_back() -> None:
    request = contextvars.ContextVar("request", default="none")

    async def main() -> tuple[str, str]:
        workers = OomWorkers(2)
        try:
            request.set("c01")
            seen = await workers.run(request.get)
            with pytest.raises(KeyError, match="gone"):
                await workers.run(_raise, KeyError("gone"))
            return seen, await workers.run(str.upper, "ok")
        finally:
            workers.close()

    assert asyncio.run(main()) == ("c01", "OK")


def _raise(error: Exception) -> None:
    raise error


def test_urgent_calls_take_a_free_thread_before_later_ones() -> None:
    """With every thread busy, calls wait; a freed thread goes to the urgent ones first (in the
    order they came), and to later ones only when no urgent call waits."""
    async def main() -> list[str]:
        workers = OomWorkers(2)
        release = threading.Event()
        order: list[str] = []
        try:
            busy = [asyncio.ensure_future(workers.run(release.wait, 10)) for _ in range(2)]
            while workers._free:  # noqa: SLF001 (until both threads are taken)
                await asyncio.sleep(0)
            waiting = [asyncio.ensure_future(workers.run(order.append, label, lane=lane))
                       for label, lane in (("later 1", LATER), ("urgent 1", URGENT), ("later 2", LATER),
                                           ("urgent 2", URGENT))]
            while workers.waiting != (2, 2):
                await asyncio.sleep(0)
            release.set()
            await asyncio.gather(*busy, *waiting)
            return order
        finally:
            workers.close()

    order = asyncio.run(main())
    # Two threads run the waiting calls two at a time: both urgent ones start before any later one.
    assert set(order[:2]) == {"urgent 1", "urgent 2"} and set(order[2:]) == {"later 1", "later 2"}, order


def test_later_calls_wait_while_an_urgent_call_runs_even_with_threads_free() -> None:
    async def main() -> list[str]:
        workers = OomWorkers(4)
        release = threading.Event()
        order: list[str] = []

        def urgent() -> None:
            release.wait(10)
            order.append("urgent")

        try:
            first = asyncio.ensure_future(workers.run(urgent))
            later = [asyncio.ensure_future(workers.run(order.append, f"later {i}", lane=LATER)) for i in range(3)]
            for _ in range(20):  # the loop runs every task as far as it goes: the later ones wait
                await asyncio.sleep(0)
            assert (workers.running, workers.waiting) == ((1, 0), (0, 3))
            release.set()
            await asyncio.gather(first, *later)
            assert workers.running == (0, 0) and workers.waiting == (0, 0)
            return order
        finally:
            workers.close()

    order = asyncio.run(main())
    assert order[0] == "urgent" and sorted(order[1:]) == ["later 0", "later 1", "later 2"], order


def test_a_caller_cancelled_while_waiting_leaves_its_turn() -> None:
    async def main() -> tuple[int, int]:
        workers = OomWorkers(1)
        release = threading.Event()
        try:
            busy = asyncio.ensure_future(workers.run(release.wait, 10))
            while workers._free:  # noqa: SLF001
                await asyncio.sleep(0)
            gone = asyncio.ensure_future(workers.run(str, "gone"))
            kept = asyncio.ensure_future(workers.run(str, "kept", lane=LATER))
            while workers.waiting != (1, 1):
                await asyncio.sleep(0)
            gone.cancel()
            with pytest.raises(asyncio.CancelledError):
                await gone
            assert workers.waiting == (0, 1)
            release.set()
            await busy
            assert await kept == "kept"
            return workers._free, workers.threads  # noqa: SLF001 (every slot came back)
        finally:
            workers.close()

    free, threads = asyncio.run(main())
    assert free == threads == 1


def test_close_waits_for_running_calls_and_refuses_new_ones() -> None:
    workers = OomWorkers(1)
    started, release = threading.Event(), threading.Event()
    done: list[str] = []

    def running() -> None:
        started.set()
        release.wait(10)
        done.append("running")

    async def main() -> None:
        first = asyncio.ensure_future(workers.run(running))
        await asyncio.to_thread(started.wait, 10)
        closer = threading.Thread(target=workers.close)
        closer.start()
        release.set()
        await asyncio.to_thread(closer.join, 10)
        await first
        with pytest.raises(RuntimeError, match="closed"):
            await workers.run(done.append, "after")

    asyncio.run(main())
    assert done == ["running"]


def test_at_least_one_thread() -> None:
    with pytest.raises(ValueError, match="at least 1 thread"):
        OomWorkers(0)

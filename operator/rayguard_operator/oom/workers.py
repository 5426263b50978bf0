"""The threads that OOM surfacing's blocking API calls run on.

Each cluster's report follower (`handlers/oom.py`) is async, but counting into `status.oom`
and posting Events (`tracker.py`, `events.py`) go through the synchronous Kubernetes client.
They run here, on one pool the followers share and nothing else uses, sized by
`RAYGUARD_OPERATOR_OOM_THREADS` (settings.py): reports that reach N clusters at once are
counted and posted N at a time. asyncio's default pool, min(32, CPUs + 4) threads, made 50
clusters' reports queue behind each other (6 threads on 2 CPUs; bench/oom_events.py).

Calls come in two lanes. `urgent` calls (counting reports, which posts the RayCluster's Events)
take any free thread. `later` calls (the Events on pods, Events held back by the rate limit)
start only while no urgent call runs or waits. So when reports reach many clusters at once,
every cluster is counted and gets its Event before any pod's Event goes out: the threads and
the API server's time go to the RayClusters first. Nothing starves: a follower waits for its
later call before it reads again, so urgent calls stop coming once every follower waits.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, TypeVar

T = TypeVar("T")

THREAD_NAME_PREFIX = "rayguard-oom"
URGENT, LATER = 0, 1


class OomWorkers:
    """Used from one event loop (kopf's); the lanes are plain deques on that loop."""

    def __init__(self, threads: int) -> None:
        if threads < 1:
            raise ValueError(f"OomWorkers needs at least 1 thread, not {threads}")
        self.threads = threads
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix=THREAD_NAME_PREFIX)
        # A call holds one of `threads` slots while it runs, so the pool never queues: which
        # call runs next is decided here, by lane.
        self._free = threads
        self._running = [0, 0]  # by lane
        self._waiting: tuple[deque[asyncio.Future[None]], ...] = (deque(), deque())
        self._closed = False

    async def run(self, fn: Callable[..., T], *args: object, lane: int = URGENT) -> T:
        """`fn(*args)` on one of the pool's threads, as `asyncio.to_thread` would run it on the
        default pool (the caller's context variables go along), once its lane may start."""
        await self._acquire(lane)
        try:
            if self._closed:
                raise RuntimeError("the OOM path's threads are closed: the operator is stopping")
            context = contextvars.copy_context()
            call = functools.partial(context.run, fn, *args)
            return await asyncio.get_running_loop().run_in_executor(self._pool, call)
        finally:
            self._finish(lane)

    @property
    def waiting(self) -> tuple[int, int]:
        """Calls waiting to start: (urgent, later)."""
        return len(self._waiting[URGENT]), len(self._waiting[LATER])

    @property
    def running(self) -> tuple[int, int]:
        """Calls running: (urgent, later)."""
        return self._running[URGENT], self._running[LATER]

    def _next_lane(self) -> int | None:
        if not self._free:
            return None
        if self._waiting[URGENT]:
            return URGENT
        if self._waiting[LATER] and not self._running[URGENT]:
            return LATER
        return None

    async def _acquire(self, lane: int) -> None:
        turn = asyncio.get_running_loop().create_future()
        self._waiting[lane].append(turn)
        self._dispatch()
        try:
            await turn  # done: `_dispatch` has started this call (counted it as running)
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                self._finish(lane)  # started just as the caller gave up
            elif turn in self._waiting[lane]:
                self._waiting[lane].remove(turn)
            raise

    def _dispatch(self) -> None:
        while (lane := self._next_lane()) is not None:
            turn = self._waiting[lane].popleft()
            if turn.done():  # its caller was cancelled
                continue
            self._free -= 1
            self._running[lane] += 1
            turn.set_result(None)

    def _finish(self, lane: int) -> None:
        self._free += 1
        self._running[lane] -= 1
        self._dispatch()

    def close(self) -> None:
        """Wait for the calls running now (a status write is not cut off halfway); a call not
        started yet raises RuntimeError when its turn comes. kopf closes this after every
        follower has stopped, so none should be waiting. Callable from any thread."""
        self._closed = True
        self._pool.shutdown(wait=True)

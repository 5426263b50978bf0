"""One reconcile pass per burst of events, per cluster.

A pod event marks its cluster dirty (`touch`, on kopf's event loop). A dirty cluster gets one
task that waits `SETTLE_S` for the rest of the burst, then runs one pass in a worker thread.
The pass takes the cluster's lock (`locks.py`), so it never overlaps a pass from a kopf handler;
once it holds it, it calls `started` and reads the cache. Events that arrive until then are
covered by it (`started` clears the mark); events that arrive later make it run once more when
it ends, however many they were. Clusters do not wait for each other beyond the `WORKERS`
threads.

`SETTLE_S`: the pod events of one burst (a group's pods created, or turning ready) reach kopf
over about 100 ms. With 0.05 s, bench/reconcile.py saw a third of its clusters split their
readiness burst into two passes, and write an extra status in between; with 0.15 s, as few as
before the coalescing.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Hashable

Started = Callable[[], None]

log = logging.getLogger(__name__)

SETTLE_S = 0.15
WORKERS = 4


class Coalescer:
    def __init__(self, run: Callable[[Hashable, Started], None], settle_s: float = SETTLE_S,
                 workers: int = WORKERS) -> None:
        self.run, self.settle_s = run, settle_s
        self.passes = 0  # passes run, for tests
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="rayguard-pass")
        self._guard = threading.Lock()
        self._dirty: set[Hashable] = set()  # under _guard: the loop marks, a worker thread clears
        self._tasks: dict[Hashable, asyncio.Task[None]] = {}  # the event loop's only

    def touch(self, key: Hashable) -> None:
        """Call on the event loop: `key` changed; a pass over it will follow."""
        with self._guard:
            self._dirty.add(key)
        if key not in self._tasks:
            self._tasks[key] = asyncio.get_running_loop().create_task(self._drain(key), name=f"passes {key}")

    async def _drain(self, key: Hashable) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                await asyncio.sleep(self.settle_s)
                await loop.run_in_executor(self._executor, self._pass, key)
                with self._guard:
                    if key not in self._dirty:
                        return  # no await between here and the task's removal: a touch sees one or the other
        finally:
            self._tasks.pop(key, None)

    def _pass(self, key: Hashable) -> None:
        def started() -> None:
            with self._guard:
                self._dirty.discard(key)

        with self._guard:
            self._dirty.discard(key)
            self.passes += 1
        try:
            self.run(key, started)
        except Exception:  # noqa: BLE001 (one cluster's failure must not stop the others' passes)
            log.exception("reconcile pass over %s failed", key)

    async def close(self) -> None:
        """Cancel the passes not started; one under way finishes in its thread."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._executor.shutdown(wait=False, cancel_futures=True)

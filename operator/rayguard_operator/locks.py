"""A lock per RayCluster, for the read-modify-write passes that must not overlap.

Reconcile passes (`reconcile/syncer.py`) and OOM counting (`oom/tracker.py`) each keep one
table: kopf runs timers, change handlers, pod events and daemons concurrently, and two passes
over one cluster must not act on the same snapshot.
"""

from __future__ import annotations

import threading


class ClusterLocks:
    """One lock per (namespace, name), made on first use and kept: a lock is a few bytes, and
    dropping one while a pass waits on it would let the next pass run beside that one."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[tuple[str, str], threading.Lock] = {}

    def __call__(self, namespace: str, name: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault((namespace, name), threading.Lock())

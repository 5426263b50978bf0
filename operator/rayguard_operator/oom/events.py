"""OOM Events, aggregated: a repeat raises a count instead of flooding.

A repeat is the same cluster, pod, reason and victim within `window_s` (10 minutes). Each
kill is an Event on the RayCluster and one on the Pod. Event objects have stable names
derived from that key, so the operator finds the one to update after a restart. Writes
are limited per cluster: increments that cannot be written yet wait, merged, and go out
when the budget refills, so a burst costs a few writes and loses nothing. (The exact
numbers live in `status.oom`.)

Events are only ever created and patched, never read with `get`: the chart grants `create`
and `patch` on events and nothing else. The aggregator remembers the count and times of each
Event it wrote from the server's answers. An Event it does not know is created; when that
meets 409 AlreadyExists (it was posted before an operator restart), a merge patch of `{}`,
which changes nothing, answers the stored Event, and the increment is patched onto it. An
Event that expired meanwhile (404 on the patch) is created afresh.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from rayguard_node.contract import rfc3339

from rayguard_operator.errors import KubeApiError
from rayguard_operator.kube.protocols import EventApi
from rayguard_operator.manifests.events import EventNote, build_event
from rayguard_operator.oom.messages import AGGREGATION_WINDOW_S, AggregationKey

log = logging.getLogger(__name__)

WRITES_PER_MINUTE_PER_CLUSTER = 30
# How long the API server keeps an Event (kube-apiserver --event-ttl, 1h by default): what
# was written is remembered for this long after the window, then read back if needed.
EVENT_TTL_S = 3600.0

# The old names of the shared helpers, still imported by tests/unit/operator/oom/test_events.py.


def event_name(involved: Mapping[str, Any], key: AggregationKey) -> str:
    return f"{involved['metadata']['name']}.oom-{key.digest()}"


@dataclass
class _Pending:
    involved: Mapping[str, Any]
    note: EventNote
    increments: int
    last_seen: float
    first_seen: float = 0.0

    def __post_init__(self) -> None:
        self.first_seen = self.first_seen or self.last_seen


@dataclass
class _Bucket:
    tokens: float
    updated: float


@dataclass
class EventAggregator:
    api: EventApi
    clock: Callable[[], float] = time.time
    window_s: float = AGGREGATION_WINDOW_S
    writes_per_minute: int = WRITES_PER_MINUTE_PER_CLUSTER
    _pending: dict[tuple[str, str, str], _Pending] = field(default_factory=dict)
    _buckets: dict[str, _Bucket] = field(default_factory=dict)
    # Slots being written now: another thread's flush leaves them pending, or two writers
    # would both read the old count and one increment would be lost.
    _in_flight: set[tuple[str, str, str]] = field(default_factory=set)
    writes_total: int = 0
    # What the server answered for each Event written, by (namespace, name): count and times,
    # all a repeat needs. Entries go once the Event would have expired (see `_recall`).
    _written: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    # Daemons and reconcile passes call in from several threads; I/O happens outside it.
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, cluster: str, involved: Mapping[str, Any], key: AggregationKey, note: EventNote) -> None:
        """Note one kill about `involved`; nothing is written until `flush`."""
        slot = (cluster, involved["metadata"]["namespace"], event_name(involved, key))
        with self._lock:
            self._merge(slot, _Pending(involved, note, 1, self.clock()))

    def _merge(self, slot: tuple[str, str, str], new: _Pending) -> None:
        pending = self._pending.get(slot)
        if pending is None:
            self._pending[slot] = new
        else:
            pending.increments += new.increments
            pending.first_seen = min(pending.first_seen, new.first_seen)
            if new.last_seen >= pending.last_seen:
                pending.note, pending.last_seen = new.note, new.last_seen

    @property
    def pending_count(self) -> int:
        return len(self._pending)

    def pending_for(self, cluster: str) -> int:
        """Events of one cluster waiting to be written (held back by its budget, or noted and
        not flushed yet)."""
        with self._lock:
            return sum(1 for slot in self._pending if slot[0] == cluster)

    def _take_token(self, cluster: str) -> bool:
        now = self.clock()
        bucket = self._buckets.setdefault(cluster, _Bucket(float(self.writes_per_minute), now))
        bucket.tokens = min(float(self.writes_per_minute),
                            bucket.tokens + (now - bucket.updated) * self.writes_per_minute / 60)
        bucket.updated = now
        if bucket.tokens < 1:
            return False
        bucket.tokens -= 1
        return True

    def flush(self, cluster: str | None = None, force: bool = False) -> int:
        """Write what the budget allows (for one cluster, or all); returns writes made.
        `force` writes everything pending, budget or not: the last flush before the
        operator stops, so that held-back increments are not lost (one write per Event)."""
        with self._lock:
            due = [(slot, self._pending.pop(slot)) for slot in list(self._pending)
                   if slot not in self._in_flight and (cluster is None or slot[0] == cluster)
                   and (force or self._take_token(slot[0]))]
            self._in_flight.update(slot for slot, _ in due)
        writes = 0
        try:
            for index, (slot, pending) in enumerate(due):
                try:
                    self._write(slot[1], slot[2], pending)
                except Exception:
                    with self._lock:  # retried on the next flush, merged with what came since
                        for later_slot, later in due[index:]:
                            self._merge(later_slot, later)
                        self.writes_total += writes
                    raise
                writes += 1
        finally:
            with self._lock:
                self._in_flight.difference_update(slot for slot, _ in due)
        with self._lock:
            self.writes_total += writes
        return writes

    def _write(self, namespace: str, name: str, pending: _Pending, retried: bool = False) -> None:
        known = self._recall(namespace, name)
        try:
            if known is None:
                created = self.api.create(self._new_body(name, pending))
                if created is not None:
                    self._remember(namespace, name, created)
                    return
                # 409: posted before a restart. A merge patch that changes nothing answers it.
                known = self.api.patch_event(namespace, name, {})
            self._remember(namespace, name, self.api.patch_event(
                namespace, name, self._repeat_patch(known, name, pending)))
        except KubeApiError as error:
            if error.status != 404 or retried:
                raise
            # The Event expired (the API server keeps Events for an hour): post it afresh.
            self._forget(namespace, name)
            self._write(namespace, name, pending, retried=True)

    def _new_body(self, name: str, pending: _Pending) -> dict[str, Any]:
        body = build_event(pending.involved, pending.note, name, rfc3339.format_seconds(pending.first_seen))
        body["count"], body["lastTimestamp"] = pending.increments, rfc3339.format_seconds(pending.last_seen)
        return body

    def _repeat_patch(self, existing: Mapping[str, Any], name: str, pending: _Pending) -> dict[str, Any]:
        """A repeat within the window raises the count; after it, the same object starts a
        new run of repeats."""
        now_text = rfc3339.format_seconds(pending.last_seen)
        last = existing.get("lastTimestamp") or existing.get("firstTimestamp") or now_text
        if pending.last_seen - rfc3339.parse(last) < self.window_s:
            count = int(existing.get("count") or 1) + pending.increments
            return {"count": count, "lastTimestamp": now_text, "message": build_event(
                pending.involved, pending.note, name, now_text)["message"],
                "series": {"count": count, "lastObservedTime": now_text.replace("Z", ".000000Z")}}
        body = self._new_body(name, pending)
        return {k: body[k] for k in ("message", "count", "firstTimestamp", "lastTimestamp")} | {"series": None}

    # --- what was written (slots in flight have one writer each; the lock guards the dict)

    def _recall(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The last answer for this Event, if it can still exist; older entries are dropped, so
        the memory stays bounded by the Events of the last window and TTL."""
        horizon = self.clock() - self.window_s - EVENT_TTL_S
        with self._lock:
            for slot in [s for s, e in self._written.items() if e["seen"] < horizon]:
                del self._written[slot]
            return self._written.get((namespace, name))

    def _remember(self, namespace: str, name: str, answer: Mapping[str, Any] | None) -> None:
        answer = answer or {}
        last = answer.get("lastTimestamp") or answer.get("firstTimestamp")
        if not last:  # not an Event (a test double's answer): read it again next time
            self._forget(namespace, name)
            return
        entry = {"count": answer.get("count"), "firstTimestamp": answer.get("firstTimestamp"),
                 "lastTimestamp": answer.get("lastTimestamp"), "seen": rfc3339.parse(last)}
        with self._lock:
            self._written[(namespace, name)] = entry

    def _forget(self, namespace: str, name: str) -> None:
        with self._lock:
            self._written.pop((namespace, name), None)

"""The operator's Prometheus metrics, and the HTTP server that serves them.

One registry per operator process. The reconcile pass, the OOM path and the report followers
record into it through `OperatorMetrics`; a cluster that is deleted has its series removed
(`forget_cluster`), so the label sets are bounded by the clusters that exist.

Metrics (README, "Operator metrics"):
- `rayguard_oom_kills_total{namespace,cluster,group,reason}`: every OOM kill surfaced, by the
  Event reason it got (runtime reports and OOMKilled containers);
- `rayguard_clusters{phase}`: RayClusters by status phase;
- `rayguard_reconcile_seconds`: the duration of each reconcile pass (a histogram);
- `rayguard_reconcile_errors_total`: passes that failed (an API error, a refused write);
- `rayguard_report_stream_lag_seconds{namespace,cluster}`: now minus the time of the oldest
  report not yet handled (0 when the follower is caught up): how far surfacing is behind;
- `rayguard_events_held_back`: OOM Events held back by the rate limit, waiting to be posted.
"""

from __future__ import annotations

import threading
import time
from typing import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

RECONCILE_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
NAMES = ("rayguard_oom_kills_total", "rayguard_clusters", "rayguard_reconcile_seconds",
         "rayguard_reconcile_errors_total", "rayguard_report_stream_lag_seconds",
         "rayguard_events_held_back")


class OperatorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.registry = registry or CollectorRegistry()
        self.clock = clock
        self._lock = threading.Lock()
        self._phases: dict[tuple[str, str], str] = {}
        self._kill_labels: dict[tuple[str, str], set[tuple[str, str]]] = {}
        self._held_back: dict[tuple[str, str], Callable[[], int]] = {}
        self._oldest_unread: dict[tuple[str, str], int | None] = {}
        self.oom_kills = Counter("rayguard_oom_kills", "OOM kills surfaced, by the Event reason",
                                 ["namespace", "cluster", "group", "reason"], registry=self.registry)
        self.clusters = Gauge("rayguard_clusters", "RayClusters by status phase", ["phase"],
                              registry=self.registry)
        self.reconcile_seconds = Histogram("rayguard_reconcile_seconds", "Duration of one reconcile pass",
                                           buckets=RECONCILE_BUCKETS_S, registry=self.registry)
        self.reconcile_errors = Counter("rayguard_reconcile_errors", "Reconcile passes that failed",
                                        registry=self.registry)
        self.stream_lag = Gauge("rayguard_report_stream_lag_seconds",
                                "Now minus the time of the oldest report not yet handled (0: caught up)",
                                ["namespace", "cluster"], registry=self.registry)
        held = Gauge("rayguard_events_held_back", "OOM Events held back by the rate limit",
                     registry=self.registry)
        held.set_function(self._held_back_total)

    # -- recording ------------------------------------------------------------------------
    def count_oom_kill(self, namespace: str, cluster: str, group: str, reason: str, n: int = 1) -> None:
        with self._lock:
            self._kill_labels.setdefault((namespace, cluster), set()).add((group, reason))
            self.oom_kills.labels(namespace, cluster, group, reason).inc(n)

    def set_phase(self, namespace: str, cluster: str, phase: str) -> None:
        with self._lock:
            self._phases[(namespace, cluster)] = phase
            self._publish_phases()

    def observe_reconcile(self, seconds: float, failed: bool) -> None:
        self.reconcile_seconds.observe(seconds)
        if failed:
            self.reconcile_errors.inc()

    def set_stream_lag(self, namespace: str, cluster: str, oldest_unread_ms: int | None) -> None:
        """`oldest_unread_ms`: the stream id time of the oldest report not handled yet, or None.
        The lag is computed at scrape time, so it grows while the follower is stuck."""
        key = (namespace, cluster)
        with self._lock:
            self._oldest_unread[key] = oldest_unread_ms
            self.stream_lag.labels(namespace, cluster).set_function(lambda: self._lag(key))

    def _lag(self, key: tuple[str, str]) -> float:
        oldest = self._oldest_unread.get(key)
        return 0.0 if oldest is None else max(0.0, self.clock() - oldest / 1000)

    def watch_held_back(self, namespace: str, cluster: str, pending: Callable[[], int]) -> None:
        with self._lock:
            self._held_back[(namespace, cluster)] = pending

    def forget_cluster(self, namespace: str, cluster: str) -> None:
        """A deleted cluster: every series labelled with it goes."""
        with self._lock:
            for group, reason in self._kill_labels.pop((namespace, cluster), set()):
                self.oom_kills.remove(namespace, cluster, group, reason)
            self._oldest_unread.pop((namespace, cluster), None)
            try:
                self.stream_lag.remove(namespace, cluster)
            except KeyError:
                pass
            self._held_back.pop((namespace, cluster), None)
            if self._phases.pop((namespace, cluster), None) is not None:
                self._publish_phases()

    # -- derived ----------------------------------------------------------------------------
    def _publish_phases(self) -> None:
        counts: dict[str, int] = {}
        for phase in self._phases.values():
            counts[phase] = counts.get(phase, 0) + 1
        for labels in list(self.clusters._metrics):  # phases no cluster has any more
            if labels[0] not in counts:
                self.clusters.remove(*labels)
        for phase, count in counts.items():
            self.clusters.labels(phase).set(count)

    def _held_back_total(self) -> float:
        with self._lock:
            pending = list(self._held_back.values())
        total = 0
        for count in pending:
            try:
                total += int(count())
            except Exception:  # noqa: BLE001 (a scrape must not fail on one cluster)
                continue
        return float(total)


class MetricsServer:
    """/metrics in a daemon thread (prometheus_client's own server), stopped with the operator."""

    def __init__(self, metrics: OperatorMetrics, port: int, address: str = "0.0.0.0") -> None:
        self.server, self.thread = start_http_server(port, addr=address, registry=metrics.registry)
        self.port = int(self.server.server_address[1])

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)

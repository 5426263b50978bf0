"""`/healthz`, `/readyz` and Prometheus `/metrics` on one port.

Metrics come from a stateless collector over the monitor's latest numbers, so a scrape
never touches cgroup files or Redis itself.
"""

from __future__ import annotations

import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Iterable

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from rayguard_node.guard.loop import TICK_BUCKETS_S, MonitorState
from rayguard_node.contract.reports import KINDS

log = logging.getLogger(__name__)



class RuntimeCollector(Collector):
    def __init__(self, state: MonitorState, pending_reports: Callable[[], int],
                 dropped_reports: Callable[[], int], ray_up: Callable[[], bool]) -> None:
        self.state = state
        self.pending_reports = pending_reports
        self.dropped_reports = dropped_reports
        self.ray_up = ray_up

    def collect(self) -> Iterable[GaugeMetricFamily]:
        s = self.state
        yield GaugeMetricFamily("rayguard_memory_limit_bytes", "Effective memory limit of this node", s.limit_bytes)
        yield GaugeMetricFamily("rayguard_memory_usage_bytes", "cgroup memory usage", s.usage_bytes)
        yield GaugeMetricFamily("rayguard_memory_working_set_bytes",
                                "usage minus inactive file cache, as the kubelet computes it", s.working_set_bytes)
        yield GaugeMetricFamily("rayguard_guard_threshold_ratio", "Working set / limit at which the guard kills",
                                s.threshold)
        kills = CounterMetricFamily("rayguard_oom_kills", "OOM kills seen or made, by kind", labels=["kind"])
        for kind in KINDS:
            kills.add_metric([kind], s.kills_by_kind.get(kind, 0))
        yield kills
        buckets, cumulative = [], 0
        ticks = s.ticks
        for bound, count in zip(list(TICK_BUCKETS_S) + [float("inf")], list(ticks.bucket_counts)):
            cumulative += count
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
        yield HistogramMetricFamily("rayguard_monitor_tick_seconds", "Duration of one monitor tick",
                                    buckets=buckets, sum_value=ticks.sum_s)
        yield CounterMetricFamily("rayguard_guard_fast_ticks", "Samples between full ticks, taken while"
                                  " memory grew towards the threshold", s.fast_ticks)
        yield GaugeMetricFamily("rayguard_memory_growth_bytes_per_second",
                                "cgroup usage growth between the last two samples", s.growth_bytes_s)
        yield GaugeMetricFamily("rayguard_reports_pending", "Reports waiting for Redis", self.pending_reports())
        yield CounterMetricFamily("rayguard_reports_dropped", "Reports dropped from a full buffer",
                                  self.dropped_reports())
        yield GaugeMetricFamily("rayguard_ray_up", "1 when the Ray node is up", 1 if self.ray_up() else 0)
        yield CounterMetricFamily("rayguard_monitor_failed_ticks", "Monitor ticks that raised", s.failed_ticks)


class HealthServer:
    """Serves the three endpoints from a daemon thread."""

    def __init__(self, port: int, alive: Callable[[], bool], ready: Callable[[], tuple[bool, str]],
                 registry: CollectorRegistry, host: str = "0.0.0.0") -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                path = self.path.split("?", 1)[0]
                if path == "/healthz":
                    ok = alive()
                    self._send(200 if ok else 503, b"ok\n" if ok else b"monitor loop stalled\n")
                elif path == "/readyz":
                    ok, why = ready()
                    self._send(200 if ok else 503, (why + "\n").encode())
                elif path == "/metrics":
                    self._send(200, generate_latest(outer.registry), "text/plain; version=0.0.4")
                else:
                    self._send(404, b"not found\n")

            def _send(self, code: int, body: bytes, content_type: str = "text/plain") -> None:
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass  # probes every few seconds would drown the log

        self.registry = registry
        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, name="rayguard-health", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

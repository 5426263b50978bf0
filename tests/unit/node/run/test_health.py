"""`/metrics` from the runtime collector, and the health server's three endpoints."""

from __future__ import annotations

import http.client

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from rayguard_node.run.health import TICK_BUCKETS_S, HealthServer, RuntimeCollector
from rayguard_node.guard.loop import MonitorState, TickHistogram
from rayguard_node.contract.reports import KINDS

GiB = 1024**3


class Probe:
    def __init__(self):
        self.pending, self.dropped, self.up = 0, 0, True


def collector(state=None, probe=None):
    state = state or MonitorState(limit_bytes=4 * GiB, usage_bytes=3 * GiB,
                                  working_set_bytes=2 * GiB, threshold=0.975)
    probe = probe or Probe()
    registry = CollectorRegistry()
    registry.register(RuntimeCollector(state, lambda: probe.pending, lambda: probe.dropped,
                                       lambda: probe.up))
    return registry, state, probe


def scrape(registry):
    samples = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples, name, **labels):
    return samples[(name, tuple(sorted(labels.items())))]


def test_gauges_carry_the_state():
    registry, state, probe = collector()
    probe.pending, probe.dropped = 7, 3
    s = scrape(registry)
    assert value(s, "rayguard_memory_limit_bytes") == 4 * GiB
    assert value(s, "rayguard_memory_usage_bytes") == 3 * GiB
    assert value(s, "rayguard_memory_working_set_bytes") == 2 * GiB
    assert value(s, "rayguard_guard_threshold_ratio") == 0.975
    assert value(s, "rayguard_reports_pending") == 7
    assert value(s, "rayguard_reports_dropped_total") == 3
    assert value(s, "rayguard_ray_up") == 1
    assert value(s, "rayguard_monitor_failed_ticks_total") == 0
    assert value(s, "rayguard_guard_fast_ticks_total") == 0
    assert value(s, "rayguard_memory_growth_bytes_per_second") == 0
    state.fast_ticks, state.growth_bytes_s = 12, 1.5 * GiB
    s = scrape(registry)
    assert value(s, "rayguard_guard_fast_ticks_total") == 12
    assert value(s, "rayguard_memory_growth_bytes_per_second") == 1.5 * GiB


def test_values_follow_the_state_between_scrapes():
    registry, state, probe = collector()
    scrape(registry)
    state.working_set_bytes, state.failed_ticks, probe.up = 5, 2, False
    s = scrape(registry)
    assert value(s, "rayguard_memory_working_set_bytes") == 5
    assert value(s, "rayguard_monitor_failed_ticks_total") == 2
    assert value(s, "rayguard_ray_up") == 0


def test_oom_kills_has_every_kind():
    registry, state, _ = collector()
    state.count("monitor_kill")
    state.count("monitor_kill")
    state.count("kernel_oom_kill")
    s = scrape(registry)
    assert {kind: value(s, "rayguard_oom_kills_total", kind=kind) for kind in KINDS} == {
        "monitor_kill": 2, "kernel_oom_kill": 1, "ray_monitor_kill": 0, "quota_exceeded": 0}
    text = generate_latest(registry).decode()
    assert "# TYPE rayguard_oom_kills_total counter" in text


def buckets(samples):
    return {labels[0][1]: v for (name, labels), v in samples.items()
            if name == "rayguard_monitor_tick_seconds_bucket"}


def test_tick_histogram_accumulates():
    registry, state, _ = collector()
    for seconds in (0.00005, 0.0001, 0.003, 0.2):
        state.ticks.observe(seconds)
    s = scrape(registry)
    assert buckets(s) == {"0.0001": 2, "0.00025": 2, "0.0005": 2, "0.001": 2, "0.0025": 2,
                          "0.005": 3, "0.01": 3, "0.025": 3, "0.05": 3, "0.1": 3, "+Inf": 4}
    assert value(s, "rayguard_monitor_tick_seconds_count") == 4
    assert value(s, "rayguard_monitor_tick_seconds_sum") == pytest.approx(0.20315)
    assert len(TICK_BUCKETS_S) + 1 == len(buckets(s))

    state.ticks.observe(0.0002)
    s = scrape(registry)
    assert buckets(s)["0.0001"] == 2 and buckets(s)["0.00025"] == 3 and buckets(s)["+Inf"] == 5
    assert value(s, "rayguard_monitor_tick_seconds_count") == 5
    assert value(s, "rayguard_monitor_tick_seconds_sum") == pytest.approx(0.20335)

    s = scrape(registry)  # nothing new: the same cumulative numbers
    assert value(s, "rayguard_monitor_tick_seconds_count") == 5
    assert buckets(s)["+Inf"] == 5


def test_empty_histogram():
    registry, _, _ = collector()
    s = scrape(registry)
    assert set(buckets(s).values()) == {0}
    assert value(s, "rayguard_monitor_tick_seconds_count") == 0


def test_scraping_does_not_reset_the_histogram():
    state = MonitorState()
    state.ticks.observe(0.001)
    registry, _, _ = collector(state)
    assert value(scrape(registry), "rayguard_monitor_tick_seconds_count") == 1
    assert value(scrape(registry), "rayguard_monitor_tick_seconds_count") == 1


# -- HealthServer ---------------------------------------------------------------------

class Checks:
    def __init__(self):
        self.alive = True
        self.ready = (False, "raylet not up yet")


@pytest.fixture(scope="module")
def running():
    registry, state, _ = collector()
    checks = Checks()
    health = HealthServer(0, lambda: checks.alive, lambda: checks.ready, registry, host="127.0.0.1")
    health.start()
    yield health, checks, state
    health.stop()  # takes up to half a second (serve_forever's poll): one server per module


@pytest.fixture
def server(running):
    health, checks, state = running
    checks.__init__()
    state.ticks = TickHistogram()
    return running


def get(port, path):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read().decode(), response.getheader("Content-Type")
    finally:
        connection.close()


def test_port_zero_gets_a_real_port(server):
    health, _, _ = server
    assert health.port > 0


def test_healthz(server):
    health, checks, _ = server
    assert get(health.port, "/healthz")[:2] == (200, "ok\n")
    checks.alive = False
    assert get(health.port, "/healthz")[:2] == (503, "monitor loop stalled\n")


def test_readyz_gives_the_reason(server):
    health, checks, _ = server
    assert get(health.port, "/readyz")[:2] == (503, "raylet not up yet\n")
    checks.ready = (True, "ready")
    assert get(health.port, "/readyz?verbose=1")[:2] == (200, "ready\n")


def test_metrics(server):
    health, _, state = server
    state.ticks.observe(0.001)
    status, body, content_type = get(health.port, "/metrics")
    assert status == 200
    assert content_type.startswith("text/plain")
    assert "rayguard_memory_limit_bytes 4.294967296e+09" in body
    assert 'rayguard_oom_kills_total{kind="quota_exceeded"} 0.0' in body
    assert "rayguard_monitor_tick_seconds_count 1.0" in body


def test_other_paths_are_404(server):
    health, _, _ = server
    for path in ("/", "/health", "/metricsx", "/readyz/extra"):
        assert get(health.port, path)[:2] == (404, "not found\n"), path


def test_stop_closes_the_port():
    registry, _, _ = collector()
    health = HealthServer(0, lambda: True, lambda: (True, "ready"), registry, host="127.0.0.1")
    health.start()
    port = health.port
    assert get(port, "/healthz")[0] == 200
    health.stop()
    with pytest.raises(OSError):
        get(port, "/healthz")

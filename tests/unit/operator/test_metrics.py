"""The operator's metrics: what each records, and that a deleted cluster's series go."""

from __future__ import annotations

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from rayguard_operator.metrics import NAMES, OperatorMetrics


def scrape(metrics: OperatorMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    samples = {}
    for family in text_string_to_metric_families(generate_latest(metrics.registry).decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def labels(**kw: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(kw.items()))


def exported_names(metrics: OperatorMetrics) -> set[str]:
    """Every sample name each family can produce (counters gain _total, histograms _bucket...)."""
    names = set()
    for family in metrics.registry.collect():
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count", ""]}.get(family.type, [""])
        names |= {family.name + suffix for suffix in suffixes}
    return names


def test_every_documented_metric_is_exported():
    assert set(NAMES) <= exported_names(OperatorMetrics())


def test_oom_kills_are_counted_by_cluster_group_and_reason_and_forgotten_with_the_cluster():
    metrics = OperatorMetrics()
    metrics.count_oom_kill("default", "demo", "cpu", "MemoryMonitorKill")
    metrics.count_oom_kill("default", "demo", "cpu", "MemoryMonitorKill", 2)
    metrics.count_oom_kill("default", "demo", "head", "OOMKilled")
    metrics.count_oom_kill("other", "keep", "cpu", "KernelOOMKill")
    s = scrape(metrics)
    key = labels(namespace="default", cluster="demo", group="cpu", reason="MemoryMonitorKill")
    assert s[("rayguard_oom_kills_total", key)] == 3
    metrics.forget_cluster("default", "demo")
    s = scrape(metrics)
    assert not [k for k in s if dict(k[1]).get("cluster") == "demo"]
    assert s[("rayguard_oom_kills_total", labels(namespace="other", cluster="keep", group="cpu",
                                                 reason="KernelOOMKill"))] == 1


def test_clusters_by_phase_follow_each_clusters_latest_phase():
    metrics = OperatorMetrics()
    metrics.set_phase("default", "a", "Pending")
    metrics.set_phase("default", "b", "Pending")
    metrics.set_phase("default", "a", "Ready")
    s = scrape(metrics)
    assert s[("rayguard_clusters", labels(phase="Pending"))] == 1
    assert s[("rayguard_clusters", labels(phase="Ready"))] == 1
    metrics.forget_cluster("default", "b")
    s = scrape(metrics)
    assert ("rayguard_clusters", labels(phase="Pending")) not in s


def test_reconcile_duration_and_errors():
    metrics = OperatorMetrics()
    metrics.observe_reconcile(0.02, failed=False)
    metrics.observe_reconcile(3.0, failed=True)
    s = scrape(metrics)
    assert s[("rayguard_reconcile_seconds_count", ())] == 2
    assert s[("rayguard_reconcile_seconds_bucket", labels(le="0.025"))] == 1
    assert s[("rayguard_reconcile_errors_total", ())] == 1


def test_stream_lag_is_the_age_of_the_oldest_unread_report():
    metrics = OperatorMetrics(clock=lambda: 1000.0)
    metrics.set_stream_lag("default", "demo", 997_500)
    assert scrape(metrics)[("rayguard_report_stream_lag_seconds",
                            labels(namespace="default", cluster="demo"))] == 2.5
    metrics.set_stream_lag("default", "demo", None)
    assert scrape(metrics)[("rayguard_report_stream_lag_seconds",
                            labels(namespace="default", cluster="demo"))] == 0


def test_events_held_back_sum_over_clusters_and_survive_a_broken_one():
    metrics = OperatorMetrics()
    metrics.watch_held_back("default", "a", lambda: 3)
    metrics.watch_held_back("default", "b", lambda: 1 // 0)
    metrics.watch_held_back("default", "c", lambda: 2)
    assert scrape(metrics)[("rayguard_events_held_back", ())] == 5
    metrics.forget_cluster("default", "a")
    assert scrape(metrics)[("rayguard_events_held_back", ())] == 2

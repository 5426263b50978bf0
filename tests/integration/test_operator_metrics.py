"""The operator's /metrics, read over HTTP, after OOM reports of each kind reached it through a
real head Redis and the API emulator (under the chart's RBAC)."""

from __future__ import annotations

import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from rayguard_node.contract.reports import KERNEL_OOM_KILL, KINDS
from rayguard_operator.oom.messages import REASON_BY_KIND
from testkit.nodes import free_port

from .oom_harness import OomOperator, cluster_body, oom_operator, report  # noqa: F401  (fixture)


@pytest.fixture
def metrics_port(monkeypatch: pytest.MonkeyPatch) -> int:
    port = free_port()
    monkeypatch.setenv("RAYGUARD_OPERATOR_METRICS_PORT", str(port))
    return port


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def series(samples, name: str, **labels: str) -> float:
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= set(ls))


def test_metrics_count_every_kind_by_reason_and_follow_the_cluster(metrics_port: int,
                                                                   oom_operator: OomOperator) -> None:
    op = oom_operator
    op.create(cluster_body("metered", 1))
    op.wait(lambda: len(op.pods("metered")) == 2, "the pods of metered")
    [worker] = sorted(op.pod_names("metered", "cpu"))
    head = op.head_redis("metered")
    reports = [report(kind, "metered", worker, victim=f"ray::task_{kind}", pid=100 + i)
               for i, kind in enumerate(KINDS)]
    reports.append(report(KERNEL_OOM_KILL, "metered", worker, victim="ray::again", pid=99))
    head.write(*reports)
    op.wait(lambda: op.oom_total("metered") >= len(reports), "status.oom to count the reports")
    op.wait(lambda: series(scrape(metrics_port), "rayguard_oom_kills_total", cluster="metered") >= len(reports),
            "the kills in /metrics")

    samples = scrape(metrics_port)
    for kind in KINDS:
        expected = 2 if kind == KERNEL_OOM_KILL else 1
        assert series(samples, "rayguard_oom_kills_total", namespace="default", cluster="metered", group="cpu",
                      reason=REASON_BY_KIND[kind]) == expected, kind
    assert series(samples, "rayguard_reconcile_seconds_count") > 0
    assert series(samples, "rayguard_clusters") >= 1
    assert ("rayguard_report_stream_lag_seconds", (("cluster", "metered"), ("namespace", "default"))) in samples
    op.wait(lambda: series(scrape(metrics_port), "rayguard_report_stream_lag_seconds", cluster="metered") == 0,
            "the follower to be caught up (lag 0)")
    assert ("rayguard_events_held_back", ()) in samples

    op.api.custom.delete_namespaced_custom_object("rayguard.dev", "v1", "default", "rayclusters", "metered")
    op.wait(lambda: series(scrape(metrics_port), "rayguard_oom_kills_total", cluster="metered") == 0,
            "a deleted cluster's series to go")

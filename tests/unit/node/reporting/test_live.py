"""The live view's rows, from a process scan (pure parts; Redis: tests/integration/test_top.py)."""

from __future__ import annotations

import os
from pathlib import Path

from rayguard_node.cgroup.processes import IDLE_WORKER, RAYLET, WORKER, ProcessMemory
from rayguard_node.reporting.live import LiveView, age_s, live_rows, parse_uptime

MiB = 1 << 20
TICKS = 100


def proc(pid: int, klass: str, rss_mib: int, shared_mib: int = 0, start: int = 1000,
         name: str | None = None) -> ProcessMemory:
    return ProcessMemory(pid, name or f"ray::task{pid}", klass, rss_mib * MiB, shared_mib * MiB, start)


def test_uptime_and_age() -> None:
    assert parse_uptime(b"12345.67 54321.00\n") == 12345.67
    assert age_s(start_ticks=100 * TICKS, uptime_s=160.9, ticks_per_s=TICKS) == 60
    assert age_s(start_ticks=200 * TICKS, uptime_s=160.0, ticks_per_s=TICKS) == 0  # never negative


def test_rows_are_task_and_actor_workers_largest_first() -> None:
    scan = [proc(1, RAYLET, 500), proc(2, WORKER, 100, 20), proc(3, IDLE_WORKER, 80),
            proc(4, WORKER, 300, 50), proc(5, WORKER, 90, 10)]
    rows, _peaks = live_rows(scan, {}, lambda p: None, uptime_s=20.0, ticks_per_s=TICKS)
    assert [(r.pid, r.rss_minus_shr_bytes) for r in rows] == [(4, 250 * MiB), (2, 80 * MiB), (5, 80 * MiB)]
    assert {r.process_class for r in rows} == {WORKER}
    assert rows[0].age_s == 10 and rows[0].name == "ray::task4"


def test_the_peak_is_kept_per_process_and_forgotten_with_it() -> None:
    rows, peaks = live_rows([proc(2, WORKER, 400)], {}, lambda p: None, 20.0, TICKS)
    assert rows[0].peak_bytes == 400 * MiB
    rows, peaks = live_rows([proc(2, WORKER, 100)], peaks, lambda p: None, 20.0, TICKS)
    assert (rows[0].rss_minus_shr_bytes, rows[0].peak_bytes) == (100 * MiB, 400 * MiB)
    # The same pid, started later: another process, with a peak of its own.
    rows, peaks = live_rows([proc(2, WORKER, 50, start=1500)], peaks, lambda p: None, 20.0, TICKS)
    assert rows[0].peak_bytes == 50 * MiB
    assert peaks == {(2, 1500): 50 * MiB}
    _rows, peaks = live_rows([], peaks, lambda p: None, 20.0, TICKS)
    assert peaks == {}


def test_quotas_come_from_the_callback_and_the_rows_are_capped() -> None:
    scan = [proc(pid, WORKER, pid) for pid in range(1, 11)]
    rows, _ = live_rows(scan, {}, lambda p: 300 * MiB if p.pid == 10 else None, None, TICKS, limit=3)
    assert [r.pid for r in rows] == [10, 9, 8]
    assert [r.quota_bytes for r in rows] == [300 * MiB, None, None]
    assert rows[0].age_s == 0  # uptime unreadable: no age rather than a wrong one


def test_a_snapshot_reads_uptime_under_the_procfs_root(tmp_path: Path) -> None:
    (tmp_path / "uptime").write_text("50.00 10.00\n")

    class Numbers:
        limit_bytes, working_set_bytes, threshold = 1024 * MiB, 512 * MiB, 0.95

    view = LiveView(lambda: None, "pod-a", "cpu", "worker", Numbers(),  # type: ignore[arg-type,return-value]
                    lambda: [proc(7, WORKER, 64, start=20 * 100)], tmp_path)
    node, rows = view.snapshot(now_ms=123)
    assert (node.pod, node.group, node.role, node.time_ms, node.rows) == ("pod-a", "cpu", "worker", 123, 1)
    assert (node.limit_bytes, node.working_set_bytes, node.threshold) == (1024 * MiB, 512 * MiB, 0.95)
    assert rows[0].age_s == age_s(20 * 100, 50.0, os.sysconf("SC_CLK_TCK"))

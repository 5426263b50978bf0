"""`rayguard top`'s pure part: entries → snapshot → table text and JSON."""

from __future__ import annotations

import json

from rayguard_node.contract.live import HIDE_AFTER_MS, STALE_AFTER_MS, LiveNode, LiveRow
from rayguard_operator.top.view import (build_snapshot, duration, fresh_nodes, parse_rows, render_table,
                                        size, snapshot_json)

MiB, GiB = 1 << 20, 1 << 30
NOW = 1_700_000_000_000


def node(pod: str, working_set: int, age_ms: int = 500, rows: int = 1, limit: int = 2 * GiB) -> LiveNode:
    return LiveNode(pod, "cpu" if "worker" in pod else "head", "worker" if "worker" in pod else "head",
                    limit, working_set, 0.95, NOW - age_ms, rows)


def row(pid: int, used: int, quota: int | None = None, name: str | None = None) -> LiveRow:
    return LiveRow(pid, name or f"ray::task{pid}", "worker", used, quota, used + MiB, 75)


def member(r: LiveRow) -> tuple[bytes, float]:
    return r.to_json().encode(), float(r.rss_minus_shr_bytes)


def raw_nodes(*nodes: LiveNode) -> dict[bytes, bytes]:
    return {n.pod.encode(): n.to_json().encode() for n in nodes}


def snapshot():  # type: ignore[no-untyped-def]
    nodes, skipped, hidden = fresh_nodes(raw_nodes(node("c-head-0", 300 * MiB, rows=0),
                                                   node("c-worker-cpu-0", GiB, rows=3),
                                                   node("c-worker-cpu-1", 900 * MiB, rows=1)), NOW)
    members = {"c-worker-cpu-0": [member(row(11, 200 * MiB, 300 * MiB, "ray::Holder")), member(row(12, 50 * MiB))],
               "c-worker-cpu-1": [member(row(21, 400 * MiB))], "c-head-0": []}
    return build_snapshot(NOW, nodes, members, skipped, hidden)


def test_nodes_are_sorted_by_working_set_and_old_ones_are_stale_or_hidden() -> None:
    nodes, skipped, hidden = fresh_nodes(raw_nodes(
        node("a", 100 * MiB), node("b", 900 * MiB, age_ms=STALE_AFTER_MS + 1),
        node("c", 500 * MiB), node("gone", GiB, age_ms=HIDE_AFTER_MS + 1)), NOW)
    assert [v.node.pod for v in nodes] == ["b", "c", "a"]
    assert [v.stale for v in nodes] == [True, False, False]
    assert (skipped, hidden) == (0, 1)


def test_bad_entries_are_skipped_and_counted() -> None:
    good = node("a", MiB)
    raw = {b"a": good.to_json().encode(), b"b": b"{oops", b"c": node("not-c", MiB).to_json().encode()}
    nodes, skipped, _hidden = fresh_nodes(raw, NOW)
    assert [v.node for v in nodes] == [good] and skipped == 2
    rows, bad = parse_rows("a", [member(row(1, MiB)), (b"[]", 0.0), b'{"pid": 2}'])
    assert [r.row.pid for r in rows] == [1] and bad == 2


def test_rows_of_all_nodes_are_sorted_by_memory() -> None:
    snap = snapshot()
    assert [(r.pod, r.row.pid) for r in snap.rows] == [
        ("c-worker-cpu-1", 21), ("c-worker-cpu-0", 11), ("c-worker-cpu-0", 12)]
    assert snap.rows_total == 4


def test_sizes_and_durations() -> None:
    assert (size(None), size(300 * MiB), size(-120 * MiB), size(2 * GiB)) == ("-", "300 MiB", "-120 MiB", "2.00 GiB")
    assert [duration(s) for s in (0, 59, 60, 184, 3600, 7500, 86_400 * 3 + 3600 * 4)] == [
        "0s", "59s", "1m00s", "3m04s", "1h00m", "2h05m", "3d04h"]


def test_the_table_without_a_terminal_has_every_line_in_full() -> None:
    text = render_table(snapshot(), "127.0.0.1:6380", "12:00:00", rows_per_node=20)
    assert text == """\
rayguard top  127.0.0.1:6380  12:00:00  3 node(s), 3 of 4 task/actor row(s) (at most 20 per node)

NODE            ROLE    GROUP     LIMIT  WORKING SET  USED  THRESHOLD  HEADROOM  ROWS
c-worker-cpu-0  worker  cpu    2.00 GiB     1.00 GiB   50%      95.0%   922 MiB     3
c-worker-cpu-1  worker  cpu    2.00 GiB      900 MiB   44%      95.0%  1.02 GiB     1
c-head-0        head    head   2.00 GiB      300 MiB   15%      95.0%  1.61 GiB     0

NODE            PID  RSS-SHR    QUOTA     PEAK    AGE  NAME
c-worker-cpu-1   21  400 MiB        -  401 MiB  1m15s  ray::task21
c-worker-cpu-0   11  200 MiB  300 MiB  201 MiB  1m15s  ray::Holder
c-worker-cpu-0   12   50 MiB        -   51 MiB  1m15s  ray::task12"""
    long_name = build_snapshot(NOW, snapshot().nodes, {"c-worker-cpu-0": [member(row(1, MiB, name="ray::" + "x" * 300))]})
    assert "ray::" + "x" * 300 in render_table(long_name, "x", "t")  # not cut without a terminal


def test_the_table_in_a_terminal_fits_it() -> None:
    text = render_table(snapshot(), "127.0.0.1:6380", "12:00:00", width=40, height=8)
    lines = text.splitlines()
    assert len(lines) == 8 and all(len(line) <= 40 for line in lines)
    assert lines[-1].startswith("... 4 more line(s)")
    full = render_table(snapshot(), "127.0.0.1:6380", "12:00:00").splitlines()
    assert lines[:7] == [line[:40].rstrip() for line in full[:7]]


def test_stale_and_over_the_threshold_are_noted() -> None:
    nodes, _, _ = fresh_nodes(raw_nodes(node("w-worker-0", int(1.99 * GiB), age_ms=9000)), NOW)
    text = render_table(build_snapshot(NOW, nodes, {}), "x", "t")
    assert "NOTE" in text and "over the threshold; stale: last write 9s ago" in text
    assert "no task or actor is running" in text


def test_an_empty_view_says_why() -> None:
    text = render_table(build_snapshot(NOW, [], {}, skipped=1, hidden=2), "x", "t")
    assert "2 node(s) silent for over 30s not shown; 1 unreadable entry skipped" in text
    assert "no node has written to the live view" in text


def test_json_has_every_node_and_row_with_what_the_table_derives() -> None:
    data = snapshot_json(snapshot())
    assert json.loads(json.dumps(data)) == data
    assert data["time_ms"] == NOW and data["skipped"] == 0 and data["hidden_nodes"] == 0
    worker = data["nodes"][0]
    assert worker == {"pod": "c-worker-cpu-0", "group": "cpu", "role": "worker", "limit_bytes": 2 * GiB,
                      "working_set_bytes": GiB, "threshold": 0.95, "time_ms": NOW - 500, "rows": 3,
                      "headroom_bytes": int(0.95 * 2 * GiB) - GiB, "age_ms": 500, "stale": False}
    assert data["rows"][1] == {"pod": "c-worker-cpu-0", "pid": 11, "name": "ray::Holder", "class": "worker",
                               "rss_minus_shr_bytes": 200 * MiB, "quota_bytes": 300 * MiB,
                               "peak_bytes": 201 * MiB, "age_s": 75}

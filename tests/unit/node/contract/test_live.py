"""The live view's shape, shared by the runtime (writes) and `rayguard top` (reads)."""

from __future__ import annotations

import json

import pytest

from rayguard_node.contract.live import NODES_KEY, LiveNode, LiveRow, MalformedLive, rows_key

GiB = 1 << 30
NODE = LiveNode("demo-worker-cpu-x7k2p", "cpu", "worker", 2 * GiB, GiB, 0.95, 1_700_000_000_000, 3)
ROW = LiveRow(4242, "ray::Holder.grow", "worker", 300 << 20, 300 << 20, 310 << 20, 12)


def test_keys_cannot_collide() -> None:
    assert NODES_KEY == "rayguard:live:nodes"
    assert rows_key("demo-head-abcde") == "rayguard:live:pod:demo-head-abcde"
    assert rows_key("nodes") != NODES_KEY  # a pod may be called anything


def test_a_node_round_trips_and_knows_its_headroom() -> None:
    assert LiveNode.from_json(NODE.to_json()) == NODE
    assert LiveNode.from_json(NODE.to_json().encode()) == NODE
    assert NODE.threshold_bytes == int(0.95 * 2 * GiB)
    assert NODE.headroom_bytes == int(0.95 * 2 * GiB) - GiB
    over = LiveNode("p", "g", "worker", GiB, GiB, 0.95, 1)
    assert over.headroom_bytes < 0


def test_a_row_round_trips_with_or_without_a_quota() -> None:
    assert LiveRow.from_json(ROW.to_json()) == ROW
    assert json.loads(ROW.to_json())["class"] == "worker"
    no_quota = LiveRow(1, "ray::f", "worker", 10, None, 10, 0)
    assert json.loads(no_quota.to_json())["quota_bytes"] is None
    assert LiveRow.from_json(no_quota.to_json()) == no_quota


def test_a_node_written_before_rows_were_counted_reads_as_zero_rows() -> None:
    data = NODE.to_dict()
    del data["rows"]
    assert LiveNode.from_json(json.dumps(data)).rows == 0


@pytest.mark.parametrize("change", [
    {"limit_bytes": -1}, {"limit_bytes": "2Gi"}, {"limit_bytes": True}, {"working_set_bytes": 1.5},
    {"threshold": 0}, {"threshold": 1.5}, {"threshold": "0.9"}, {"threshold": None},
    {"pod": 7}, {"time_ms": None}, {"rows": -3},
])
def test_a_node_that_is_not_the_shape_is_refused(change: dict[str, object]) -> None:
    with pytest.raises(MalformedLive):
        LiveNode.from_json(json.dumps({**NODE.to_dict(), **change}))


@pytest.mark.parametrize("raw", [b"", b"not json", b"[1, 2]", b"\xff\xfe", b"null"])
def test_what_is_not_a_json_object_is_refused(raw: bytes) -> None:
    with pytest.raises(MalformedLive):
        LiveRow.from_json(raw)
    with pytest.raises(MalformedLive):
        LiveNode.from_json(raw)


@pytest.mark.parametrize("change", [{"pid": -1}, {"pid": "1"}, {"quota_bytes": "300Mi"}, {"peak_bytes": None},
                                    {"age_s": 1.5}, {"class": None}, {"name": 3}])
def test_a_row_that_is_not_the_shape_is_refused(change: dict[str, object]) -> None:
    with pytest.raises(MalformedLive):
        LiveRow.from_json(json.dumps({**ROW.to_dict(), **change}))

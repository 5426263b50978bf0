"""`rayguard-node run` with real Ray in real cgroups: who kills the hog, and what is said."""

from __future__ import annotations

import pytest
import redis

from rayguard_node.contract.reports import STREAM_KEY
from testkit.nodes import cleanup, hog_script, run_driver, start_node

from .cgroups import make_cgroup, scratch_parent  # noqa: F401  (fixtures)

pytestmark = pytest.mark.ray
GiB = 1024**3


def _stream_reports(node) -> list[bytes]:
    client = redis.Redis(host="127.0.0.1", port=node.redis_port,
                         password=node.redis_password_file.read_text().strip())
    return [fields[b"report"] for _id, fields in client.xrange(STREAM_KEY)]


def test_ray_blind_guard_kills_newest_task_before_the_kernel(make_cgroup):
    """A nested 2 GiB cgroup that Ray 2.60 cannot see: the guard is the primary."""
    cgroup = make_cgroup(2 * GiB)
    head = start_node("head", cgroup, env={"RAYGUARD_NUM_CPUS": "1"})
    try:
        head.wait_ready()
        assert "guard" in head.log()
        result = run_driver(head, hog_script(head.address))
        report = head.wait_for_report("monitor_kill")

        assert cgroup.oom_kill_count() == 0, "the kernel had to step in"
        assert "ERROR" in result.stdout, result.stdout + result.stderr
        assert "FOLLOWUP 499500" in result.stdout, result.stdout + result.stderr
        assert report["victim"]["name"] == "ray::hog"
        assert report["victim"]["rss_bytes"] > GiB
        assert report["node"]["limit_bytes"] == 2 * GiB
        assert report["node"]["threshold"] == 0.95
        assert report["node"]["fraction"] >= 0.95
        assert report["top"] and report["top"][0]["name"] == "ray::hog"
        assert report["cluster"] == "test" and report["role"] == "head"
        assert any(report["id"].encode() in raw for raw in _stream_reports(head))
        assert head.process.poll() is None, "the node must survive"
        assert head.http("/readyz")[0] == 200
        status, metrics = head.http("/metrics")
        assert 'rayguard_oom_kills_total{kind="monitor_kill"} 1.0' in metrics
    finally:
        cleanup(head)


def test_pod_view_ray_monitor_kill_is_reported(make_cgroup):
    """Ray sees the limit: its own monitor kills, and rayguard reports it from raylet.out."""
    cgroup = make_cgroup(2 * GiB)
    # The guard stays a backstop (0.975 by default); a higher one keeps this test about
    # Ray's monitor even when the machine is slow.
    head = start_node("head", cgroup, pod_view=True,
                      env={"RAYGUARD_NUM_CPUS": "1", "RAYGUARD_GUARD_THRESHOLD": "0.99"})
    try:
        head.wait_ready()
        result = run_driver(head, hog_script(head.address, step_bytes=20 << 20, pause_s=0.1))
        report = head.wait_for_report("ray_monitor_kill")
        assert "OutOfMemoryError" in result.stdout, result.stdout + result.stderr
        assert cgroup.oom_kill_count() == 0
        assert report["victim"]["name"] == "ray::hog"
        assert report["victim"]["pid"] > 0
        assert report["victim"]["rss_bytes"] > GiB
        assert report["node"]["limit_bytes"] == 2 * GiB
        assert report["node"]["threshold"] == 0.95
        assert any(entry["name"] == "ray::hog" for entry in report["top"])
        assert [r["kind"] for r in head.reports()] == ["ray_monitor_kill"]
        assert "FOLLOWUP 499500" in result.stdout
    finally:
        cleanup(head)


def test_kernel_oom_kill_is_reported_with_its_victim(make_cgroup):
    """Guard off and Ray blind: only the kernel acts, and rayguard names what it killed."""
    cgroup = make_cgroup(2 * GiB)
    head = start_node("head", cgroup, env={"RAYGUARD_NUM_CPUS": "1", "RAYGUARD_GUARD_REFRESH_MS": "0"})
    try:
        head.wait_ready()
        result = run_driver(head, hog_script(head.address))
        report = head.wait_for_report("kernel_oom_kill")
        assert cgroup.oom_kill_count() >= 1
        assert "ERROR" in result.stdout, result.stdout + result.stderr
        assert report["victim"]["name"] == "ray::hog"
        assert report["victim"]["rss_bytes"] > GiB  # its last known memory
        assert report["node"]["limit_bytes"] == 2 * GiB
        assert not [r for r in head.reports() if r["kind"] == "monitor_kill"]
    finally:
        cleanup(head)

"""`rayguard-node detect` inside real cgroups (v1 or v2, whichever this host can write), next
to what Ray 2.60 reports there."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from rayguard_node.cgroup.scratch import memory_cgroup_of

from .cgroups import make_cgroup, scratch_parent  # noqa: F401  (fixtures)

MiB = 1024**2
LIMIT_BYTES = 768 * MiB
RAY_PROBE = "from ray._common.utils import get_system_memory; print(get_system_memory())"


def _run_in(cgroup, argv, pod_view=False):
    result = subprocess.run(cgroup.command(argv, pod_view=pod_view), capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_detect_finds_limit_on_parent_where_ray_sees_the_host(make_cgroup):
    parent = make_cgroup(LIMIT_BYTES)
    grandchild = parent.child("leaf")  # no limit of its own: the sentinel
    detection = json.loads(_run_in(grandchild, [sys.executable, "-m", "rayguard_node", "detect", "--json"]))
    assert detection["source"] == f"cgroup{parent.version}"
    assert detection["limit_bytes"] == 805306368
    assert detection["limited_by"].endswith(parent.directory.name)
    assert detection["cgroup_path"].endswith(f"{parent.directory.name}/leaf")
    assert 0 < detection["working_set_bytes"] <= detection["usage_bytes"] < LIMIT_BYTES
    assert detection["oom_kill_count"] == 0

    # The bug rayguard exists to fix, documented by measurement: Ray reads the root
    # cgroup file and sizes itself from the host's memory.
    ray_bytes = int(_run_in(grandchild, [sys.executable, "-c", RAY_PROBE]))
    assert ray_bytes == detection["host_total_bytes"]
    assert ray_bytes > 10 * LIMIT_BYTES
    assert detection["ray_limit_bytes"] == ray_bytes
    assert detection["ray_sees_limit"] is False


def test_pod_view_makes_ray_and_rayguard_agree(make_cgroup):
    pod = make_cgroup(LIMIT_BYTES)
    argv = [sys.executable, "-m", "rayguard_node", "detect", "--json"]
    detection = json.loads(_run_in(pod, argv, pod_view=True))
    ray_bytes = int(_run_in(pod, [sys.executable, "-c", RAY_PROBE], pod_view=True))
    assert detection["limit_bytes"] == LIMIT_BYTES == ray_bytes
    assert detection["ray_sees_limit"] is True


def test_plan_inside_a_cgroup_uses_its_limit(make_cgroup):
    pod = make_cgroup(2048 * MiB)
    plan = json.loads(_run_in(pod, [sys.executable, "-m", "rayguard_node", "plan", "--role", "worker", "--json"]))
    assert plan["limit_bytes"] == 2048 * MiB
    assert plan["limit_source"] == f"cgroup{pod.version}"
    assert plan["object_store_bytes"] == int(2048 * MiB * 0.3)
    assert plan["guard_mode"] == "primary"  # Ray is blind here


def test_kernel_oom_kill_is_counted(make_cgroup):
    """The counter the kernel-OOM detector relies on really moves on this machine."""
    pod = make_cgroup(64 * MiB)
    hog = "x = bytearray(256 * 1024 * 1024)"
    result = subprocess.run(pod.command([sys.executable, "-c", hog]), capture_output=True, timeout=60)
    assert result.returncode == -9
    assert pod.oom_kill_count() == 1


def test_a_kill_in_a_container_is_counted_and_detect_reports_it(make_cgroup):
    """The container's cgroup has no limit; its pod's has. v2 counts the kill at both levels
    (memory.events is hierarchical); v1 only in the victim's own cgroup. detect, run in the
    container again, reports it either way."""
    pod = make_cgroup(64 * MiB)
    container = pod.child("container")
    hog = "x = bytearray(256 * 1024 * 1024)"
    result = subprocess.run(container.command([sys.executable, "-c", hog]), capture_output=True, timeout=60)
    assert result.returncode == -9
    assert container.oom_kill_count() == 1
    assert pod.oom_kill_count() == (1 if pod.version == 2 else 0)
    detection = json.loads(_run_in(container, [sys.executable, "-m", "rayguard_node", "detect", "--json"]))
    assert detection["limit_bytes"] == 64 * MiB
    assert detection["oom_kill_count"] == 1


def test_another_processs_memory_cgroup_is_found_from_our_view(make_cgroup):
    """What --runtime podman reads a container's OOM counter from: the cgroup of a process in
    a child cgroup, found through this process's mounts; None once the process is gone."""
    cg = make_cgroup(256 * 1024 * 1024)
    child = subprocess.Popen(cg.command(["sleep", "30"]))
    try:
        deadline = time.monotonic() + 10
        while child.pid not in cg.pids() and time.monotonic() < deadline:
            time.sleep(0.05)
        found = memory_cgroup_of(child.pid)
        assert found is not None and found.directory == cg.directory and found.version == cg.version
    finally:
        child.kill()
        child.wait()
    assert memory_cgroup_of(child.pid) is None

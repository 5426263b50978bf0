"""A cgroup namespace without its own cgroup mount: /proc/self/cgroup says `0::/` and the
mount's root is `/../../..`. The real directory is found through `cgroup.procs`, or the
error names the namespace and RAYGUARD_LIMIT_BYTES. Trees under tests/data/cgroup."""

from __future__ import annotations

import subprocess
import sys

import pytest

from rayguard_node.cgroup.detect import detect
from rayguard_node.cgroup.paths import V2, locate_controller
from rayguard_node.errors import RayguardError
from tests.paths import DATA_DIR

TREES = DATA_DIR / "cgroup"
GiB = 1024**3


def test_the_cgroup_listing_our_pid_is_found():
    root = TREES / "ns_host_mount"
    location = locate_controller("memory", root / "proc", root / "sys")
    assert (location.version, location.path) == (V2, "/kubepods.slice/pod1/ctr")
    assert location.directory == root / "sys/fs/cgroup/kubepods.slice/pod1/ctr"
    assert [path for path, _ in location.chain()] == [
        "/kubepods.slice/pod1/ctr", "/kubepods.slice/pod1", "/kubepods.slice", "/"]


def test_detect_reads_the_limit_there(tmp_path):
    root = TREES / "ns_host_mount"
    d = detect(root / "sys", root / "proc", tmp_path)
    assert (d.source, d.limit_bytes, d.limited_by) == ("cgroup2", 2 * GiB, "/kubepods.slice/pod1")
    assert (d.usage_bytes, d.oom_kill_count, d.cpu_limit) == (524288000, 1, 2.0)


def test_a_cgroup_nobody_can_find_names_the_namespace_and_the_way_out(tmp_path):
    root = TREES / "ns_host_mount_lost"
    with pytest.raises(RayguardError) as caught:
        detect(root / "sys", root / "proc", tmp_path)
    message = str(caught.value)
    assert "cgroup namespace" in message and "RAYGUARD_LIMIT_BYTES" in message
    assert "/../../.." in message and "\n" not in message


def test_the_cli_says_so_in_one_line_and_limit_bytes_bypasses_it():
    root = TREES / "ns_host_mount_lost"
    roots = ["--sysfs-root", str(root / "sys"), "--procfs-root", str(root / "proc")]
    result = subprocess.run([sys.executable, "-m", "rayguard_node", "detect", *roots],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "cgroup namespace" in result.stderr and "Traceback" not in result.stderr
    planned = subprocess.run([sys.executable, "-m", "rayguard_node", "plan", "--role", "worker",
                              "--limit-bytes", "2Gi", "--shm-bytes", "1Gi", *roots],
                             capture_output=True, text=True, timeout=60)
    assert planned.returncode == 0, planned.stderr

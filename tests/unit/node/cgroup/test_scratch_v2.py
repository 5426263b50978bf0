"""cgroup v2 scratch cgroups on fake trees: delegation (no internal processes) and the pod
view's command line. The real v2 paths run in tests/integration wherever v2 is writable."""

from __future__ import annotations

import logging
import os
import stat
import subprocess
from pathlib import Path

from rayguard_node.cgroup.delegation import LEAF_NAME, delegate, undo, why_not_delegable
from rayguard_node.cgroup.paths import V1, V2
from rayguard_node.cgroup.scratch import MemoryCgroup, version_of


def fake_v2(directory: Path, *, procs: str = "", subtree: str = "", root: bool = False) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "cgroup.controllers").write_text("cpu io memory pids\n")
    (directory / "cgroup.subtree_control").write_text(subtree)
    (directory / "cgroup.procs").write_text(procs)
    (directory / "memory.max").write_text("max\n")
    if not root:
        (directory / "cgroup.type").write_text("domain\n")
    return directory


def test_delegate_moves_processes_to_a_leaf_before_enabling_memory(tmp_path):
    directory = fake_v2(tmp_path / "pod", procs="4242\n")
    delegation = delegate(directory)
    assert delegation.leaf == directory / LEAF_NAME
    assert (delegation.leaf / "cgroup.procs").read_text() == "4242"
    assert (directory / "cgroup.subtree_control").read_text() == "+memory"
    assert delegation.enabled_memory


def test_the_root_cgroup_keeps_its_processes(tmp_path):
    directory = fake_v2(tmp_path / "root", procs="1\n7\n", root=True)
    delegation = delegate(directory)
    assert delegation.leaf is None and delegation.enabled_memory
    assert not (directory / LEAF_NAME).exists()


def test_nothing_changes_when_memory_is_already_delegated(tmp_path):
    directory = fake_v2(tmp_path / "pod", procs="", subtree="cpu memory\n")
    delegation = delegate(directory)
    assert delegation.leaf is None and not delegation.enabled_memory
    undo(delegation)
    assert (directory / "cgroup.subtree_control").read_text() == "cpu memory\n"


def test_undo_turns_memory_off_and_moves_the_processes_back(tmp_path, caplog):
    directory = fake_v2(tmp_path / "pod", procs="4242\n")
    delegation = delegate(directory)
    (directory / "cgroup.procs").write_text("")
    with caplog.at_level(logging.WARNING):
        undo(delegation)
    assert (directory / "cgroup.subtree_control").read_text() == "-memory"
    assert (directory / "cgroup.procs").read_text() == "4242"
    # A fake leaf holds a real file, so rmdir fails; the kernel's cgroup files would not.
    assert "could not remove" in caplog.text


def test_why_not_delegable_names_a_missing_controller(tmp_path):
    directory = fake_v2(tmp_path / "pod")
    assert why_not_delegable(directory) is None
    (directory / "cgroup.controllers").write_text("cpu pids\n")
    assert "memory controller is not available" in why_not_delegable(directory)


def test_version_of_tells_v1_from_v2(tmp_path):
    assert version_of(fake_v2(tmp_path / "v2")) == V2
    v1 = tmp_path / "v1"
    v1.mkdir()
    (v1 / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    assert version_of(v1) == V1


def test_v2_limit_and_child_use_memory_max_and_subtree_control(tmp_path):
    pod = MemoryCgroup(fake_v2(tmp_path / "pod"))
    pod.set_limit(512 << 20)
    assert (pod.directory / "memory.max").read_text() == str(512 << 20)
    (pod.directory / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n")
    assert pod.oom_kill_count() == 1
    (pod.directory / "memory.peak").write_text("123456\n")
    assert pod.max_usage_bytes() == 123456
    child = pod.child("leaf", 1 << 20)
    assert (pod.directory / "cgroup.subtree_control").read_text() == "+memory"
    assert child.version == V2 and (child.directory / "memory.max").read_text() == str(1 << 20)


def _executable(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


def test_v2_pod_view_joins_the_cgroup_then_unshares_and_mounts_cgroup2(tmp_path):
    """The command line's quoting and order, with stand-ins for unshare(1) and mount(8)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls"
    _executable(bin_dir / "unshare", f'#!/bin/sh\necho "unshare $*" >> {log}\n'
                'while :; do case "$1" in --propagation) shift 2;; -*) shift;; *) break;; esac; done\n'
                'exec "$@"\n')
    _executable(bin_dir / "mount", f'#!/bin/sh\necho "mount $*" >> {log}\n')
    _executable(bin_dir / "umount", f'#!/bin/sh\necho "umount $*" >> {log}\n')
    pod = MemoryCgroup(fake_v2(tmp_path / "pod"))
    argv = pod.command(["printf", "%s|", "two words", "it's"], pod_view=True)
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}")
    result = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=10)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "two words|it's|"
    calls = log.read_text().splitlines()
    assert calls[0].startswith("unshare --cgroup --mount --propagation private sh -c")
    assert calls[1:] == ["umount -l /sys/fs/cgroup", "mount -t cgroup2 none /sys/fs/cgroup"]
    assert (pod.directory / "cgroup.procs").read_text().strip().isdigit()  # joined first

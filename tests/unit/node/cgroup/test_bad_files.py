"""cgroup and procfs files that are not what the kernel writes: one line naming the file,
never a traceback, a hang or a silent "no limit". Trees under tests/data/cgroup."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from rayguard_node.cgroup.detect import detect
from rayguard_node.cgroup.files import NodeSampler, parse_memory_limit
from rayguard_node.cgroup.paths import locate_controller
from rayguard_node.errors import CgroupFormatError
from tests.paths import DATA_DIR

TREES = DATA_DIR / "cgroup"
SRC = "/sys/fs/cgroup/memory.max"


def run_detect(root: Path, shm: Path):
    return detect(sysfs_root=root / "sys", procfs_root=root / "proc", shm_path=shm)


def copy_tree(name: str, tmp_path: Path) -> Path:
    target = tmp_path / name
    shutil.copytree(TREES / name, target, symlinks=True)
    return target


@pytest.mark.parametrize("tree, relative, expected", [
    ("binary_limit", "sys/fs/cgroup/memory.max", "an integer"),
    ("negative_limit", "sys/fs/cgroup/memory.max", "a limit of 0 or more bytes, or 'max'"),
    ("malformed_controllers", "sys/fs/cgroup/cgroup.controllers", "controller names"),
    ("binary_proc_cgroup", "proc/self/cgroup", "'hierarchy-id:controllers:/path' lines"),
    ("v1_hierarchical_negative", "sys/fs/cgroup/memory/memory.stat", "hierarchical_memory_limit"),
    ("v1_hierarchical_zero", "sys/fs/cgroup/memory/memory.stat", "hierarchical_memory_limit"),
])
def test_bad_file_is_one_line_naming_it(tmp_path, tree, relative, expected):
    with pytest.raises(CgroupFormatError) as caught:
        run_detect(TREES / tree, tmp_path)
    message = str(caught.value)
    assert caught.value.path == str(TREES / tree / relative)
    assert message.startswith(f"cannot parse {TREES / tree / relative}: expected ")
    assert expected in message and "\n" not in message


@pytest.mark.parametrize("text", ["-1\n", "-4096\n", "-0x1\n"])
def test_negative_limit_is_not_no_limit(text):
    with pytest.raises(CgroupFormatError):
        parse_memory_limit(text, SRC)


@pytest.mark.parametrize("text", ["١٠٢٤\n", "1_024\n", "+1024\n", "１０２４\n"])
def test_limits_are_ascii_digits(text):
    with pytest.raises(CgroupFormatError):
        parse_memory_limit(text, SRC)


@pytest.mark.parametrize("tree", ["v1_hierarchical_negative", "v1_hierarchical_zero", "negative_limit",
                                  "binary_limit"])
def test_guard_sampler_refuses_the_same(tree, tmp_path):
    root = copy_tree("v1_pod_view" if tree.startswith("v1") else "v2_namespace", tmp_path)
    sampler = NodeSampler(locate_controller("memory", root / "proc", root / "sys"))
    for relative in ("sys/fs/cgroup/memory/memory.stat", "sys/fs/cgroup/memory/memory.limit_in_bytes",
                     "sys/fs/cgroup/memory.max"):
        if (TREES / tree / relative).exists():
            shutil.copy(TREES / tree / relative, root / relative)
    with pytest.raises(CgroupFormatError):
        sampler.sample()


def test_unreadable_controllers_file_is_an_error_not_the_hosts_memory(tmp_path):
    root = copy_tree("v2_namespace", tmp_path)
    controllers = root / "sys/fs/cgroup/cgroup.controllers"
    controllers.unlink()
    controllers.mkdir()  # reading it fails as an unreadable file does
    with pytest.raises(CgroupFormatError) as caught:
        run_detect(root, tmp_path)
    assert caught.value.path == str(controllers) and "cannot read" in str(caught.value)


def _swap(root: Path, relative: str, kind: str) -> Path:
    path = root / relative
    path.unlink()
    if kind == "fifo":
        os.mkfifo(path)
    else:
        path.symlink_to("/dev/zero")
    return path


def _detect_in_thread(root: Path, shm: Path) -> BaseException | None:
    outcome: list[BaseException | None] = []

    def target() -> None:
        try:
            run_detect(root, shm)
            outcome.append(None)
        except BaseException as error:  # noqa: BLE001 (reported to the test)
            outcome.append(error)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(10)
    assert not thread.is_alive(), "detect hung on a pseudo-file"
    return outcome[0]


@pytest.mark.parametrize("kind", ["fifo", "zero"])
@pytest.mark.parametrize("relative", ["sys/fs/cgroup/memory.max", "sys/fs/cgroup/memory.stat",
                                      "sys/fs/cgroup/memory.current", "sys/fs/cgroup/cgroup.controllers",
                                      "proc/self/cgroup", "proc/self/mountinfo", "proc/meminfo",
                                      "sys/fs/cgroup/memory.events", "sys/fs/cgroup/cpu.max"])
def test_fifo_or_dev_zero_cannot_hang_or_exhaust_memory(tmp_path, kind, relative):
    root = copy_tree("v2_namespace", tmp_path)
    path = _swap(root, relative, kind)
    error = _detect_in_thread(root, tmp_path)
    assert isinstance(error, CgroupFormatError), error
    assert error.path == str(path) and "\n" not in str(error)


def test_cli_prints_one_line_for_binary_bytes():
    tree = TREES / "binary_limit"
    result = subprocess.run([sys.executable, "-m", "rayguard_node", "detect", "--sysfs-root",
                             str(tree / "sys"), "--procfs-root", str(tree / "proc")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert str(tree / "sys/fs/cgroup/memory.max") in result.stderr

"""Our cgroup when the cgroup namespace's root lies below the root of the mount we can see.

A process that enters a new cgroup namespace (`unshare -C`, a runtime's private cgroupns)
without mounting cgroupfs again keeps the host's mount. /proc/self/cgroup then names paths
relative to the namespace's root (`0::/`), and mountinfo gives the mount's root relative to
that same namespace root: `/../../..` for a namespace three levels down. Our directory is
under the mount, but nothing names it. Exactly one cgroup lists our pid in `cgroup.procs`:
the search looks only at that depth, and visits a bounded number of directories.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from rayguard_node.cgroup.reading import read_text
from rayguard_node.errors import CgroupFormatError, CgroupNotFound

MAX_DIRECTORIES = 20_000
PROCS_MAX_BYTES = 1024 * 1024


def levels_above(mount_root: str) -> int | None:
    """How far the mount's root is above the namespace's root (`/../..` -> 2), or None when
    the root is not straight above it."""
    parts = PurePosixPath(mount_root).parts[1:]
    if parts and all(part == ".." for part in parts):
        return len(parts)
    return None


def own_pids(procfs_root: Path, pid: str) -> set[int]:
    """This process's pid, as cgroup.procs shows it to us (and as procfs says it, which in
    tests with a fake tree is the pid `self` points to)."""
    if pid != "self":
        return {int(pid)} if pid.isascii() and pid.isdigit() else set()
    pids = {os.getpid()}
    try:
        target = os.readlink(procfs_root / "self")
    except OSError:
        return pids
    if target.isascii() and target.isdigit():
        pids.add(int(target))
    return pids


def _subdirectories(directory: Path) -> list[str]:
    try:
        with os.scandir(directory) as entries:
            return sorted(e.name for e in entries if e.is_dir(follow_symlinks=False))
    except OSError:
        return []


def _lists(procs: Path, pids: set[int]) -> bool:
    try:
        text = read_text(procs, PROCS_MAX_BYTES)
    except (OSError, CgroupFormatError):
        return False
    return any(word.isascii() and word.isdigit() and int(word) in pids for word in text.split())


def find_namespace_root(mount_directory: Path, depth: int, below: str, pids: set[int]) -> str | None:
    """The path, relative to the mount, of the directory `depth` levels down whose `below`
    subdirectory (our cgroup inside the namespace) lists one of `pids`; None if none does
    within MAX_DIRECTORIES directories."""
    level, visited = [""], 0
    for _ in range(depth):
        deeper = []
        for relative in level:
            for name in _subdirectories(mount_directory / relative):
                visited += 1
                if visited > MAX_DIRECTORIES:
                    return None
                deeper.append(f"{relative}/{name}" if relative else name)
        level = deeper
    for relative in level:
        if _lists(mount_directory / relative / below / "cgroup.procs", pids):
            return relative
    return None


def not_found(cgroup_path: str, cgroup_file: str, mount_root: str, mount_point: str,
              pids: set[int]) -> CgroupNotFound:
    return CgroupNotFound(
        f"this process is in a cgroup namespace ({cgroup_path!r} in {cgroup_file}) that the cgroup"
        f" mount at {mount_point} (root {mount_root!r}) does not show, and no cgroup under that mount"
        f" lists pid {', '.join(map(str, sorted(pids)))} in cgroup.procs: mount cgroupfs inside the"
        " namespace, or set RAYGUARD_LIMIT_BYTES (--limit-bytes) to the memory limit"
    )

"""Making and removing memory cgroups, v1 or v2: local mode, tests and benchmarks.

A pod's runtime never creates cgroups; the kubelet does. Local mode does the kubelet's
part on one machine: a memory cgroup per pod, sized from the pod's limit, optionally
with the pod's view, which is what Ray reads:

- v1: the pod's cgroup bind-mounted at `/sys/fs/cgroup/memory` in a private mount namespace;
- v2: a new cgroup namespace rooted at the pod's cgroup, with a fresh cgroup2 mount at
  `/sys/fs/cgroup` (what a container sees: `/proc/self/cgroup` is `0::/`).

`open_scratch_parent` finds where this process may create memory cgroups (on v2 it first
makes its own cgroup a delegating parent, see `delegation.py`) and `ScratchParent.close`
puts that back.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from rayguard_node.cgroup.delegation import Delegation, delegate, undo, why_not_delegable, words
from rayguard_node.cgroup.files import MEMORY_FILES, MemoryUsage, UsageReader, read_oom_kill_count
from rayguard_node.cgroup.paths import V1, V2, locate_controller
from rayguard_node.cgroup.processes import read_procs
from rayguard_node.errors import RayguardError

V1_MEMORY_MOUNT = Path("/sys/fs/cgroup/memory")
CGROUP2_MOUNT = Path("/sys/fs/cgroup")
PEAK_FILES = {V1: "memory.max_usage_in_bytes", V2: "memory.peak"}


def version_of(directory: Path) -> int:
    """v2 directories have `cgroup.controllers`; v1 ones do not."""
    return V2 if (directory / "cgroup.controllers").exists() else V1


def writable_v1_parent() -> Path | None:
    """This process's own v1 memory cgroup if we may create children in it."""
    location = locate_controller("memory")
    if location is None or location.version != V1:
        return None
    directory = location.directory
    if not (directory / "memory.limit_in_bytes").exists() or not os.access(directory, os.W_OK):
        return None
    return directory


def own_memory_cgroup() -> Path | None:
    """The directory of this process's memory cgroup, v1 or v2, if it has one."""
    location = locate_controller("memory")
    return None if location is None else location.directory


def memory_cgroup_of(pid: int) -> "MemoryCgroup | None":
    """Another process's memory cgroup (a container's), as this process's mounts show it; a
    view, never removed here. None once the process is gone."""
    try:
        location = locate_controller("memory", pid=str(pid), mounts_of="self")
    except (OSError, RayguardError):
        return None
    return None if location is None else MemoryCgroup(location.directory, location.version)


def why_not_writable() -> str | None:
    """None when `open_scratch_parent` can work here; else why not, in words."""
    location = locate_controller("memory")
    if location is None:
        return "this process has no memory cgroup"
    if location.version == V2:
        return why_not_delegable(location.directory)
    if writable_v1_parent() is None:
        return f"the memory cgroup {location.directory} is not writable (run as root)"
    return None


@dataclass
class ScratchParent:
    """Where scratch cgroups go, and what to restore when done."""

    directory: Path
    version: int
    delegation: Delegation | None = None

    def create(self, prefix: str, limit_bytes: int | None = None) -> "MemoryCgroup":
        return MemoryCgroup.create(self.directory, prefix, limit_bytes, self.version)

    def close(self) -> None:
        if self.delegation is not None:
            undo(self.delegation)
            self.delegation = None

    def __enter__(self) -> "ScratchParent":
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def open_scratch_parent() -> ScratchParent | None:
    """This process's memory cgroup made ready for children, or None (see `why_not_writable`)."""
    location = locate_controller("memory")
    if location is None:
        return None
    if location.version == V1:
        parent = writable_v1_parent()
        return None if parent is None else ScratchParent(parent, V1)
    if why_not_delegable(location.directory) is not None:
        return None
    return ScratchParent(location.directory, V2, delegate(location.directory))


def pod_view_possible(version: int) -> bool:
    """The pod view needs root and unshare(1): a mount namespace (v1), and a cgroup
    namespace as well (v2)."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    flags = ["--mount"] + (["--cgroup"] if version == V2 else [])
    probe = subprocess.run(["unshare", *flags, "--propagation", "private", "true"],
                           capture_output=True, timeout=10)
    return probe.returncode == 0


class MemoryCgroup:
    """A memory cgroup this process created and will remove."""

    def __init__(self, directory: Path, version: int | None = None) -> None:
        self.directory = directory
        self.version = version_of(directory) if version is None else version

    @classmethod
    def create(cls, parent: Path, prefix: str, limit_bytes: int | None = None,
               version: int | None = None) -> "MemoryCgroup":
        directory = parent / f"{prefix}-{uuid.uuid4().hex[:8]}"
        directory.mkdir()
        cgroup = cls(directory, version)
        if limit_bytes is not None:
            cgroup.set_limit(limit_bytes)
        return cgroup

    def child(self, name: str, limit_bytes: int | None = None) -> "MemoryCgroup":
        if self.version == V2 and "memory" not in words(self.directory / "cgroup.subtree_control"):
            # Our own cgroups hold no processes when they get children, so no leaf is needed.
            (self.directory / "cgroup.subtree_control").write_text("+memory")
        directory = self.directory / name
        directory.mkdir()
        cgroup = MemoryCgroup(directory, self.version)
        if limit_bytes is not None:
            cgroup.set_limit(limit_bytes)
        return cgroup

    def _file(self, role: str) -> Path:
        return self.directory / MEMORY_FILES[self.version][role]

    def set_limit(self, limit_bytes: int) -> None:
        self._file("limit").write_text(str(limit_bytes))

    def add(self, pid: int) -> None:
        (self.directory / "cgroup.procs").write_text(str(pid))

    def pids(self) -> list[int]:
        found: list[int] = []
        for current, _dirs, files in os.walk(self.directory):
            if "cgroup.procs" in files:
                found.extend(read_procs(Path(current) / "cgroup.procs"))
        return found

    def oom_kill_count(self) -> int:
        return read_oom_kill_count(self.directory, self.version) or 0

    def usage(self) -> MemoryUsage:
        return UsageReader(self.directory, self.version).read()

    def max_usage_bytes(self) -> int | None:
        """The kernel's peak usage (v1 `max_usage_in_bytes`, v2 `memory.peak` where the kernel
        has it), or None."""
        path = self.directory / PEAK_FILES[self.version]
        try:
            return int(path.read_text())
        except (FileNotFoundError, ValueError):
            return None

    def reset_peak(self) -> None:
        """v1 resets the peak on a write; on v2 a fresh cgroup starts at 0 (a write there only
        resets the peak seen through that one open file, kernel 6.12 and later)."""
        if self.version == V1:
            (self.directory / PEAK_FILES[V1]).write_text("0")

    def command(self, argv: list[str], pod_view: bool = False) -> list[str]:
        """argv wrapped so that it starts inside this cgroup (and, with pod_view, sees it the
        way a container does: see the module's docstring)."""
        procs = str(self.directory / "cgroup.procs")
        if not pod_view:
            return ["sh", "-c", 'echo $$ > "$0" && exec "$@"', procs, *argv]
        if self.version == V2:
            # Join the cgroup first: the new cgroup namespace is rooted where the process is.
            # The namespace still shows the host's cgroup2 mount there; a second mount of the
            # same hierarchy on it is refused (EBUSY), so it goes first, in this namespace only.
            inner = f'umount -l {CGROUP2_MOUNT} && mount -t cgroup2 none {CGROUP2_MOUNT} && exec "$@"'
            script = ('echo $$ > "$0" && exec unshare --cgroup --mount --propagation private'
                      f" sh -c '{inner}' sh \"$@\"")
            return ["sh", "-c", script, procs, *argv]
        script = (f'echo $$ > "$0" && mount --bind "$1" {V1_MEMORY_MOUNT}'
                  ' && shift && exec "$@"')
        return ["unshare", "--mount", "--propagation", "private",
                "sh", "-c", script, procs, str(self.directory), *argv]

    def kill_all(self, sig: int = signal.SIGKILL) -> None:
        kill_file = self.directory / "cgroup.kill"
        if sig == signal.SIGKILL and self.version == V2 and kill_file.exists():
            try:
                kill_file.write_text("1")  # the whole subtree, atomically, forks included
            except OSError:
                pass
        for pid in self.pids():
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    def remove(self, timeout_s: float = 10.0) -> None:
        """Kill what is left inside and remove the cgroup with its children."""
        deadline = time.monotonic() + timeout_s
        while True:
            self.kill_all()
            try:
                for current, dirs, _files in os.walk(self.directory, topdown=False):
                    os.rmdir(current)
                return
            except FileNotFoundError:
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)


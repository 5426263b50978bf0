"""Making and removing cgroup v1 memory cgroups: local mode, tests and benchmarks.

A pod's runtime never creates cgroups; the kubelet does. Local mode does the kubelet's
part on one machine: a memory cgroup per pod, sized from the pod's limit, optionally
with the pod's view (its cgroup bind-mounted at the root path in a private mount
namespace, which is what Ray reads).
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from pathlib import Path

from rayguard_node.cgroup.files import read_oom_kill_count, UsageReader, MemoryUsage
from rayguard_node.cgroup.paths import V1, locate_controller
from rayguard_node.cgroup.processes import read_procs

V1_MEMORY_MOUNT = Path("/sys/fs/cgroup/memory")


def writable_v1_parent() -> Path | None:
    """This process's own v1 memory cgroup if we may create children in it."""
    location = locate_controller("memory")
    if location is None or location.version != V1:
        return None
    directory = location.directory
    if not (directory / "memory.limit_in_bytes").exists() or not os.access(directory, os.W_OK):
        return None
    return directory


def why_not_writable() -> str:
    location = locate_controller("memory")
    if location is None:
        return "this process has no memory cgroup"
    if location.version != V1:
        return "the memory controller is cgroup v2 (local mode and tests create v1 cgroups)"
    return f"the memory cgroup {location.directory} is not writable (run as root)"


class MemoryCgroup:
    """A v1 memory cgroup this process created and will remove."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    @classmethod
    def create(cls, parent: Path, prefix: str, limit_bytes: int | None = None) -> "MemoryCgroup":
        directory = parent / f"{prefix}-{uuid.uuid4().hex[:8]}"
        directory.mkdir()
        cgroup = cls(directory)
        if limit_bytes is not None:
            cgroup.set_limit(limit_bytes)
        return cgroup

    def child(self, name: str, limit_bytes: int | None = None) -> "MemoryCgroup":
        directory = self.directory / name
        directory.mkdir()
        cgroup = MemoryCgroup(directory)
        if limit_bytes is not None:
            cgroup.set_limit(limit_bytes)
        return cgroup

    def set_limit(self, limit_bytes: int) -> None:
        (self.directory / "memory.limit_in_bytes").write_text(str(limit_bytes))

    def add(self, pid: int) -> None:
        (self.directory / "cgroup.procs").write_text(str(pid))

    def pids(self) -> list[int]:
        found: list[int] = []
        for current, _dirs, files in os.walk(self.directory):
            if "cgroup.procs" in files:
                found.extend(read_procs(Path(current) / "cgroup.procs"))
        return found

    def oom_kill_count(self) -> int:
        return read_oom_kill_count(self.directory, V1) or 0

    def usage(self) -> MemoryUsage:
        return UsageReader(self.directory, V1).read()

    def max_usage_bytes(self) -> int:
        return int((self.directory / "memory.max_usage_in_bytes").read_text())

    def command(self, argv: list[str], pod_view: bool = False) -> list[str]:
        """argv wrapped so that it starts inside this cgroup (and, with pod_view, sees it
        at /sys/fs/cgroup/memory the way a container does)."""
        procs = str(self.directory / "cgroup.procs")
        if not pod_view:
            return ["sh", "-c", 'echo $$ > "$0" && exec "$@"', procs, *argv]
        script = ('echo $$ > "$0" && mount --bind "$1" /sys/fs/cgroup/memory'
                  ' && shift && exec "$@"')
        return ["unshare", "--mount", "--propagation", "private",
                "sh", "-c", script, procs, str(self.directory), *argv]

    def kill_all(self, sig: int = signal.SIGKILL) -> None:
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

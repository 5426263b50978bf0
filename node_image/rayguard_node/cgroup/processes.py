"""Per-process memory, measured as Ray's memory monitor does: RSS minus shared.

Object-store pages are mapped into every worker that reads them and show up as shared
memory in each; subtracting SHR avoids counting the store once per reader. Names come
from `/proc/PID/cmdline`, because `comm` is cut at 15 characters and Ray names its
workers `ray::<task>` through the process title.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from rayguard_node.cgroup.files import read_small
from rayguard_node.cgroup.reading import read_text
from rayguard_node.errors import RayguardError

PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
NAME_MAX_CHARS = 200

RAYLET, GCS_SERVER, REDIS, DASHBOARD = "raylet", "gcs_server", "redis", "dashboard"
WORKER, IDLE_WORKER, RUNTIME, OTHER = "worker", "idle_worker", "runtime", "other"
PROCESS_CLASSES = (RAYLET, GCS_SERVER, REDIS, DASHBOARD, WORKER, IDLE_WORKER, RUNTIME, OTHER)

_DASHBOARD_TITLES = {"ray::DashboardAgent", "ray::RuntimeEnvAgent", "ray::Dashboard"}
_DASHBOARD_SCRIPTS = ("dashboard.py", "agent.py", "runtime_env/agent/main.py")
_RUNTIME_MARKERS = ("rayguard-node", "rayguard_node")


@dataclass(frozen=True)
class ProcessMemory:
    pid: int
    name: str
    process_class: str
    rss_bytes: int
    shared_bytes: int
    start_ticks: int  # since boot, in clock ticks: orders processes by start
    uss_bytes: int | None = None

    @property
    def rss_minus_shr_bytes(self) -> int:
        return max(0, self.rss_bytes - self.shared_bytes)

    def to_top_entry(self) -> dict[str, object]:
        return {"pid": self.pid, "name": self.name, "rss_minus_shr_bytes": self.rss_minus_shr_bytes}


def process_name(cmdline: bytes) -> str:
    """A readable name from raw cmdline bytes (NUL-separated, maybe space-padded)."""
    parts = [p for p in cmdline.replace(b"\0", b" ").decode(errors="replace").split(" ") if p]
    return " ".join(parts)[:NAME_MAX_CHARS]


def classify(name: str) -> str:
    """The process class (raylet, gcs_server, redis, dashboard, worker, idle_worker, runtime,
    other), from the cmdline-derived name."""
    if not name:
        return OTHER
    first = name.split(" ", 1)[0]
    base = first.rsplit("/", 1)[-1]
    if first in _DASHBOARD_TITLES:  # exact: a user actor may be named "DashboardX"
        return DASHBOARD
    if name.startswith("ray::IDLE"):
        return IDLE_WORKER
    if name.startswith("ray::"):
        return WORKER
    if base == "raylet":
        return RAYLET
    if base == "gcs_server":
        return GCS_SERVER
    if base.startswith("redis-server"):
        return REDIS
    if any(marker in name for marker in _RUNTIME_MARKERS):
        return RUNTIME
    if any(f"/{script}" in name or name.startswith(script) for script in _DASHBOARD_SCRIPTS):
        return DASHBOARD
    return OTHER


def parse_statm(text: str | bytes) -> tuple[int, int]:
    """(rss_bytes, shared_bytes) from /proc/PID/statm."""
    fields = text.split()
    return int(fields[1]) * PAGE_BYTES, int(fields[2]) * PAGE_BYTES


def parse_start_ticks(stat_text: str | bytes) -> int:
    """Field 22 of /proc/PID/stat; the command name may hold spaces and parentheses."""
    close = b")" if isinstance(stat_text, bytes) else ")"
    after_comm = stat_text.rsplit(close, 1)[1].split()  # type: ignore[arg-type]
    return int(after_comm[19])


def parse_uss(smaps_rollup: str) -> int:
    total_kib = 0
    for line in smaps_rollup.splitlines():
        if line.startswith(("Private_Clean:", "Private_Dirty:")):
            total_kib += int(line.split()[1])
    return total_kib * 1024


def read_process(procfs_root: Path | str, pid: int, with_uss: bool = False) -> ProcessMemory | None:
    """One process, or None if it vanished (or turned into a zombie) mid-read.

    Raw reads and byte parsing: this runs for every process on every scan.
    """
    base = f"{procfs_root}/{pid}/"
    try:
        name = process_name(read_small(base + "cmdline"))
        if not name:  # kernel thread or zombie: no memory of its own to account
            return None
        rss, shared = parse_statm(read_small(base + "statm"))
        start = parse_start_ticks(read_small(base + "stat"))
    except (FileNotFoundError, ProcessLookupError, PermissionError, IndexError, ValueError):
        return None
    uss = None
    if with_uss:  # optional extra: its absence must not hide the process
        try:
            uss = parse_uss(read_small(base + "smaps_rollup").decode())
        except (OSError, IndexError, ValueError):
            uss = None
    return ProcessMemory(pid, name, classify(name), rss, shared, start, uss)


def all_pids(procfs_root: Path) -> list[int]:
    return [int(entry) for entry in os.listdir(procfs_root) if entry.isdigit()]


def pids_in_cgroup(directory: Path) -> list[int]:
    """Every process in a cgroup and its descendants (a pod's whole process tree)."""
    pids: list[int] = []
    for current, _dirs, files in os.walk(directory):
        if "cgroup.procs" in files:
            pids.extend(read_procs(Path(current) / "cgroup.procs"))
    return pids


PROCS_MAX_BYTES = 1024 * 1024  # about 140,000 pids


def read_procs(path: Path) -> list[int]:
    """The pids in a `cgroup.procs` file, read bounded; unreadable or odd content is skipped
    (a cgroup can vanish between the walk and the read)."""
    try:
        text = read_text(path, PROCS_MAX_BYTES)
    except (OSError, RayguardError):
        return []
    return [int(word) for word in text.split() if word.isascii() and word.isdigit()]


def scan(procfs_root: Path, pids: Iterable[int], runtime_pid: int | None = None,
         with_uss: bool = False) -> list[ProcessMemory]:
    """Snapshot the given processes; vanished ones are skipped, not errors."""
    snapshot = []
    for pid in pids:
        process = read_process(procfs_root, pid, with_uss)
        if process is None:
            continue
        if pid == runtime_pid and process.process_class == OTHER:
            process = ProcessMemory(pid, process.name, RUNTIME, process.rss_bytes,
                                    process.shared_bytes, process.start_ticks, process.uss_bytes)
        snapshot.append(process)
    return snapshot


def top(processes: Iterable[ProcessMemory], n: int = 10) -> list[ProcessMemory]:
    """The n largest by RSS - SHR, largest first."""
    return sorted(processes, key=lambda p: (-p.rss_minus_shr_bytes, p.pid))[:n]

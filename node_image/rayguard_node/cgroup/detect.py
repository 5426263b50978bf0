"""`rayguard-node detect`: how much memory this container really has.

Ray 2.60 reads only the root cgroup files (`/sys/fs/cgroup/memory/memory.limit_in_bytes`,
then `/sys/fs/cgroup/memory.max`). We find our own cgroup and take the minimum limit on
the way up, and we also compute what Ray would have seen so the difference is visible.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

from rayguard_node.cgroup.files import (
    parse_memory_limit,
    read_cpu_limit,
    read_memory_limit,
    oom_counted_in,
    read_oom_kill_count,
    read_usage,
)
from rayguard_node.cgroup.paths import V1, CgroupLocation, locate_controller
from rayguard_node.cgroup.reading import read_text
from rayguard_node.errors import CgroupFormatError

SOURCE_HOST = "host"


@dataclass(frozen=True)
class MemoryDetection:
    source: str  # cgroup1 | cgroup2 | host
    cgroup_path: str | None
    limit_bytes: int
    limited_by: str  # the cgroup path that sets the limit, or "host"
    host_total_bytes: int
    usage_bytes: int
    working_set_bytes: int
    oom_kill_count: int | None
    cpu_limit: float | None
    shm_bytes: int | None
    shm_free_bytes: int | None
    ray_limit_bytes: int  # what Ray 2.60 sizes itself from, here
    ray_sees_limit: bool
    warnings: tuple[str, ...]
    # Where the guard and the OOM detector read; not part of the JSON contract.
    measured_directory: str | None = None
    leaf_directory: str | None = None
    cgroup_version: int | None = None

    def to_json_dict(self) -> dict[str, object]:
        data = asdict(self)
        for private in ("measured_directory", "leaf_directory", "cgroup_version"):
            data.pop(private)
        data["warnings"] = list(self.warnings)
        return data


def parse_meminfo(text: str, source: str) -> dict[str, int]:
    """`/proc/meminfo` in bytes (the file says kB and means KiB)."""
    values: dict[str, int] = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isascii() and parts[0].isdigit():
            values[name.strip()] = int(parts[0]) * (1024 if parts[1:] == ["kB"] else 1)
    if "MemTotal" not in values:
        raise CgroupFormatError(source, text[:60], "a MemTotal line")
    return values


def read_shm(shm_path: Path) -> tuple[int | None, int | None]:
    """(size, free) of the tmpfs that holds Ray's object store."""
    try:
        stat = os.statvfs(shm_path)
    except OSError:
        return None, None
    return stat.f_blocks * stat.f_frsize, stat.f_bavail * stat.f_frsize


def ray_visible_limit_bytes(sysfs_root: Path, host_total_bytes: int) -> int:
    """Mirror of Ray 2.60's get_system_memory(): fixed root paths, then the host total."""
    for relative in ("fs/cgroup/memory/memory.limit_in_bytes", "fs/cgroup/memory.max"):
        path = sysfs_root / relative
        try:
            text = read_text(path)
        except OSError:
            continue
        try:  # Ray would fail or guess here; detect reports the file itself where it reads it
            limit = parse_memory_limit(text, str(path))
        except CgroupFormatError:
            return host_total_bytes
        return min(limit, host_total_bytes) if limit is not None else host_total_bytes
    return host_total_bytes


def detect(
    sysfs_root: Path = Path("/sys"),
    procfs_root: Path = Path("/proc"),
    shm_path: Path = Path("/dev/shm"),
) -> MemoryDetection:
    meminfo_path = procfs_root / "meminfo"
    meminfo = parse_meminfo(read_text(meminfo_path), str(meminfo_path))
    host_total = meminfo["MemTotal"]
    shm_bytes, shm_free = read_shm(shm_path)
    ray_limit = ray_visible_limit_bytes(sysfs_root, host_total)
    memory = locate_controller("memory", procfs_root, sysfs_root)
    cpu = locate_controller("cpu", procfs_root, sysfs_root)
    cpu_limit = read_cpu_limit(cpu) if cpu is not None else None
    if memory is None:
        host_used = host_total - meminfo.get("MemAvailable", meminfo.get("MemFree", 0))
        return MemoryDetection(
            SOURCE_HOST, None, host_total, SOURCE_HOST, host_total, host_used, host_used,
            None, cpu_limit, shm_bytes, shm_free, ray_limit, ray_limit == host_total,
            ("no memory cgroup found for this process; using the host's MemTotal",),
        )
    return _detect_in_cgroup(memory, host_total, cpu_limit, shm_bytes, shm_free, ray_limit)


def _detect_in_cgroup(
    location: CgroupLocation,
    host_total: int,
    cpu_limit: float | None,
    shm_bytes: int | None,
    shm_free: int | None,
    ray_limit: int,
) -> MemoryDetection:
    source = "cgroup1" if location.version == V1 else "cgroup2"
    found = read_memory_limit(location)
    # Usage counts where the limit is: that is what the kernel compares.
    measured = found.limited_by_directory or location.directory
    usage = read_usage(measured, location.version)
    warnings: list[str] = []
    if found.limit_bytes is None or found.limit_bytes >= host_total:
        source, limit, limited_by = SOURCE_HOST, host_total, SOURCE_HOST
        warnings.append(
            f"no memory limit on {location.path} or its parents; using the host's"
            f" MemTotal. Set a memory limit on the container."
        )
    else:
        limit, limited_by = found.limit_bytes, str(found.limited_by)
    if ray_limit != limit:
        warnings.append(
            f"Ray 2.60 alone would size itself from {ray_limit} bytes, not {limit}:"
            " rayguard passes the real numbers and guards memory itself"
        )
    return MemoryDetection(
        source=source,
        cgroup_path=location.path,
        limit_bytes=limit,
        limited_by=limited_by,
        host_total_bytes=host_total,
        usage_bytes=usage.usage_bytes,
        working_set_bytes=usage.working_set_bytes,
        oom_kill_count=read_oom_kill_count(oom_counted_in(location.version, location.directory, measured),
                                           location.version),
        cpu_limit=cpu_limit,
        shm_bytes=shm_bytes,
        shm_free_bytes=shm_free,
        ray_limit_bytes=ray_limit,
        ray_sees_limit=ray_limit == limit,
        warnings=tuple(warnings),
        measured_directory=str(measured),
        leaf_directory=str(location.directory),
        cgroup_version=location.version,
    )

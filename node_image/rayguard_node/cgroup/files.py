"""Parsers and readers for the cgroup files that hold limits, usage and OOM counts.

Parsers are pure functions from file text to numbers; readers join them with a
`CgroupLocation`. A missing limit file means "no limit at this level" (the root cgroup
has none). A file that exists but is empty or garbage is an error naming the file:
guessing a memory limit is how nodes die.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from rayguard_node.cgroup.paths import V1, CgroupLocation
from rayguard_node.cgroup.reading import read_optional, read_text
from rayguard_node.errors import CgroupFormatError

# cgroup v1 reports "no limit" as a page-aligned LONG_MAX; anything this large is unlimited.
V1_UNLIMITED_FLOOR_BYTES = 2**62

MEMORY_FILES = {
    V1: {"limit": "memory.limit_in_bytes", "usage": "memory.usage_in_bytes",
         "stat": "memory.stat", "inactive_file": "total_inactive_file",
         "oom": "memory.oom_control"},
    2: {"limit": "memory.max", "usage": "memory.current", "stat": "memory.stat",
        "inactive_file": "inactive_file", "oom": "memory.events"},
}


# What the kernel prints: ASCII digits, perhaps a '-'. (Python's int() also takes spaces
# inside, '_' separators and other scripts' digits.)
_INTEGER = re.compile(r"-?[0-9]{1,20}")
NOT_NEGATIVE_LIMIT = "a limit of 0 or more bytes, or 'max'"


def parse_int(text: str, source: str) -> int:
    stripped = text.strip()
    if not _INTEGER.fullmatch(stripped):
        raise CgroupFormatError(source, text, "an integer")
    return int(stripped)


def parse_memory_limit(text: str, source: str) -> int | None:
    """Bytes, or None for unlimited (`max`, or the v1 sentinel of 2^62 and above).

    No kernel writes a negative limit (v1 turns `-1` into its sentinel), so one is an error,
    never "no limit".
    """
    if text.strip() == "max":
        return None
    value = parse_int(text, source)
    if value < 0:
        raise CgroupFormatError(source, text, NOT_NEGATIVE_LIMIT)
    if value >= V1_UNLIMITED_FLOOR_BYTES:
        return None
    return value


def parse_flat_keyed(text: str, source: str) -> dict[str, int]:
    """`key value` lines, as in memory.stat, memory.events and memory.oom_control."""
    values: dict[str, int] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2:
            raise CgroupFormatError(source, line, "'key value' lines")
        if not _INTEGER.fullmatch(parts[1]):
            raise CgroupFormatError(source, line, "'key value' lines with integer values")
        values[parts[0]] = int(parts[1])
    if not values:
        raise CgroupFormatError(source, text, "'key value' lines")
    return values


def parse_cpu_max(text: str, source: str) -> float | None:
    """cgroup v2 `cpu.max`: "max 100000" or "200000 100000" -> cores, None if unlimited."""
    parts = text.split()
    if len(parts) not in (1, 2):
        raise CgroupFormatError(source, text, "'QUOTA PERIOD' or 'max PERIOD'")
    if parts[0] == "max":
        return None
    quota = parse_int(parts[0], source)
    period = parse_int(parts[1], source) if len(parts) == 2 else 100_000
    if period <= 0:
        raise CgroupFormatError(source, text, "a positive period")
    return quota / period


def parse_cfs(quota_text: str, period_text: str, source: str) -> float | None:
    """cgroup v1 `cpu.cfs_quota_us` / `cpu.cfs_period_us`; a quota of -1 is unlimited."""
    quota = parse_int(quota_text, source + "/cpu.cfs_quota_us")
    period = parse_int(period_text, source + "/cpu.cfs_period_us")
    if quota < 0:
        return None
    if period <= 0:
        raise CgroupFormatError(source + "/cpu.cfs_period_us", period_text, "a positive period")
    return quota / period


def _read(path: Path) -> str | None:
    return read_optional(path)


@dataclass(frozen=True)
class LimitOnPath:
    limit_bytes: int | None
    limited_by: str | None
    limited_by_directory: Path | None


def read_memory_limit(location: CgroupLocation) -> LimitOnPath:
    """The effective limit: the minimum along the path from our cgroup to the mount root."""
    name = MEMORY_FILES[location.version]["limit"]
    best = LimitOnPath(None, None, None)
    for path, directory in location.chain():
        text = _read(directory / name)
        if text is None:
            continue
        limit = parse_memory_limit(text, str(directory / name))
        if limit is not None and (best.limit_bytes is None or limit < best.limit_bytes):
            best = LimitOnPath(limit, path, directory)
    if location.version == V1:
        best = _apply_v1_hierarchical_limit(location, best)
    return best


def _apply_v1_hierarchical_limit(location: CgroupLocation, best: LimitOnPath) -> LimitOnPath:
    """v1's memory.stat knows limits above the mount root, which we cannot walk to."""
    text = _read(location.directory / "memory.stat")
    if text is None:
        return best
    stat = parse_flat_keyed(text, str(location.directory / "memory.stat"))
    hierarchical = check_hierarchical(stat.get("hierarchical_memory_limit"),
                                      str(location.directory / "memory.stat"))
    if hierarchical is None or hierarchical >= V1_UNLIMITED_FLOOR_BYTES:
        return best
    if best.limit_bytes is None or hierarchical < best.limit_bytes:
        return LimitOnPath(hierarchical, f"above {location.mount_root}", None)
    return best


def check_hierarchical(value: int | None, source: str) -> int | None:
    """v1's hierarchical_memory_limit is positive: the kernel prints its sentinel, never -1 or 0."""
    if value is not None and value <= 0:
        raise CgroupFormatError(source, f"hierarchical_memory_limit {value}",
                                "hierarchical_memory_limit to be a positive number of bytes")
    return value


@dataclass(frozen=True)
class MemoryUsage:
    usage_bytes: int
    inactive_file_bytes: int

    @property
    def working_set_bytes(self) -> int:
        """What the kubelet evicts on and the OOM killer effectively sees."""
        return max(0, self.usage_bytes - self.inactive_file_bytes)


def read_small(path: str) -> bytes:
    """One small kernel file, without the cost of a Python file object."""
    # Non-blocking: a FIFO in place of the file gives an error at once instead of a hang.
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        return os.read(descriptor, 65536)
    finally:
        os.close(descriptor)


def stat_value(stat: bytes, key: bytes) -> int | None:
    """The value of `key` in a memory.stat text, without splitting it into lines."""
    needle = b"\n" + key + b" "
    start = stat.find(needle)
    if start < 0:
        if not stat.startswith(key + b" "):
            return None
        start = -1
    start += len(needle)
    end = stat.find(b"\n", start)
    return int(stat[start:end if end >= 0 else None])


def read_usage(directory: Path, version: int) -> MemoryUsage:
    """Usage and inactive file pages, read and checked as `detect` does once at start-up
    (the guard's `UsageReader` then reads the same files cheaply)."""
    files = MEMORY_FILES[version]
    usage_path, stat_path = directory / files["usage"], directory / files["stat"]
    usage = parse_int(read_text(usage_path), str(usage_path))  # a missing file: FileNotFoundError
    stat = parse_flat_keyed(read_text(stat_path), str(stat_path))
    return MemoryUsage(usage, stat.get(files["inactive_file"], 0))


class UsageReader:
    """Reads usage and working set of one cgroup; paths are resolved once.

    This is the guard's hot path: two small reads per sample, parsed as bytes.
    """

    def __init__(self, directory: Path, version: int) -> None:
        files = MEMORY_FILES[version]
        self.usage_path = str(directory / files["usage"])
        self.stat_path = str(directory / files["stat"])
        self.inactive_key = files["inactive_file"].encode()

    def read(self) -> MemoryUsage:
        return self.read_with_stat()[0]

    def read_with_stat(self) -> tuple[MemoryUsage, bytes]:
        raw = read_small(self.usage_path)
        try:
            usage = int(raw)
        except ValueError:
            raise CgroupFormatError(self.usage_path, raw.decode(errors="replace"), "an integer") from None
        stat = read_small(self.stat_path)
        try:
            inactive = stat_value(stat, self.inactive_key) or 0
        except ValueError:
            raise CgroupFormatError(self.stat_path, stat.decode(errors="replace")[:60],
                                    "'key value' lines with integer values") from None
        return MemoryUsage(usage, inactive), stat


class WorkingSetSampler:
    """The guard's sample, made cheap where precision cannot matter.

    Reading v1 `memory.stat` costs the kernel far more than `memory.usage_in_bytes`.
    Usage is an upper bound of the working set, so while usage is below `exact_above_bytes`
    (the guard's threshold: below it no decision depends on the exact figure) the
    inactive-file figure from a recent `memory.stat` is good enough; above it, every sample
    reads both files. "Recent" is every `stat_every` samples, or with `stat_period_s` by time
    (the guard's adaptive period makes the count of samples a poor clock).
    """

    def __init__(self, reader: UsageReader, exact_above_bytes: int, stat_every: int = 5,
                 stat_period_s: float | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.reader = reader
        self.exact_above_bytes = exact_above_bytes
        self.stat_every = stat_every
        self.stat_period_s = stat_period_s
        self.clock = clock
        self._calls = 0
        self._stat_at = float("-inf")
        self._inactive: int | None = None

    def _stat_due(self) -> bool:
        if self._inactive is None:
            return True
        if self.stat_period_s is not None:
            return self.clock() - self._stat_at >= self.stat_period_s
        return self._calls % self.stat_every == 0

    def read(self) -> tuple[int, int]:
        self._calls += 1
        if self._stat_due():
            usage = self.reader.read()
        else:
            raw = read_small(self.reader.usage_path)
            try:
                usage_bytes = int(raw)
            except ValueError:
                raise CgroupFormatError(self.reader.usage_path, raw.decode(errors="replace"),
                                        "an integer") from None
            if usage_bytes < self.exact_above_bytes:
                return usage_bytes, max(0, usage_bytes - self._inactive)  # type: ignore[operator]
            usage = self.reader.read()
        self._inactive = usage.inactive_file_bytes
        if self.stat_period_s is not None:
            self._stat_at = self.clock()
        return usage.usage_bytes, usage.working_set_bytes


class NodeSampler:
    """Limit, usage and working set in one go, for a sample of the whole node.

    The limit is re-read on every sample (a container's limit can be resized in place);
    usage is read where the limit is, since that is what the kernel compares.
    """

    def __init__(self, location: CgroupLocation) -> None:
        name = MEMORY_FILES[location.version]["limit"]
        self.levels = [(str(directory / name), UsageReader(directory, location.version))
                       for _path, directory in location.chain()]
        self.leaf = self.levels[0][1]
        self.v1 = location.version == V1

    def sample(self) -> tuple[int | None, MemoryUsage]:
        limit: int | None = None
        reader = self.leaf
        for path, level_reader in self.levels:
            try:
                value = parse_memory_limit(read_small(path).decode(errors="replace"), path)
            except FileNotFoundError:
                continue
            if value is not None and (limit is None or value < limit):
                limit, reader = value, level_reader
        usage, stat = reader.read_with_stat()
        if self.v1:
            try:
                hierarchical = stat_value(stat, b"hierarchical_memory_limit")
            except ValueError:
                raise CgroupFormatError(reader.stat_path, stat.decode(errors="replace")[:60],
                                        "'key value' lines with integer values") from None
            hierarchical = check_hierarchical(hierarchical, reader.stat_path)
            if hierarchical is not None and hierarchical < V1_UNLIMITED_FLOOR_BYTES:
                limit = hierarchical if limit is None else min(limit, hierarchical)
        return limit, usage


def oom_counted_in(version: int, leaf: Path, limited: Path) -> Path:
    """Where the kernel counts the OOM kills of our processes. v1 counts a kill in the victim's
    own memory cgroup (our leaf), not where the limit was hit; v2's `memory.events` is
    hierarchical, so the cgroup that holds the limit counts the kills below it too."""
    return leaf if version == V1 else limited


def read_oom_kill_count(directory: Path, version: int) -> int | None:
    """Kernel OOM kills counted in this cgroup; None where the kernel does not count."""
    path = directory / MEMORY_FILES[version]["oom"]
    text = _read(path)
    if text is None:
        return None
    return parse_flat_keyed(text, str(path)).get("oom_kill")


def read_cpu_limit(location: CgroupLocation) -> float | None:
    """The smallest CPU quota along the path, in cores; None when unlimited."""
    best: float | None = None
    for _path, directory in location.chain():
        if location.version == V1:
            quota, period = _read(directory / "cpu.cfs_quota_us"), _read(directory / "cpu.cfs_period_us")
            cores = parse_cfs(quota, period, str(directory)) if quota is not None and period is not None else None
        else:
            text = _read(directory / "cpu.max")
            cores = parse_cpu_max(text, str(directory / "cpu.max")) if text is not None else None
        if cores is not None and (best is None or cores < best):
            best = cores
    return best

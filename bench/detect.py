"""Cost of rayguard's memory sampling, side by side with the alternatives, in one run.

1. One node-level sample (limit + usage + working set): rayguard's cgroup reader against
   psutil.virtual_memory() and Ray 2.60's get_system_memory() + get_used_memory().
2. One full process scan (pid, name from cmdline, class, RSS, SHR) with 10, 100 and 500
   processes alive: rayguard's procfs reader against psutil.

Targets: a node sample <= 200 us; a scan of 100 processes <= 50 ms.
Run, from the repository root: .venv/bin/python -m bench.detect
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import psutil

from rayguard_node.cgroup.processes import scan
from rayguard_node.cgroup.files import NodeSampler, UsageReader
from rayguard_node.cgroup.paths import locate_controller


def per_call_us(fn: Callable[[], object], min_seconds: float = 1.0) -> tuple[float, float]:
    """(wall us per call, CPU us per call), over at least min_seconds."""
    fn()
    calls, wall0, cpu0 = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - wall0 < min_seconds:
        fn()
        calls += 1
    return ((time.perf_counter() - wall0) / calls * 1e6, (time.process_time() - cpu0) / calls * 1e6)


def node_sample_rows() -> list[tuple[str, float, float]]:
    location = locate_controller("memory")
    rows = []
    if location is not None:
        reader = UsageReader(location.directory, location.version)
        sampler = NodeSampler(location)

        def rayguard_sample() -> object:
            return sampler.sample()

        rows.append(("rayguard: limit along path + usage + working set", *per_call_us(rayguard_sample)))
        rows.append(("rayguard: usage + working set (the guard's tick)", *per_call_us(reader.read)))
    rows.append(("psutil.virtual_memory()", *per_call_us(psutil.virtual_memory)))
    try:
        from ray._private.utils import get_system_memory, get_used_memory

        rows.append(("ray get_system_memory() + get_used_memory()",
                     *per_call_us(lambda: (get_system_memory(), get_used_memory()))))
    except ImportError:
        pass
    return rows


def psutil_scan(pids: list[int]) -> list[tuple[int, str, int, int]]:
    out = []
    for pid in pids:
        try:
            process = psutil.Process(pid)
            with process.oneshot():
                info = process.memory_info()
                out.append((pid, " ".join(process.cmdline()), info.rss, info.shared))
        except psutil.Error:
            pass
    return out


def scan_rows() -> list[tuple[int, float, float]]:
    rows = []
    for count in (10, 100, 500):
        children = [subprocess.Popen(["sleep", "600"]) for _ in range(count)]
        try:
            pids = [c.pid for c in children]
            ours = per_call_us(lambda: scan(Path("/proc"), pids), 1.0)[0] / 1000
            theirs = per_call_us(lambda: psutil_scan(pids), 1.0)[0] / 1000
            rows.append((count, ours, theirs))
        finally:
            for child in children:
                child.kill()
                child.wait()
    return rows


def main() -> int:
    print("One node-level sample (lower is better)")
    print(f"  {'method':<52} {'wall us':>9} {'cpu us':>9}")
    for name, wall, cpu in node_sample_rows():
        print(f"  {name:<52} {wall:9.1f} {cpu:9.1f}")
    print("\nOne full process scan (pid, cmdline name, class, RSS, SHR)")
    print(f"  {'processes':>9} {'rayguard ms':>12} {'psutil ms':>10}")
    for count, ours, theirs in scan_rows():
        print(f"  {count:>9} {ours:12.2f} {theirs:10.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What the benchmarks read from /proc: a process's peak RSS and CPU time, its command line,
and whether it has started to exit."""

from __future__ import annotations

import os
from pathlib import Path

from rayguard_node.cgroup.files import read_small

PF_EXITING = 0x4  # task flag set as soon as a killed process starts to exit


def vm_hwm_bytes(pid: int) -> int | None:
    """Peak RSS (VmHWM) of a process, or None if it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc/PID/stat; OSError if it is gone."""
    fields = read_small(f"/proc/{pid}/stat").rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_seconds_or_zero(pid: int) -> float:
    """`cpu_seconds`, or 0.0 if the process is gone."""
    try:
        return cpu_seconds(pid)
    except OSError:
        return 0.0


def exit_state(pid: int) -> tuple[bool, bool]:
    """(killed, gone): the process has started to exit (a fatal signal took effect); it is
    a zombie or gone."""
    try:
        stat = read_small(f"/proc/{pid}/stat")
    except (FileNotFoundError, ProcessLookupError):
        return True, True
    fields = stat.rsplit(b")", 1)[1].split()
    gone = fields[0] in (b"Z", b"X")
    return gone or bool(int(fields[6]) & PF_EXITING), gone


def cmdline(pid: int) -> bytes:
    try:
        return read_small(f"/proc/{pid}/cmdline")
    except OSError:
        return b""

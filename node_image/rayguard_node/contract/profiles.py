"""Where a pod's memray profiles are and how they are named: what the runtime writes, what its
worker hook writes, and what `rayguard profile fetch` and local mode read back.

A profile is one Ray worker process, `<pid>-<start ticks>.bin`, in the Ray session's log dir
(`<ray temp dir>/session_<time>/logs/memray/`), with the runtime's index `profiles.json`
beside it (which tasks and actors each worker ran).
"""

from __future__ import annotations

import re
from pathlib import Path

SUBDIR = ("logs", "memray")  # under a Ray session dir
SESSION_LATEST = "session_latest"  # Ray's link to the current session
SESSION = re.compile(r"^session_[0-9][-0-9_]*$")  # session_2026-11-27_19-03-11_656223_11229
INDEX_NAME = "profiles.json"
SUFFIX = ".bin"
_FILE = re.compile(r"^([0-9]{1,10})-([0-9]{1,20})\.bin$")


def profile_dir(ray_temp_dir: Path) -> Path:
    """The current session's profile dir (through Ray's `session_latest` link)."""
    return ray_temp_dir.joinpath(SESSION_LATEST, *SUBDIR)


def file_name(pid: int, start_ticks: int) -> str:
    """`<pid>-<start ticks>.bin`: the start time (field 22 of /proc/PID/stat) tells a reused
    pid from the worker that had it, and is what the runtime's process scans record."""
    return f"{pid}-{start_ticks}{SUFFIX}"


def parse_file_name(name: str) -> tuple[int, int] | None:
    """(pid, start ticks) of a profile file's name, or None for anything else."""
    found = _FILE.match(name)
    return (int(found.group(1)), int(found.group(2))) if found else None

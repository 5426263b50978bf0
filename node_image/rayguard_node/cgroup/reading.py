"""Reading kernel pseudo-files (cgroup, procfs) safely: bounded, never blocking.

A cgroup or procfs file is a small regular file. Something else in its place (a FIFO, a
device such as /dev/zero, a directory) or a file far larger than the kernel writes is an
error naming the file, not a hang or an unbounded read. Text is decoded with
`surrogateescape`, so bytes that are not UTF-8 reach the parsers (which refuse them) instead
of raising `UnicodeDecodeError`, and a path read from a file maps back to the same bytes.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from rayguard_node.errors import CgroupReadError

MAX_BYTES = 64 * 1024  # a cgroup file, /proc/self/cgroup, meminfo: a few KiB at most
MOUNTINFO_MAX_BYTES = 4 * 1024 * 1024  # a host with thousands of mounts
_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOCTTY", 0)
_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def read_bytes(path: Path | str, max_bytes: int = MAX_BYTES) -> bytes:
    """The whole file, at most `max_bytes`. A missing file raises FileNotFoundError (the
    callers decide what absence means); anything else unreadable is a `CgroupReadError`."""
    try:
        descriptor = os.open(path, _OPEN_FLAGS)
    except FileNotFoundError:
        raise
    except OSError as error:
        raise CgroupReadError(str(path), error.strerror or str(error)) from None
    try:
        mode = os.fstat(descriptor).st_mode
        if not stat.S_ISREG(mode):
            kind = next((name for test, name in _KINDS if test(mode)), "not a regular file")
            raise CgroupReadError(str(path), f"it is {kind}, not a regular file")
        chunks: list[bytes] = []
        size = 0
        while True:
            chunk = os.read(descriptor, max_bytes + 1 - size)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
            size += len(chunk)
            if size > max_bytes:
                raise CgroupReadError(str(path), f"it is larger than the {max_bytes} bytes such a file holds")
    except OSError as error:
        raise CgroupReadError(str(path), error.strerror or str(error)) from None
    finally:
        os.close(descriptor)


def read_text(path: Path | str, max_bytes: int = MAX_BYTES) -> str:
    return read_bytes(path, max_bytes).decode("utf-8", errors="surrogateescape")


def read_optional(path: Path | str, max_bytes: int = MAX_BYTES) -> str | None:
    """The text, or None when the file does not exist."""
    try:
        return read_text(path, max_bytes)
    except FileNotFoundError:
        return None

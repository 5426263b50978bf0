"""RFC 3339 times, in UTC with a 'Z', as the runtime and the operator write and read them.

A report's `time` carries milliseconds (`2023-11-14T22:13:20.123Z`); Kubernetes wants whole
seconds (`2023-11-14T22:13:20Z`) in Event timestamps and condition times. `parse` reads
either, with or without fractions, and with 'Z' or a numeric offset.
"""

from __future__ import annotations

from datetime import datetime, timezone

SECONDS_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def now_millis() -> str:
    """Now, with milliseconds: what a report's `time` holds."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def now_seconds() -> str:
    """Now, in whole seconds (truncated): what Kubernetes fields hold."""
    return datetime.now(timezone.utc).strftime(SECONDS_FORMAT)


def format_seconds(ts: float) -> str:
    """A POSIX timestamp in whole seconds (truncated), e.g. `2023-11-14T22:13:20Z`."""
    return datetime.fromtimestamp(ts, timezone.utc).strftime(SECONDS_FORMAT)


def parse(text: str) -> float:
    """An RFC 3339 time as a POSIX timestamp; raises ValueError when it is not one.
    A time without an offset is read as local time (Python's rule); Kubernetes always sends one."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()

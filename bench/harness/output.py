"""How the benchmarks print numbers and tables."""

from __future__ import annotations

import os
from typing import Sequence


def fmt(value: float) -> str:
    """At most two decimals, and none for a whole number."""
    return f"{value:.2f}".rstrip("0").rstrip(".") if value != int(value) else str(int(value))


def percentile(values: list[float], q: float) -> float | None:
    """Nearest rank."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, int(-(-q * len(ordered) // 100)))  # ceil
    return ordered[min(rank, len(ordered)) - 1]


def ms(values: list[float], q: float) -> str:
    """The q-th percentile of `values` (seconds) in whole milliseconds, or '-'."""
    value = percentile(values, q)
    return "-" if value is None else f"{value * 1000:.0f}"


def seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def column_table(header: Sequence[str], rows: list[list[str]]) -> str:
    """Columns as wide as their widest cell, separated by ' | ', a rule under the header."""
    widths = [max(len(str(r[i])) for r in rows + [list(header)]) for i in range(len(header))]
    lines = [" | ".join(h.ljust(w) for h, w in zip(header, widths)),
             "-|-".join("-" * w for w in widths)]
    lines += [" | ".join(str(v).ljust(w) for v, w in zip(r, widths)) for r in rows]
    return "\n".join(lines)


def load_line(before: tuple[float, float, float], after: tuple[float, float, float]) -> str:
    """The 1-minute load average before and after the run, and the CPU count."""
    return f"load average before/after: {before[0]:.2f} / {after[0]:.2f} on {os.cpu_count()} CPUs"

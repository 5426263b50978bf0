"""`rayguard top`, the pure part: live-view entries → a `Snapshot` → table text or JSON rows.

No Redis, no terminal, no clock: the reader passes what Redis answered and Redis's own time.
Nodes are sorted by working set, rows by RSS − SHR, largest first. Entries that do not parse
are skipped and counted, never fatal: one odd writer must not blank the view.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from rayguard_node.contract.live import (HIDE_AFTER_MS, STALE_AFTER_MS, LiveNode, LiveRow,
                                         MalformedLive)
from rayguard_node.sizing.quantity import format_bytes


@dataclass(frozen=True)
class NodeView:
    node: LiveNode
    age_ms: int  # since its last write, by Redis's clock

    @property
    def stale(self) -> bool:
        return self.age_ms > STALE_AFTER_MS


@dataclass(frozen=True)
class RowView:
    pod: str
    row: LiveRow


@dataclass(frozen=True)
class Snapshot:
    time_ms: int
    nodes: tuple[NodeView, ...]
    rows: tuple[RowView, ...]
    skipped: int = 0  # entries that did not parse
    hidden_nodes: int = 0  # not written for longer than the rows' TTL

    @property
    def rows_total(self) -> int:
        """Rows the nodes hold, shown or not."""
        return sum(view.node.rows for view in self.nodes)


def _text(raw: bytes | str) -> str:
    return raw.decode(errors="replace") if isinstance(raw, bytes) else raw


def fresh_nodes(raw: Mapping[bytes, bytes] | Mapping[str, str], now_ms: int
                ) -> tuple[list[NodeView], int, int]:
    """(nodes to show, largest working set first; entries skipped; nodes hidden as gone)."""
    nodes: list[NodeView] = []
    skipped = hidden = 0
    for field, value in raw.items():
        try:
            node = LiveNode.from_json(value)
        except MalformedLive:
            skipped += 1
            continue
        if node.pod != _text(field):
            skipped += 1
            continue
        age = max(0, now_ms - node.time_ms)
        if age > HIDE_AFTER_MS:
            hidden += 1
            continue
        nodes.append(NodeView(node, age))
    nodes.sort(key=lambda view: (-view.node.working_set_bytes, view.node.pod))
    return nodes, skipped, hidden


def parse_rows(pod: str, members: Iterable[tuple[bytes, float]] | Iterable[bytes]) -> tuple[list[RowView], int]:
    """Sorted-set members (with or without scores) → rows; (rows, skipped)."""
    rows: list[RowView] = []
    skipped = 0
    for member in members:
        raw = member[0] if isinstance(member, tuple) else member
        try:
            rows.append(RowView(pod, LiveRow.from_json(raw)))
        except MalformedLive:
            skipped += 1
    return rows, skipped


def sort_rows(rows: Iterable[RowView]) -> list[RowView]:
    return sorted(rows, key=lambda view: (-view.row.rss_minus_shr_bytes, view.pod, view.row.pid))


def build_snapshot(now_ms: int, nodes: Sequence[NodeView],
                   members_by_pod: Mapping[str, Iterable[tuple[bytes, float]]],
                   skipped: int = 0, hidden: int = 0) -> Snapshot:
    rows: list[RowView] = []
    for pod, members in members_by_pod.items():
        parsed, bad = parse_rows(pod, members)
        rows += parsed
        skipped += bad
    return Snapshot(now_ms, tuple(nodes), tuple(sort_rows(rows)), skipped, hidden)


# --- text ----------------------------------------------------------------------------------

def size(value: int | None) -> str:
    if value is None:
        return "-"
    return "-" + format_bytes(-value) if value < 0 else format_bytes(value)


def duration(seconds: int) -> str:
    """12s, 3m04s, 2h05m, 3d04h."""
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86_400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86_400}d{seconds % 86_400 // 3600:02d}h"


def _columns(header: Sequence[str], rows: list[list[str]], right: set[int]) -> list[str]:
    """Aligned columns, two spaces apart; the last column is not padded."""
    widths = [max(len(r[i]) for r in rows + [list(header)]) for i in range(len(header))]
    lines = []
    for cells in [list(header)] + rows:
        out = []
        for i, (cell, width) in enumerate(zip(cells, widths)):
            if i == len(cells) - 1 and i not in right:
                out.append(cell)
            else:
                out.append(cell.rjust(width) if i in right else cell.ljust(width))
        lines.append("  ".join(out).rstrip())
    return lines


def node_lines(nodes: Sequence[NodeView]) -> list[str]:
    header = ("NODE", "ROLE", "GROUP", "LIMIT", "WORKING SET", "USED", "THRESHOLD", "HEADROOM", "ROWS", "NOTE")
    rows = []
    for view in nodes:
        node = view.node
        used = node.working_set_bytes / node.limit_bytes if node.limit_bytes else 0.0
        note = f"stale: last write {view.age_ms // 1000}s ago" if view.stale else ""
        if node.headroom_bytes < 0:
            note = ("over the threshold; " + note).rstrip("; ")
        rows.append([node.pod, node.role, node.group, size(node.limit_bytes), size(node.working_set_bytes),
                     f"{used:.0%}", f"{node.threshold:.1%}", size(node.headroom_bytes), str(node.rows), note])
    if not any(row[-1] for row in rows):  # no notes: no NOTE column
        header, rows = header[:-1], [row[:-1] for row in rows]
    return _columns(header, rows, right={3, 4, 5, 6, 7, 8})


def row_lines(rows: Sequence[RowView]) -> list[str]:
    header = ("NODE", "PID", "RSS-SHR", "QUOTA", "PEAK", "AGE", "NAME")
    cells = [[view.pod, str(view.row.pid), size(view.row.rss_minus_shr_bytes), size(view.row.quota_bytes),
              size(view.row.peak_bytes), duration(view.row.age_s), view.row.name] for view in rows]
    return _columns(header, cells, right={1, 2, 3, 4, 5})


def render_table(snapshot: Snapshot, source: str, clock_text: str, width: int | None = None,
                 height: int | None = None, rows_per_node: int | None = None) -> str:
    """The whole screen. With a terminal's `width` and `height`, lines are cut to the width
    and rows to what fits; without (not a TTY), every line is given in full."""
    shown = len(snapshot.rows)
    title = (f"rayguard top  {source}  {clock_text}  {len(snapshot.nodes)} node(s),"
             f" {shown} of {snapshot.rows_total} task/actor row(s)")
    if rows_per_node is not None:
        title += f" (at most {rows_per_node} per node)"
    lines = [title]
    notes = []
    if snapshot.hidden_nodes:
        notes.append(f"{snapshot.hidden_nodes} node(s) silent for over {HIDE_AFTER_MS // 1000}s not shown")
    if snapshot.skipped:
        notes.append(f"{snapshot.skipped} unreadable entr{'y' if snapshot.skipped == 1 else 'ies'} skipped")
    if notes:
        lines.append("; ".join(notes))
    lines.append("")
    if not snapshot.nodes:
        lines.append("no node has written to the live view in the last"
                     f" {HIDE_AFTER_MS // 1000}s (is rayguard-node running, and this its head's Redis?)")
    else:
        lines += node_lines(snapshot.nodes)
        lines.append("")
        lines += row_lines(snapshot.rows) if snapshot.rows else ["no task or actor is running"]
    if height is not None and len(lines) > height:
        cut = max(1, height - 1)
        lines = lines[:cut] + [f"... {len(lines) - cut} more line(s): make the terminal taller or use --rows"]
    if width is not None:
        lines = [line[:width].rstrip() for line in lines]
    return "\n".join(lines)


# --- JSON ----------------------------------------------------------------------------------

def snapshot_json(snapshot: Snapshot) -> dict[str, Any]:
    """Machine-readable: every node and row, with what the table derives (headroom, stale)."""
    return {
        "time_ms": snapshot.time_ms,
        "nodes": [{**view.node.to_dict(), "headroom_bytes": view.node.headroom_bytes,
                   "age_ms": view.age_ms, "stale": view.stale} for view in snapshot.nodes],
        "rows": [{"pod": view.pod, **view.row.to_dict()} for view in snapshot.rows],
        "skipped": snapshot.skipped,
        "hidden_nodes": snapshot.hidden_nodes,
    }

"""Ray's own memory-monitor kills, read from raylet.out: the `ray_monitor_kill` detector.

Ray 2.60 logs each kill decision as ONE multi-line record (captured from a real raylet in
a 2 GiB cgroup; the captures are in tests/data/raylet):

    [<time> I <pid> <tid>] (raylet) node_manager.cc:<n>: Killing 2 worker(s), kill details:
        Memory on the node (IP: <ip>, ID: <node>) was 1.12GB used / 2.00GB limit (0.558977)
    OOM kill reason: Memory usage <n>B exceeded threshold of <n>B (50.0% of <n>B limit)
    Object store memory usage: [ ... several lines ... ]
    Ray killed 2 worker(s) based on the killing policy
    Considered workers: [
    Selected to kill: (Task: job ID=.., lease ID=.., task name=burst, required resources=
        {CPU: 1}, pid=10226, actual memory used=0.20GB, worker ID=..)
    Selected to kill: (...)        one line per victim
    (Task: ...)                    considered but NOT killed: ignored
    ]
    Total non-selected idle workers: 0
    ...
    Top 10 memory users: PID<TAB>MEM(GB)<TAB>COMMAND
    10160<TAB>0.27<TAB>ray::burst  (up to 10 rows, largest first)
     suggestions: ...

(the first line is one line in the log; it is wrapped here). A victim is `(Task: ...)`,
`(Actor(<actor id>): ...)` (its task name is the creation task, e.g. `Grower.__init__`) or
`(Worker with no lease granted: pid=.., ...)` for an idle worker. Separately, every
`RAY_event_stats_print_interval_ms` (a minute by default), a record says
`N Workers (tasks / actors) killed due to memory pressure (OOM), M Workers crashed ...`
for the period just ended: a cross-check, never a report.

Units: Ray prints `GB` but computes bytes / 1024 / 1024 / 1024 with "%.2f", so a "GB" is
a GiB (a 2147483648-byte limit prints as "2.00GB"), good to about 5 MiB. Exact bytes
are used where Ray prints them: the limit and threshold from the `OOM kill reason` line
(or from the `ThresholdMemoryMonitor initialized` line at startup), and the node's usage
as fraction x limit (Ray derives the 6-digit fraction from exact bytes). The threshold is
threshold bytes / limit rounded to 6 digits: Ray keeps it as a float32, so 0.9 comes back
as 0.89999997 unrounded.

The parser is pure and incremental. A kill is emitted when its Top-10 block ends: on the
first line that is not a row, on the 10th row, on the next log record, or on `flush()`.
Victims are remembered by worker ID, so a record read twice is reported once. A line that
looks like one of these but does not parse is counted in `unparsed_lines` and skipped;
a kill whose victim line did not parse is still reported, with `pid=None`.
"""

from __future__ import annotations

import re
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from rayguard_node.guard.log_follower import RayletLogFollower

GIB = 1024**3
TOP_MAX_ENTRIES = 10
# Half of Ray's printing resolution (0.01 GiB): the most a printed GB value can be off.
GB_ROUNDING_BYTES = int(0.0051 * GIB)

TASK, ACTOR, IDLE_WORKER, UNKNOWN = "task", "actor", "idle_worker", "unknown"


@dataclass(frozen=True)
class RayMonitorKill:
    """One worker killed by Ray's memory monitor. `top` is (pid, bytes, command), largest
    first, at most 10, shared by the victims of one kill decision."""

    pid: int | None
    task_name: str
    memory_used_bytes: int
    node_used_bytes: int
    node_limit_bytes: int
    fraction: float
    top: tuple[tuple[int, int, str], ...] = ()
    threshold: float | None = None
    worker_kind: str = TASK
    actor_id: str = ""
    worker_id: str = ""
    job_id: str = ""
    node_ip: str = ""
    node_id: str = ""
    workers_killed: int = 1
    log_time: str = ""

    @property
    def process_name(self) -> str:
        """The victim's command from the Top-10 block (`ray::Grower.grow`, `ray::IDLE`),
        else `ray::<task name>`, else empty."""
        for pid, _bytes, command in self.top:
            if pid == self.pid and command:
                return command
        return f"ray::{self.task_name}" if self.task_name else ""


@dataclass(frozen=True)
class RayOomSummary:
    """Ray's periodic count of workers it killed for memory (and of other crashes)."""

    oom_killed: int
    crashed: int
    node_id: str
    node_ip: str
    log_time: str = ""


_NUM = r"(\d+(?:\.\d+)?)"
RECORD_START = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d[,.]\d+) [A-Z] \d+ \d+\]")
HEADER_MARK = "worker(s), kill details:"
HEADER = re.compile(
    r"Killing (\d+) worker\(s\), kill details: Memory on the node \(IP:\s*([^,]*), ID:\s*([0-9a-fA-F]*)\)"
    rf" was {_NUM}GB(?: used)? / {_NUM}GB(?: limit)? \((\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)\)")
REASON_MARK = "OOM kill reason:"
REASON = re.compile(r"^OOM kill reason: Memory usage (\d+)B exceeded threshold of (\d+)B"
                    rf" \({_NUM}% of (\d+)B limit\)")
SELECTED_MARK = "Selected to kill: "
SELECTED = re.compile(r"^\((Task|Actor\(([0-9a-fA-F]*)\)|Worker with no lease granted): (.*)\)\s*$")
SELECTED_TAIL = re.compile(rf"(?:^|, )pid=(\d+), actual memory used={_NUM}GB, worker ID=([0-9a-fA-F]+)$")
TASK_NAME = re.compile(r"(?:^|, )task name=(.*?), (?:required resources=|pid=\d)")
JOB_ID = re.compile(r"(?:^|, )job ID=([0-9a-fA-F]+)")
TOP_HEADER = re.compile(r"^Top \d+ memory users:\s*(.*)$")
TOP_COLUMNS = re.compile(r"^\s*PID\s+MEM\(GB\)\s+COMMAND\s*$")
TOP_ROW = re.compile(rf"^\s*(\d+)[ \t]+{_NUM}(?:[ \t](.*))?$")
TOP_ROW_LIKE = re.compile(r"^\s*\d+[ \t]")
SUMMARY_MARK = "killed due to memory pressure (OOM)"
SUMMARY = re.compile(r"(\d+) Workers \(tasks / actors\) killed due to memory pressure \(OOM\), (\d+) Workers"
                     r" crashed due to other reasons at node \(ID:\s*([0-9a-fA-F]*), IP:\s*([^)]*)\)")
MONITOR_INIT = re.compile(r"ThresholdMemoryMonitor initialized with usage threshold at (\d+) bytes"
                          r" .*total system memory bytes: (\d+)")


def gb_to_bytes(text: str) -> int:
    """Ray's "GB" (GiB, 2 decimals) as bytes."""
    return round(float(text) * GIB)


def _is_record_start(line: str) -> bool:
    return line.startswith("[state-dump]") or RECORD_START.match(line) is not None


@dataclass
class _Victim:
    pid: int | None
    task_name: str = ""
    memory_used_bytes: int = 0
    kind: str = UNKNOWN
    actor_id: str = ""
    worker_id: str = ""
    job_id: str = ""


class _Block:
    """The kill record being read."""

    def __init__(self, header: re.Match[str] | None, log_time: str) -> None:
        self.header = header
        self.log_time = log_time
        self.reason: re.Match[str] | None = None
        self.victims: list[_Victim] = []
        self.unparsed_victims = 0
        self.top: list[tuple[int, int, str]] = []
        self.in_top = False
        self.expect_columns = False


class RayletLogParser:
    """Feed raylet.out lines in order; get each Ray memory-monitor kill exactly once."""

    def __init__(self, remember_workers: int = 4096) -> None:
        self.unparsed_lines = 0
        self.kills_emitted = 0
        self.summary_oom_killed = 0  # sum over Ray's periodic summaries: a cross-check
        self.summaries: deque[RayOomSummary] = deque(maxlen=64)
        self.monitor_threshold_bytes: int | None = None
        self.monitor_total_bytes: int | None = None
        self._block: _Block | None = None
        self._seen: set[str] = set()
        self._seen_order: deque[str] = deque()
        self._remember = remember_workers

    @property
    def pending(self) -> bool:
        """A kill record has started and is not emitted yet."""
        return self._block is not None

    def feed_lines(self, lines: Iterable[str]) -> list[RayMonitorKill]:
        kills: list[RayMonitorKill] = []
        for line in lines:
            kills.extend(self.feed(line))
        return kills

    def flush(self) -> list[RayMonitorKill]:
        """Emit the record being read (at EOF, or after a quiet period)."""
        return self._finish() if self._block is not None else []

    def feed(self, line: str) -> list[RayMonitorKill]:
        line = line.rstrip("\r\n")
        block = self._block
        if block is None:
            return self._idle(line)
        if block.in_top:
            row = TOP_ROW.match(line)
            if row:
                command = (row.group(3) or "").strip()
                block.top.append((int(row.group(1)), gb_to_bytes(row.group(2)), command))
                block.expect_columns = False
                return self._finish() if len(block.top) >= TOP_MAX_ENTRIES else []
            if block.expect_columns and TOP_COLUMNS.match(line):
                block.expect_columns = False
                return []
            if TOP_ROW_LIKE.match(line) and not _is_record_start(line):
                self.unparsed_lines += 1
                return []
            return self._finish() + self._idle(line)
        if _is_record_start(line):
            return self._finish() + self._idle(line)
        self._continuation(block, line)
        return []

    # -- states ---------------------------------------------------------------------

    def _idle(self, line: str) -> list[RayMonitorKill]:
        start = RECORD_START.match(line)
        log_time = start.group(1) if start else ""
        if HEADER_MARK in line:
            header = HEADER.search(line)
            if header is None:
                self.unparsed_lines += 1  # still collect its victims, without node numbers
            self._block = _Block(header, log_time)
        elif SELECTED_MARK in line:
            # A victim with no header (we attached mid-record): report it, node unknown.
            self._block = _Block(None, log_time)
            self._continuation(self._block, line)
        elif SUMMARY_MARK in line:
            summary = SUMMARY.search(line)
            if summary is None:
                self.unparsed_lines += 1
            else:
                self.summary_oom_killed += int(summary.group(1))
                self.summaries.append(RayOomSummary(
                    int(summary.group(1)), int(summary.group(2)), summary.group(3),
                    summary.group(4).strip(), log_time))
        elif "ThresholdMemoryMonitor initialized" in line:
            init = MONITOR_INIT.search(line)
            if init is None:
                self.unparsed_lines += 1
            else:
                self.monitor_threshold_bytes = int(init.group(1))
                self.monitor_total_bytes = int(init.group(2))
        return []

    def _continuation(self, block: _Block, line: str) -> None:
        if line.startswith(REASON_MARK):
            block.reason = REASON.match(line)
            if block.reason is None:
                self.unparsed_lines += 1
            return
        at = line.find(SELECTED_MARK)
        if at >= 0:
            victim = _parse_victim(line[at + len(SELECTED_MARK):])
            if victim is None:
                self.unparsed_lines += 1
                block.unparsed_victims += 1
            else:
                block.victims.append(victim)
            return
        top = TOP_HEADER.match(line)
        if top:
            block.in_top = True
            block.expect_columns = not top.group(1).strip()

    def _finish(self) -> list[RayMonitorKill]:
        block, self._block = self._block, None
        assert block is not None
        header = block.header
        limit, used, fraction, threshold = self._node_numbers(block)
        victims = list(block.victims)
        announced = int(header.group(1)) if header else 0
        # A victim line that did not parse is still a kill: trust the header's count.
        missing = max(announced - len(victims), 0) if header else block.unparsed_victims
        victims.extend(_Victim(pid=None) for _ in range(missing))
        top = tuple(sorted(block.top, key=lambda entry: -entry[1])[:TOP_MAX_ENTRIES])
        kills: list[RayMonitorKill] = []
        for victim in victims:
            if victim.worker_id:
                if victim.worker_id in self._seen:
                    continue
                self._remember_worker(victim.worker_id)
            kills.append(RayMonitorKill(
                pid=victim.pid, task_name=victim.task_name,
                memory_used_bytes=victim.memory_used_bytes, node_used_bytes=used,
                node_limit_bytes=limit, fraction=fraction, top=top, threshold=threshold,
                worker_kind=victim.kind, actor_id=victim.actor_id, worker_id=victim.worker_id,
                job_id=victim.job_id, node_ip=header.group(2).strip() if header else "",
                node_id=header.group(3) if header else "",
                workers_killed=announced or len(victims), log_time=block.log_time))
        self.kills_emitted += len(kills)
        return kills

    def _node_numbers(self, block: _Block) -> tuple[int, int, float, float | None]:
        header, reason = block.header, block.reason
        threshold: float | None = None
        if reason is not None and int(reason.group(4)) > 0:
            threshold = round(int(reason.group(2)) / int(reason.group(4)), 6)
        elif self.monitor_total_bytes and self.monitor_threshold_bytes is not None:
            threshold = round(self.monitor_threshold_bytes / self.monitor_total_bytes, 6)
        if header is None:
            return 0, 0, 0.0, threshold
        printed_used, printed_limit = gb_to_bytes(header.group(4)), gb_to_bytes(header.group(5))
        fraction = float(header.group(6))
        limit = printed_limit
        for exact in (int(reason.group(4)) if reason else None, self.monitor_total_bytes):
            if exact and abs(exact - printed_limit) <= GB_ROUNDING_BYTES:
                limit = exact
                break
        used = round(fraction * limit)
        if abs(used - printed_used) > GB_ROUNDING_BYTES:
            used = printed_used
        return limit, used, fraction, threshold

    def _remember_worker(self, worker_id: str) -> None:
        self._seen.add(worker_id)
        self._seen_order.append(worker_id)
        while len(self._seen_order) > self._remember:
            self._seen.discard(self._seen_order.popleft())


def _parse_victim(text: str) -> _Victim | None:
    match = SELECTED.match(text)
    if match is None:
        return None
    what, actor_id, body = match.group(1), match.group(2) or "", match.group(3)
    tail = SELECTED_TAIL.search(body)
    if tail is None:
        return None
    if what == "Task":
        kind = TASK
    elif what.startswith("Actor"):
        kind = ACTOR
    else:
        kind = IDLE_WORKER
    name = TASK_NAME.search(body)
    job = JOB_ID.search(body)
    if kind != IDLE_WORKER and name is None:
        return None
    return _Victim(pid=int(tail.group(1)), task_name=name.group(1) if name else "",
                   memory_used_bytes=gb_to_bytes(tail.group(2)), kind=kind, actor_id=actor_id,
                   worker_id=tail.group(3), job_id=job.group(1) if job else "")


def parse(lines: Iterable[str]) -> list[RayMonitorKill]:
    """All kills in a complete log (the last record is flushed at the end)."""
    parser = RayletLogParser()
    return parser.feed_lines(lines) + parser.flush()


class RayMonitorKillDetector:
    """raylet.out of `<temp_dir>/session_latest` in, Ray's memory-monitor kills out.

    No threads: call `poll()` every few hundred milliseconds. A record left open with no
    new line for `flush_after_s` (Ray died mid-record) is emitted then."""

    def __init__(self, temp_dir: Path | str, *, start_at_end: bool = False,
                 flush_after_s: float = 2.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.follower = RayletLogFollower(temp_dir, start_at_end=start_at_end)
        self.parser = RayletLogParser()
        self.flush_after_s = flush_after_s
        self._clock = clock
        self._last_line_at = clock()

    def poll(self) -> list[RayMonitorKill]:
        lines = self.follower.poll()
        now = self._clock()
        kills = self.parser.feed_lines(lines)
        if lines:
            self._last_line_at = now
        elif self.parser.pending and now - self._last_line_at >= self.flush_after_s:
            kills += self.parser.flush()
        return kills

    def close(self) -> None:
        self.follower.close()

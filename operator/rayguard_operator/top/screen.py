"""`rayguard top`, the terminal: a full screen refreshed every interval, or plain lines.

- stdout a TTY: the alternate screen, cleared and redrawn each refresh, cut to the terminal's
  size; the screen is restored on exit (Ctrl-C exits with status 0).
- not a TTY: each refresh is printed in full, as plain lines, a blank line between refreshes.
- `--json`: one JSON object per refresh, one line each (`view.snapshot_json`).
- `--once`: one table (or one JSON object), no escape codes, and exit.

A Redis failure after the first refresh is shown (on stderr with `--json`) and retried at the
next refresh: a head that restarts does not end the view. The first refresh's failure is the
caller's to report.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from typing import Callable, TextIO

from rayguard_operator.top.view import Snapshot, render_table, snapshot_json

ENTER_FULL_SCREEN = "\x1b[?1049h\x1b[?25l"  # alternate screen, cursor hidden
LEAVE_FULL_SCREEN = "\x1b[?25h\x1b[?1049l"
HOME_AND_CLEAR = "\x1b[H\x1b[2J"


@dataclass(frozen=True)
class ScreenOptions:
    source: str  # where the data comes from, for the title line
    interval_s: float = 1.0
    once: bool = False
    as_json: bool = False
    tty: bool = False
    rows_per_node: int | None = None

    @property
    def full_screen(self) -> bool:
        return self.tty and not self.once and not self.as_json


def clock_text(time_ms: int) -> str:
    return time.strftime("%H:%M:%S", time.localtime(time_ms / 1000))


def frame(snapshot: Snapshot, options: ScreenOptions, size: os.terminal_size | None = None,
          error: str | None = None) -> str:
    """One refresh's output, without escape codes (pure but for the local time zone)."""
    if options.as_json:
        return json.dumps(snapshot_json(snapshot), separators=(",", ":"))
    width = height = None
    if options.full_screen and size is not None:
        width, height = size.columns, size.lines - (2 if error else 0)
    text = render_table(snapshot, options.source, clock_text(snapshot.time_ms), width, height,
                        options.rows_per_node)
    if error:
        text = f"{error}; retrying (the view below is from {clock_text(snapshot.time_ms)})\n\n{text}"
    return text


def run_screen(read: Callable[[], Snapshot], first: Snapshot, options: ScreenOptions,
               describe: Callable[[BaseException], str], retry_on: tuple[type[BaseException], ...],
               out: TextIO = sys.stdout, err: TextIO = sys.stderr,
               terminal_size: Callable[[], os.terminal_size] = shutil.get_terminal_size,
               sleep: Callable[[float], None] = time.sleep,
               clock: Callable[[], float] = time.monotonic) -> int:
    """Show `first`, then (unless `once`) refresh until interrupted. Returns the exit status."""
    try:
        if options.once:
            out.write(frame(first, options) + "\n")
            out.flush()
            return 0
        return _loop(read, first, options, describe, retry_on, out, err, terminal_size, sleep, clock)
    except BrokenPipeError:  # `rayguard top | head`: the reader left
        if out is sys.stdout:  # no second error when Python flushes stdout at exit
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (open until the process ends)
        return 0


def _loop(read: Callable[[], Snapshot], snapshot: Snapshot, options: ScreenOptions,
          describe: Callable[[BaseException], str], retry_on: tuple[type[BaseException], ...],
          out: TextIO, err: TextIO, terminal_size: Callable[[], os.terminal_size],
          sleep: Callable[[float], None], clock: Callable[[], float]) -> int:
    error: str | None = None
    shown = 0
    started = clock()  # of the read shown next: one refresh per interval, reads included
    if options.full_screen:
        out.write(ENTER_FULL_SCREEN)
    try:
        while True:
            if options.as_json and error:
                err.write(error + "; retrying\n")
                err.flush()
            else:
                text = frame(snapshot, options, terminal_size() if options.full_screen else None, error)
                if options.full_screen:
                    out.write(HOME_AND_CLEAR + text)
                else:
                    out.write(("\n" if shown and not options.as_json else "") + text + "\n")
                out.flush()
                shown += 1
            sleep(max(0.0, options.interval_s - (clock() - started)))
            started = clock()
            try:
                snapshot, error = read(), None
            except retry_on as failure:
                error = describe(failure)
    except KeyboardInterrupt:
        return 0
    finally:
        if options.full_screen:
            out.write(LEAVE_FULL_SCREEN)
            out.flush()

"""The OOM race, side by side in one run: who stops tasks that outgrow their cgroup, how fast,
and what the driver is told.

Setup: one memory cgroup (3 GiB by default), v1 or v2, whichever this host can write. A Ray
head runs inside it with N CPUs. A driver, outside the cgroup, first starts N workers, then
submits N tasks at once (`max_retries=0`), each committing memory in chunks at a set pace, up
to 6 GiB each: about 256 MiB/s, about 1 GiB/s, or as fast as it can ("max"). N is 1, the
machine's CPUs and twice that by default (`--tasks 1,cpus,2cpus`).

Rows:
  ray-nested             Ray alone, in a nested cgroup: Ray is blind to the limit.
  ray-pod                Ray alone, with the pod view (v1: the cgroup bind-mounted at the root
                         path in a private mount namespace; v2: a new cgroup namespace with a
                         fresh cgroup2 mount), so Ray sees the limit.
  rayguard-nested-fixed  `rayguard-node run` in the nested cgroup (the guard is primary), with
                         the fixed 50 ms poll rayguard had before the adaptive guard.
  rayguard-nested        the same with defaults: the adaptive guard (2 to 50 ms).
  rayguard-pod-fixed     `rayguard-node run` with the pod view (the guard is a backstop behind
                         Ray's own monitor), fixed 50 ms poll.
  rayguard-pod           the same with defaults: the adaptive guard.
  rayguard-container     `rayguard-node run` as `rayguard local up --runtime podman` runs a head
                         pod: a podman container from rayguard/node:0.1.0 whose own memory
                         cgroup holds the limit (uid 1000, no capabilities, /dev/shm from the
                         plan), the driver in a container beside it; adaptive guard. Needs
                         podman as root and the image (`make images`); left out, with the
                         reason, where they are missing (bench/harness/oom_race_container.py).

Columns: the rate the whole cgroup really reached (working set from 50% to 85% of the limit),
what the driver saw (the exception types, one per task that failed), the kills each killer
made (rayguard/Ray/kernel), the kernel's oom_kill count, the peak working set as a fraction
of the limit, the threshold the latency is measured from, the latency from crossing it to the
kill of the first task ("kill ms") and to the memory being back ("freed ms"), and who killed
first.

The bench samples the cgroup from its own thread every ~2 ms (usage minus total_inactive_file,
as the kubelet and the guard compute it) and watches the task's process (`ray::hog`, found by
its cmdline). "Killed" is the first sample where one of them has started to exit (PF_EXITING in
/proc/PID/stat, or a zombie, or gone), whoever sent the signal; "freed" is the first sample
after that with the working set under half the limit (a worker's leader thread can be a zombie
while another thread is still freeing its pages, so the pid is not a good signal for that).
The threshold is the killer's: Ray's 0.95 for Ray's monitor, the plan's guard threshold for
rayguard (0.95 as primary when Ray is blind, 0.975 as backstop in the pod view). For a kernel
kill it is the threshold the row was meant to be protected by (none for Ray alone, blind).
Who killed: "rayguard" (a monitor_kill report names the task's pid), "ray" (raylet.out's
"Selected to kill" or a ray_monitor_kill report names it), "kernel" (the cgroup's oom_kill
count rose); others that also fired are added in parentheses.

Then the monitor's overhead: `rayguard-node run` idle in the nested cgroup, CPU time of the
rayguard-node process itself (not Ray's processes) over a window, as % of one core, at the
default guard refresh (50 ms) and at 250 ms.

Targets for the rayguard rows: no kernel OOM kill at 256 MiB/s and 1 GiB/s with defaults;
kill latency <= guard refresh + 20 ms; monitor overhead <= 1% of one core at the default refresh.

Needs root and a writable memory cgroup (v1, or v2 where this process's cgroup can delegate:
its processes move to a leaf for the run and back at the end). Every cgroup and temp dir it
makes is removed at the end, whatever happens.

Run, from the repository root:
  .venv/bin/python -m bench.oom_race [--rates max] [--tasks 1,cpus,2cpus] [--rows ray-pod,...]
                                     [--limit-gib 3] [--repeat N] [--json out.json]
                                     [--keep-logs DIR] [--overhead-seconds 20]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import signal
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.harness.oom_race_cell import GiB, RATES, ROWS, TOTAL_BYTES, Cell, run_cell
from bench.harness.oom_race_container import container_problem
from bench.harness.output import column_table, load_line
from bench.harness.ray_nodes import measure_overhead
from rayguard_node.cgroup.scratch import open_scratch_parent, why_not_writable

SLOW_RATE = 0.6  # a measured rate under this share of the target is flagged in the table


def rate_label(rate: str) -> str:
    return {"256": "256 MiB/s", "1024": "1 GiB/s", "max": "max"}.get(rate, rate)


def measured_label(cell: Cell) -> str:
    if cell.measured_rate_mib_s is None:
        return "-"
    target = RATES[cell.rate][1]
    slow = target is not None and cell.measured_rate_mib_s < SLOW_RATE * target * cell.tasks
    return f"{cell.measured_rate_mib_s:.0f} MiB/s" + (" !" if slow else "")


def driver_saw(cell: Cell) -> str:
    if cell.error:
        return "ERROR: " + cell.error[:40]
    if not cell.driver_errors:
        return cell.driver_error or "(survived)"
    counts: dict[str, int] = {}
    for error in cell.driver_errors:
        counts[error] = counts.get(error, 0) + 1
    survived = cell.tasks - len(cell.driver_errors)
    return ", ".join(f"{name}×{n}" if n > 1 else name for name, n in counts.items()) + (
        f", {survived} survived" if survived > 0 else "")


def kills_label(cell: Cell) -> str:
    return "/".join(str(cell.kills.get(k, 0)) for k in ("rayguard", "ray", "kernel"))


def parse_tasks(text: str, cpus: int) -> list[int]:
    """`1,cpus,2cpus` -> [1, 16, 32] on a 16-CPU machine."""
    counts = []
    for word in (w.strip() for w in text.split(",") if w.strip()):
        if word.endswith("cpus"):
            factor = word[: -len("cpus")] or "1"
            if not factor.isdigit():
                raise ValueError(word)
            counts.append(int(factor) * cpus)
        elif word.isdigit() and int(word) > 0:
            counts.append(int(word))
        else:
            raise ValueError(word)
    return list(dict.fromkeys(counts))


def table(cells: list[Cell]) -> str:
    header = ["setup", "tasks", "rate", "measured", "driver saw", "kills rg/ray/kernel",
              "peak ws", "threshold", "kill ms", "freed ms", "who killed"]
    rows = []
    repeated = any(cell.run > 1 for cell in cells)
    for cell in cells:
        latency = "-" if cell.latency_ms is None else f"{cell.latency_ms:.0f}"
        resolution = cell.latency_resolution_ms
        if cell.latency_ms is not None and resolution is not None and resolution > 10:
            latency += f" (±{resolution:.0f})"
        rows.append([
            ROWS[cell.row].label + (f" #{cell.run}" if repeated else ""), str(cell.tasks),
            rate_label(cell.rate), measured_label(cell), driver_saw(cell), kills_label(cell),
            f"{cell.peak_ws_fraction:.3f}",
            "-" if cell.latency_threshold is None else f"{cell.latency_threshold:g}",
            latency, "-" if cell.released_ms is None else f"{cell.released_ms:.0f}", cell.who_killed,
        ])
    return column_table(header, rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", default="max", help="comma-separated: 256,1024,max")
    parser.add_argument("--tasks", default="1,cpus,2cpus",
                        help="tasks allocating at once, comma-separated: a number, cpus or 2cpus")
    parser.add_argument("--rows", default=",".join(ROWS), help="comma-separated: " + ",".join(ROWS))
    parser.add_argument("--limit-gib", type=float, default=3.0)
    parser.add_argument("--repeat", type=int, default=1, help="runs of each cell (noisy machines)")
    parser.add_argument("--overhead-seconds", type=float, default=20.0,
                        help="idle window for the overhead measurement (0 skips it)")
    parser.add_argument("--overhead-refresh-ms", default="50,250",
                        help="guard refreshes to measure the overhead at")
    parser.add_argument("--json", type=Path, help="write the results as JSON here")
    parser.add_argument("--keep-logs", type=Path,
                        help="copy each cell's Ray and rayguard logs and working-set series here")
    args = parser.parse_args(argv)

    rates = [r.strip() for r in args.rates.split(",") if r.strip()]
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    for rate in rates:
        if rate not in RATES:
            parser.error(f"unknown rate {rate!r}; choose from {', '.join(RATES)}")
    for row in rows:
        if row not in ROWS:
            parser.error(f"unknown row {row!r}; choose from {', '.join(ROWS)}")
    cpus = os.cpu_count() or 1
    try:
        task_counts = parse_tasks(args.tasks, cpus)
    except ValueError as error:
        parser.error(f"bad --tasks entry {error}; use numbers, cpus or 2cpus")
    if "rayguard-container" in rows:
        problem = container_problem()
        if problem is not None:
            print(f"leaving out the rayguard-container row: {problem}", file=sys.stderr)
            rows.remove("rayguard-container")
    reason = why_not_writable()
    parent = open_scratch_parent() if reason is None else None
    if parent is None:
        print(f"oom_race needs a writable memory cgroup: {reason}", file=sys.stderr)
        return 2
    limit_bytes = int(args.limit_gib * GiB)

    # SIGTERM (or a timeout) must still run the finally blocks that remove cgroups.
    def interrupted(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    started = time.monotonic()
    load_before = os.getloadavg()
    cells: list[Cell] = []
    overhead: list[dict[str, Any]] = []
    interrupted_run = False
    try:
        for tasks, row_key, rate, run in itertools.product(task_counts, rows, rates,
                                                           range(1, args.repeat + 1)):
            t0 = time.monotonic()
            keep = None if args.keep_logs is None else args.keep_logs / f"run{run}-n{tasks}"
            cell = run_cell(parent, ROWS[row_key], rate, limit_bytes, keep, tasks)
            cell.run = run
            cells.append(cell)
            print(f"[{time.monotonic() - started:6.0f}s] {row_key:<21} n={tasks:<3} {rate:>4} #{run}: "
                  f"{driver_saw(cell)}, kills={kills_label(cell)}, oom_kill={cell.oom_kills},"
                  f" peak={cell.peak_ws_fraction:.3f}, kill={cell.latency_ms} ms,"
                  f" freed={cell.released_ms} ms, killed by {cell.who_killed}, load {cell.load1}"
                  f" ({time.monotonic() - t0:.0f}s)"
                  + (f"\n    error: {cell.error}" if cell.error else ""), flush=True)
        if args.overhead_seconds > 0:
            for refresh in [int(r) for r in args.overhead_refresh_ms.split(",") if r.strip()]:
                result = measure_overhead(parent, limit_bytes, refresh, args.overhead_seconds)
                overhead.append(result)
                print(f"[{time.monotonic() - started:6.0f}s] overhead at {refresh} ms: "
                      f"{result['rayguard_pct_of_core']:.2f}% of one core", flush=True)
    except KeyboardInterrupt:
        interrupted_run = True
        print("interrupted: printing what was measured", file=sys.stderr)
    finally:
        parent.close()
    load_after = os.getloadavg()

    print()
    per_task = max(TOTAL_BYTES, 2 * limit_bytes)
    print(f"OOM race: {args.limit_gib:g} GiB cgroup v{parent.version}, {cpus} CPUs, N tasks each"
          f" allocating up to {per_task / GiB:g} GiB; working set = usage - inactive file")
    print(table(cells))
    if any(measured_label(c).endswith("!") for c in cells):
        print(f"! measured rate (working set from 50% to 85% of the limit) under {SLOW_RATE:.0%} of"
              " the target: the task could not commit memory that fast here at that moment")
    for result in overhead:
        print(f"monitor overhead (rayguard-node idle, guard refresh {result['guard_refresh_ms']} ms):"
              f" {result['rayguard_pct_of_core']:.2f}% of one core over {result['window_s']:.0f} s"
              f" (Ray's own processes: {result['ray_processes_pct_of_core']:.1f}%)")
    print(f"{load_line(load_before, load_after)}; total {time.monotonic() - started:.0f} s")
    if args.json is not None:
        args.json.write_text(json.dumps({
            "limit_bytes": limit_bytes, "total_bytes": TOTAL_BYTES, "rates": rates,
            "tasks": task_counts, "cgroup_version": parent.version,
            "cells": [asdict(c) for c in cells], "overhead": overhead,
            "cpus": os.cpu_count(), "loadavg_before": load_before, "loadavg_after": load_after,
            "seconds": round(time.monotonic() - started, 1)}, indent=2))
    if interrupted_run:
        return 130
    return 1 if any(c.error for c in cells) else 0


if __name__ == "__main__":
    sys.exit(main())

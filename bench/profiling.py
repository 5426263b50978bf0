"""What memray profiling (spec.memory.profiling) costs a Ray task, side by side in one run.

One local Ray node (`--num-cpus=1`, no dashboard) per setup, with the environment
`rayguard-node run` gives `ray start` (`rayguard_node.profiling.hook.environment`):

- off: no hook (what a group that does not profile gets);
- on, no match: the hook, with globs the task does not match: the worker only reads its own
  title every 20 ms and records nothing;
- on, recording: the hook, with `*`: the worker records under a memray Tracker from its task's
  first 20 ms on.

Each workload runs `--repeat` times in a fresh worker (`max_calls=1`): the wall time of the work
inside the task, the task as the driver sees it (the worker's start included), the worker's peak
RSS (VmHWM at the end of the task) and the size of its memray file. Workloads:

- alloc: Python objects over pymalloc's 512-byte limit (bytes, lists of 2,000), made, sorted
  and dropped in a loop: one malloc and free each, the case memray's hooks cost the most;
- cpu: pure-Python arithmetic and small objects (pymalloc's, which memray does not record);
- big: 64 MiB buffers, touched and hashed (few, large allocations).

Run, from the repository root:
  .venv/bin/python -m bench.profiling [--repeat 5] [--workloads alloc,cpu,big]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.harness.output import column_table, load_line
from rayguard_node.contract.profiles import profile_dir
from rayguard_node.profiling.hook import environment
from rayguard_node.sizing.quantity import format_bytes

SETUPS = (("off", None), ("on, no match", ("nothing*",)), ("on, recording", ("*",)))
WORKLOADS = ("alloc", "cpu", "big")
FILE_CAP = 1 << 30


def work(kind: str) -> dict[str, float]:
    """Runs inside the task: the workload, timed, and the worker's peak RSS."""
    import time as clock

    started = clock.perf_counter()
    if kind == "alloc":
        for round_ in range(1000):
            batch = [bytes(600 + (i * 7919 + round_) % 1400) for i in range(2000)]
            batch.sort(key=len)
            rows = [list(range(130)) for _ in range(400)]  # lists of > 512 bytes
            del batch, rows
    elif kind == "cpu":
        total = 0
        for i in range(12_000_000):
            total += (i * i) % 7
        words = {str(i): i for i in range(800_000)}
        sorted(words, key=words.get)
    else:
        import hashlib

        for i in range(12):
            buffer = bytearray(64 << 20)  # touched, hashed, dropped
            buffer[::4096] = bytes([i % 256]) * len(buffer[::4096])
            hashlib.sha256(buffer).hexdigest()
    elapsed = clock.perf_counter() - started
    with open("/proc/self/status") as status:
        hwm = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:"))
    return {"work_s": elapsed, "peak_rss": hwm, "pid": os.getpid()}


def run_setup(match: tuple[str, ...] | None, workloads: list[str], repeat: int) -> dict[str, list[dict[str, Any]]]:
    import ray

    temp = Path(tempfile.mkdtemp(prefix="rg-bench-", dir="/tmp"))
    saved = dict(os.environ)
    if match is not None:  # the raylet, and so its workers, inherit this process's environment
        os.environ.update(environment(temp, match, FILE_CAP, os.environ))
    results: dict[str, list[dict[str, Any]]] = {w: [] for w in workloads}
    try:
        ray.init(num_cpus=1, include_dashboard=False, logging_level="ERROR", log_to_driver=False,
                 _temp_dir=str(temp))
        task = ray.remote(max_calls=1, max_retries=0)(work)
        ray.get(task.remote("cpu"))  # warm: the first worker of a node starts slower
        for kind in workloads:
            for _ in range(repeat):
                submitted = time.perf_counter()
                result = ray.get(task.remote(kind))
                result["task_s"] = time.perf_counter() - submitted
                time.sleep(0.3)  # the worker exits (max_calls=1) and its file is complete
                files = list(Path(os.path.realpath(profile_dir(temp))).glob(f"{result['pid']}-*.bin"))
                result["file"] = sum(f.stat().st_size for f in files)
                results[kind].append(result)
    finally:
        ray.shutdown()
        os.environ.clear()
        os.environ.update(saved)
        shutil.rmtree(temp, ignore_errors=True)
    return results


def median(rows: list[dict[str, Any]], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5, help="tasks per workload and setup (medians shown)")
    parser.add_argument("--workloads", default=",".join(WORKLOADS), help="comma-separated: alloc, cpu, big")
    args = parser.parse_args()
    workloads = [w for w in args.workloads.split(",") if w]
    if not set(workloads) <= set(WORKLOADS):
        parser.error(f"workloads are {', '.join(WORKLOADS)}")
    before = os.getloadavg()
    measured = {name: run_setup(match, workloads, args.repeat) for name, match in SETUPS}
    after = os.getloadavg()
    header = ["workload", "setup", "work s", "vs off", "task s (worker start incl.)", "peak RSS", "memray file"]
    rows = []
    for kind in workloads:
        base = median(measured["off"][kind], "work_s")
        for name, _match in SETUPS:
            runs = measured[name][kind]
            work_s = median(runs, "work_s")
            rows.append([kind, name, f"{work_s:.2f}", f"{(work_s / base - 1) * 100:+.0f}%",
                         f"{median(runs, 'task_s'):.2f}", format_bytes(int(median(runs, "peak_rss"))),
                         format_bytes(int(median(runs, "file"))) if name != "off" else "-"])
    print(f"memray profiling of Ray workers: medians of {args.repeat} tasks, each in a fresh worker (1 CPU)")
    print(column_table(header, rows))
    print(load_line(before, after))
    return 0


if __name__ == "__main__":
    sys.exit(main())

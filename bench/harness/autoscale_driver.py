"""The Ray driver of `bench.autoscale`, run as its own process against a local cluster:
`python -m bench.harness.autoscale_driver latency|packing OUT.jsonl [options]`.

It writes one JSON object a line to OUT.jsonl. Times are `time.monotonic()` seconds, the
machine's CLOCK_MONOTONIC, the same clock in every process here (the bench's own, the pods'
tasks'), so they compare with the bench's event times directly.

- `latency`: R times, on a cluster with no workers: after a pause (R of them spread evenly
  over 0 to `--jitter-s`, shuffled, so the demand meets the autoscaler's loop at different
  points of its interval: the node leaves Ray just after an update), submit
  one 1-CPU task, see a worker node alive in Ray with its CPUs, get the task's start and end,
  then see that node leave Ray.
- `packing`: N tasks at once, each `memory=X` (and 1 CPU, `max_retries=0`: each runs once, so a
  kill counts once), each growing its own process to X in all and holding it; then how each
  ended, on which node, and every worker node Ray had, with its `memory` resource.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from typing import Any, TextIO

import ray

POLL_S = 0.2
CHUNK_BYTES = 16 << 20


def worker_nodes() -> dict[str, dict[str, Any]]:
    """Alive Ray nodes with CPUs (the head has none), by node id."""
    return {n["NodeID"]: n for n in ray.nodes() if n["Alive"] and n["Resources"].get("CPU", 0) > 0}


def emit(out: TextIO, **fields: Any) -> None:
    out.write(json.dumps(fields) + "\n")
    out.flush()


def wait_for(predicate: Any, timeout_s: float) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(POLL_S)
    return None


@ray.remote(num_cpus=1, max_retries=0)
def sleeper(seconds: float) -> dict[str, Any]:
    start = time.monotonic()
    time.sleep(seconds)
    return {"start": start, "end": time.monotonic(), "ip": ray.util.get_node_ip_address()}


def run_latency(out: TextIO, reps: int, task_s: float, jitter_s: float, timeout_s: float) -> None:
    # Spread evenly over the interval, in a seeded shuffled order: the same pauses each run.
    pauses = [jitter_s * (k + 0.5) / reps for k in range(reps)]
    random.Random(reps).shuffle(pauses)
    for rep in range(reps):
        if wait_for(lambda: not worker_nodes() or None, timeout_s) is None:
            emit(out, kind="error", rep=rep, error=f"workers still up after {timeout_s:.0f}s")
            return
        pause = pauses[rep]
        time.sleep(pause)
        submit = time.monotonic()
        ref = sleeper.remote(task_s)
        alive = wait_for(lambda: worker_nodes() or None, timeout_s)
        if alive is None:
            emit(out, kind="error", rep=rep, error=f"no worker alive {timeout_s:.0f}s after the demand")
            return
        seen_alive = time.monotonic()
        node_id, node = next(iter(alive.items()))
        result = ray.get(ref, timeout=timeout_s)
        gone = wait_for(lambda: node_id not in worker_nodes() or None, timeout_s)
        emit(out, kind="latency", rep=rep, pause_s=pause, submit=submit, alive=seen_alive, task_start=result["start"],
             task_end=result["end"], gone=time.monotonic() if gone else None, node_ip=node["NodeManagerAddress"],
             node_cpus=node["Resources"].get("CPU"))


def own_rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@ray.remote(num_cpus=1, max_retries=0)
def hog(total_bytes: int, hold_s: float) -> dict[str, Any]:
    """Grow this worker process to `total_bytes` of RSS (what the task declared), hold it."""
    start = time.monotonic()
    chunks = []
    while own_rss_bytes() + CHUNK_BYTES <= total_bytes:
        chunks.append(b"x" * CHUNK_BYTES)
        time.sleep(0.02)
    held = own_rss_bytes()
    time.sleep(hold_s)
    return {"start": start, "end": time.monotonic(), "ip": ray.util.get_node_ip_address(),
            "pid": os.getpid(), "rss_bytes": held}


def run_packing(out: TextIO, tasks: int, memory_bytes: int, hold_s: float, timeout_s: float) -> None:
    seen: dict[str, dict[str, Any]] = {}
    submit = time.monotonic()
    refs = {hog.options(memory=memory_bytes).remote(memory_bytes, hold_s): i for i in range(tasks)}
    emit(out, kind="submitted", tasks=tasks, memory_bytes=memory_bytes, at=submit)
    pending = list(refs)
    deadline = submit + timeout_s
    while pending and time.monotonic() < deadline:
        seen.update(worker_nodes())
        done, pending = ray.wait(pending, num_returns=1, timeout=1.0)
        for ref in done:
            try:
                emit(out, kind="task", index=refs[ref], outcome="ok", **ray.get(ref))
            except Exception as error:  # noqa: BLE001: how the task died is the measurement
                emit(out, kind="task", index=refs[ref], outcome=type(error).__name__,
                     at=time.monotonic(), message=str(error).splitlines()[0][:300])
    for ref in pending:
        emit(out, kind="task", index=refs[ref], outcome="pending", at=time.monotonic())
    seen.update(worker_nodes())
    for node_id, node in sorted(seen.items()):
        emit(out, kind="node", node_id=node_id, ip=node["NodeManagerAddress"],
             cpus=node["Resources"].get("CPU"), memory_bytes=node["Resources"].get("memory"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=("latency", "packing"))
    parser.add_argument("out")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--task-s", type=float, default=1.0)
    parser.add_argument("--jitter-s", type=float, default=0.0)
    parser.add_argument("--tasks", type=int, default=3)
    parser.add_argument("--memory-bytes", type=int, default=0)
    parser.add_argument("--hold-s", type=float, default=5.0)
    parser.add_argument("--timeout-s", type=float, default=180.0)
    args = parser.parse_args()
    ray.init(address=os.environ["RAY_ADDRESS"], logging_level="ERROR", log_to_driver=False)
    with open(args.out, "a") as out:
        if args.mode == "latency":
            run_latency(out, args.reps, args.task_s, args.jitter_s, args.timeout_s)
        else:
            run_packing(out, args.tasks, args.memory_bytes, args.hold_s, args.timeout_s)


if __name__ == "__main__":
    main()

"""A Ray job with one task that outgrows its worker, and others that fit.

Run it against any rayguard cluster (`make demo` runs it on `rayguard local up`):
    RAY_ADDRESS=... RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH=... python examples/memory_hog.py

Without rayguard, in a container Ray cannot see, the hog runs until the kernel kills it,
and the driver gets a WorkerCrashedError that blames "connection error code 2". With
rayguard the newest task is killed first, the node survives, and the kill is an Event.
"""

from __future__ import annotations

import os
import time

import ray

MiB = 1024**2


@ray.remote(max_retries=0)
def fits(index: int, megabytes: int = 200) -> str:
    """A task that stays well inside its worker's memory."""
    block = b"x" * (megabytes * MiB)
    time.sleep(0.5)
    return f"task {index} used {len(block) // MiB} MiB and finished"


@ray.remote(max_retries=0)
def allocate_memory(step_mb: int = 100, pause_s: float = 0.25, total_mb: int = 8192) -> str:
    """A task that keeps growing: a leak, or a dataset that is bigger than planned."""
    chunks = []
    while len(chunks) * step_mb < total_mb:
        chunks.append(b"x" * (step_mb * MiB))
        time.sleep(pause_s)
    return "the hog finished (it should not have)"


def say(text: str) -> None:
    print(f"[driver] {text}", flush=True)


def main() -> None:
    ray.init(address=os.environ.get("RAY_ADDRESS", "auto"), logging_level="ERROR", log_to_driver=False)
    cpus = {n["NodeManagerAddress"] + ":" + n["NodeID"][:8]: n["Resources"].get("CPU", 0)
            for n in ray.nodes() if n["Alive"]}
    say(f"connected; CPUs per node: {cpus} (the head offers 0: it runs no tasks)")

    say("phase 1: four tasks that fit")
    for line in ray.get([fits.remote(i) for i in range(4)]):
        say("  " + line)

    say("phase 2: allocate_memory grows by 100 MiB every 0.25 s, past its worker's limit")
    started = time.monotonic()
    try:
        say("  " + ray.get(allocate_memory.remote()))
    except Exception as error:  # noqa: BLE001 (the point is to show which error arrives)
        first_line = str(error).strip().splitlines()[0][:160]
        say(f"  allocate_memory was killed after {time.monotonic() - started:.1f}s:"
            f" {type(error).__name__}: {first_line}")

    say("phase 3: the job goes on, on the same worker")
    for line in ray.get([fits.remote(i) for i in range(4, 8)]):
        say("  " + line)
    say("done: 8 of 8 tasks that fit finished; only the task that outgrew its worker was lost")


if __name__ == "__main__":
    main()

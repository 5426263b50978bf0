"""A driver for examples/raycluster-autoscaling.yaml: more CPU demand than the cluster has.

Four 1-CPU tasks on a cluster that starts with no workers (the head has 0 CPUs): Ray's
autoscaler scales the worker group up to its maxReplicas of 2, the tasks run two at a time,
then the driver waits for the idle workers to be scaled back down and prints each step.

    rayguard local up examples/raycluster-autoscaling.yaml -- python examples/autoscale_demand.py
"""

from __future__ import annotations

import os
import time

import ray


def workers_alive() -> int:
    return sum(1 for node in ray.nodes() if node["Alive"] and node["Resources"].get("CPU", 0) > 0)


@ray.remote(num_cpus=1)
def work(seconds: float) -> str:
    time.sleep(seconds)
    return ray.util.get_node_ip_address()


def main() -> None:
    ray.init(address=os.environ["RAY_ADDRESS"], logging_level="ERROR", log_to_driver=False)
    tasks = int(os.environ.get("DEMAND_TASKS", "4"))
    seconds = float(os.environ.get("DEMAND_TASK_SECONDS", "5"))
    wait_down_s = float(os.environ.get("DEMAND_WAIT_DOWN_S", "180"))
    started = time.monotonic()
    print(f"driver: {workers_alive()} worker(s); submitting {tasks} tasks of 1 CPU", flush=True)
    ips = ray.get([work.remote(seconds) for _ in range(tasks)])
    print(f"driver: {tasks} tasks done in {time.monotonic() - started:.0f}s on {len(set(ips))} node(s);"
          f" {workers_alive()} worker(s) now", flush=True)
    idle_since = time.monotonic()
    while workers_alive() and time.monotonic() - idle_since < wait_down_s:
        time.sleep(1)
    print(f"driver: {workers_alive()} worker(s) after {time.monotonic() - idle_since:.0f}s idle", flush=True)


if __name__ == "__main__":
    main()

"""Bench only: `rayguard-node run`, except that Ray's `memory` resource is the whole container
limit, as on a KubeRay worker, instead of the plan's heap.

KubeRay starts Ray with `--memory` = the container's memory limit, and tells its autoscaler the
same. `bench.autoscale` compares that with rayguard's planned heap. To reproduce the KubeRay
side faithfully, the Ray node itself must have `memory` = limit too (else Ray's scheduler would
still place one such task per node, whatever the autoscaler was told). rayguard refuses a
`memory` rayStartParam (the plan owns that flag), and this module does not change that: it is
a separate entry point, used only by the bench's `limit` runtime (`autoscale_cluster.py`),
which runs the same supervisor with one change: in its `ray start` command line,
`--memory=<heap>` becomes `--memory=<limit>`. Everything else (the cgroup, the pod view, the
guard, Ray's memory monitor, the object store) is the plan's, unchanged.

Run as `python -m bench.harness.autoscale_limit_node` with the environment a pod's runtime gets.
"""

from __future__ import annotations

import sys

from rayguard_node.run import ray_command, supervisor
from rayguard_node.run.config import RunConfig
from rayguard_node.sizing.plan import MemoryPlan

MEMORY_FLAG = "--memory="


def limit_memory_argv(config: RunConfig, plan: MemoryPlan, ray_executable: str = "ray") -> list[str]:
    """The product's `ray start` argv, with `--memory` = the plan's limit."""
    argv = ray_command.ray_start_argv(config, plan, ray_executable)
    replaced = [f"{MEMORY_FLAG}{plan.limit_bytes}" if arg.startswith(MEMORY_FLAG) else arg for arg in argv]
    if replaced == argv:
        raise RuntimeError("the ray start command has no --memory flag to replace")
    return replaced


def main() -> int:
    supervisor.ray_start_argv = limit_memory_argv  # type: ignore[assignment]
    from rayguard_node.cli import main as node_main

    return node_main(["run"])


if __name__ == "__main__":
    sys.exit(main())

"""What `make demo` shows until local mode lands: Ray's view of memory against rayguard's.

It makes a 3 GiB memory cgroup with an unlimited child, the shape of a container whose
limit sits on its pod, and asks both Ray 2.60 and rayguard how much memory there is.
Without cgroup rights it shows this machine as it is.
"""

from __future__ import annotations

import subprocess
import sys

from rayguard_node.cgroup.scratch import open_scratch_parent, why_not_writable

GiB = 1024**3
RAY_PROBE = "from ray._common.utils import get_system_memory; print(get_system_memory())"
NODE = [sys.executable, "-m", "rayguard_node"]


def run(argv: list[str]) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout.rstrip()


def banner(text: str) -> None:
    print(f"\n=== {text} ===")


def main() -> int:
    parent = open_scratch_parent() if why_not_writable() is None else None
    if parent is None:
        print(f"No cgroup rights here ({why_not_writable()}); showing this machine as it is.")
        for argv in (["detect"], ["plan", "--role", "head"], ["plan", "--role", "worker"]):
            banner("rayguard-node " + " ".join(argv))
            print(run(NODE + argv))
        return 0
    pod = parent.create("rayguard-demo", 3 * GiB)
    try:
        container = pod.child("container")
        banner("A container in a pod limited to 3 GiB (the limit sits on the pod cgroup)")
        ray_bytes = int(run(container.command([sys.executable, "-c", RAY_PROBE])))
        print(f"Ray 2.60 get_system_memory(): {ray_bytes / GiB:.2f} GiB"
              "  <- sizes the object store and its OOM monitor from this")
        banner("rayguard-node detect, in the same container")
        print(run(container.command(NODE + ["detect"])))
        banner("rayguard-node plan --role head (the head runs no tasks: num-cpus=0)")
        print(run(container.command(NODE + ["plan", "--role", "head"])))
        banner("rayguard-node plan --role worker --num-cpus 2")
        print(run(container.command(NODE + ["plan", "--role", "worker", "--num-cpus", "2"])))
        banner("Pod view (the cgroup mounted at the root path, as Kubernetes does it)")
        ray_bytes = int(run(pod.command([sys.executable, "-c", RAY_PROBE], pod_view=True)))
        print(f"Ray 2.60 get_system_memory(): {ray_bytes / GiB:.2f} GiB: right only in this view;"
              " rayguard is right in both.")
    finally:
        pod.remove()
        parent.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

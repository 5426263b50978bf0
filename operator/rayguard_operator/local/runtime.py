"""The seam between `rayguard local up` and what runs a pod: a `PodRuntime`.

`LocalCluster` renders pods, picks ports and names, waits for readiness and turns reports
into Events; a runtime only starts one pod's node and hands back a `NodeHandle`. Two exist:

- `process` (runtime_process.py, the default): `rayguard-node run` as a local process tree
  in its own memory cgroup, where the machine allows one;
- `podman` (containers.py): the pod as a container from its own image and spec.

A runtime may be asked to start pods at any time while the cluster is up (one more worker),
not only in `up`; `check` refuses a pod before anything of it exists.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping, Protocol

from rayguard_operator.local.pods import LocalNode

RUNTIMES = ("process", "podman")


class NodeHandle(Protocol):
    """One started pod. `poll`, `returncode`, `wait` and `kill` read as `subprocess.Popen`'s."""

    stdout_path: Path  # the node's reports, one JSON object a line
    stderr_path: Path  # the runtime's log
    how: str  # how it runs, for the line that says it is ready

    @property
    def returncode(self) -> int | None: ...

    def poll(self) -> int | None: ...

    def terminate(self) -> None:
        """SIGTERM to `rayguard-node run`: it stops Ray in order."""

    def kill(self) -> None: ...

    def wait(self, timeout: float | None = None) -> int:
        """The exit status; raises subprocess.TimeoutExpired."""

    def oom_kill_count(self) -> int | None:
        """Kernel OOM kills in the pod's memory cgroup so far; None where nothing counts them."""

    def oom_killed(self) -> bool:
        """It exited because the kernel's OOM killer killed its main process."""

    def remove(self) -> None:
        """Once it exited: what the runtime made for it (cgroup, container, volumes) goes."""


class PodRuntime(Protocol):
    name: str

    def open(self, say: Callable[[str], None]) -> None:
        """Before the first pod: find what this machine allows, say what matters once."""

    def check(self, pod: Mapping[str, Any], pod_name: str) -> None:
        """Refuse (SpecError naming the field) a pod this runtime cannot run as specified."""

    def start(self, pod: Mapping[str, Any], node: LocalNode, logs: Path) -> NodeHandle: ...

    def driver_argv(self, driver: list[str], env: Mapping[str, str]) -> list[str]:
        """How to run the driver command, given the env `LocalCluster.driver_env` made: as it is,
        or in a container from the head's image (a driver must run the head's Python and Ray)."""

    def close(self) -> None:
        """After the last pod was removed."""


def make_runtime(name: str, run_dir: Path) -> PodRuntime:
    if name == "podman":
        from rayguard_operator.local.containers import PodmanRuntime
        return PodmanRuntime(run_dir)
    from rayguard_operator.local.runtime_process import ProcessRuntime
    return ProcessRuntime()

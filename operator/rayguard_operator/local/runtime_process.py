"""`--runtime process` (the default): each pod's `rayguard-node run` as a local process tree
in its own memory cgroup sized from the pod's limit and, where the machine allows, in its own
mount namespace with that cgroup at the root path: the view a real pod has. Without cgroup
rights the pods run with their declared limits, monitored but not enforced."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Mapping

from rayguard_node.cgroup.scratch import (MemoryCgroup, ScratchParent, open_scratch_parent,
                                          pod_view_possible, why_not_writable)

from rayguard_operator.local.pods import LocalNode


class ProcessHandle:
    def __init__(self, process: subprocess.Popen[bytes], cgroup: MemoryCgroup | None,
                 stdout_path: Path, stderr_path: Path, how: str) -> None:
        self.process, self.cgroup = process, cgroup
        self.stdout_path, self.stderr_path, self.how = stdout_path, stderr_path, how

    @property
    def returncode(self) -> int | None:
        return self.process.returncode

    def poll(self) -> int | None:
        return self.process.poll()

    def terminate(self) -> None:
        # Only the runtime gets SIGTERM: it stops Ray in order. The cgroup takes the rest.
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.process.kill()

    def wait(self, timeout: float | None = None) -> int:
        return self.process.wait(timeout)

    def oom_kill_count(self) -> int | None:
        return self.cgroup.oom_kill_count() if self.cgroup is not None else None

    def oom_killed(self) -> bool:
        return (self.cgroup is not None and self.process.returncode == -signal.SIGKILL
                and self.cgroup.oom_kill_count() > 0)

    def remove(self) -> None:
        if self.cgroup is not None:
            self.cgroup.remove()


class ProcessRuntime:
    name = "process"

    def __init__(self) -> None:
        self.parent: ScratchParent | None = None  # opened by `open`, closed by `close`
        self.pod_view = False

    def open(self, say: Callable[[str], None]) -> None:
        reason = why_not_writable()
        if reason is None:
            self.parent = open_scratch_parent()
            self.pod_view = self.parent is not None and pod_view_possible(self.parent.version)
        if self.parent is None:
            say(f"No cgroup rights here ({reason}): pods run with their declared"
                " limits, monitored but not enforced.")

    def check(self, pod: Mapping[str, Any], pod_name: str) -> None:
        """The process runtime runs rayguard-node from this checkout: the pod's image, user
        and volumes are not used."""

    def start(self, pod: Mapping[str, Any], node: LocalNode, logs: Path) -> ProcessHandle:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RAYGUARD_", "RAY_"))}
        env.update(node.env)
        argv = [sys.executable, "-m", "rayguard_node", "run"]
        cgroup = None
        if self.parent is not None:
            cgroup = self.parent.create(f"rayguard-local-{node.name}", node.limit_bytes)
            argv = cgroup.command(argv, pod_view=self.pod_view)
        how = ("its own cgroup, pod view" if self.pod_view else "its own cgroup (Ray cannot see it)") \
            if cgroup is not None else "no cgroup: not enforced"
        stdout_path, stderr_path = logs / "reports.jsonl", logs / "runtime.log"
        with open(stdout_path, "wb") as out, open(stderr_path, "wb") as err:
            process = subprocess.Popen(argv, env=env, stdout=out, stderr=err, start_new_session=True)  # Ctrl-C reaches us, not them
        return ProcessHandle(process, cgroup, stdout_path, stderr_path, how)

    def driver_argv(self, driver: list[str], env: Mapping[str, str]) -> list[str]:
        return driver

    def close(self) -> None:
        if self.parent is not None:
            self.parent.close()  # on cgroup v2: our processes go back where they were
            self.parent = None

"""The "rayguard in a container" row of `bench.oom_race`: a Ray head as `rayguard local up
--runtime podman` runs one, a podman container from rayguard/node:0.1.0 with the cell's memory
limit (no CPU limit, as the other rows), its /dev/shm sized by the plan, uid 1000, no
capabilities; the driver in a container beside it (local/containers.py says why).

The bench samples the container's own memory cgroup from the host. Ray and rayguard inside name
processes by their pid in the container's PID namespace; `ContainerSampler` records that pid
(the last NSpid of /proc/PID/status) for each task it sees, so that a report's victim can be
matched with the host pid the sampler watched.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench.harness.sampler import Sampler
from rayguard_node.cgroup.scratch import MemoryCgroup
from rayguard_node.contract.secrets import ensure_secret

from rayguard_operator import names
from rayguard_operator.local.cluster import new_ports
from rayguard_operator.local.containers import ContainerHandle, PodmanRuntime, memory_cgroup_of, podman_problem
from rayguard_operator.local.pods import local_node
from rayguard_operator.manifests.render import render_list
from rayguard_operator.settings import OperatorSettings

REPO = Path(__file__).resolve().parents[2]
IMAGE = "rayguard/node:0.1.0"
READY_TIMEOUT_S = 240
FIXED_POLL_ENV = "RAYGUARD_GUARD_MIN_REFRESH_MS"


def container_problem() -> str | None:
    """Why the container row cannot run here; None when it can."""
    os.environ.setdefault("CONTAINERS_CONF", str(REPO / "scripts" / "podman" / "containers.conf"))
    problem = podman_problem()
    if problem is None and subprocess.run(["podman", "image", "exists", IMAGE], timeout=60).returncode != 0:
        problem = f"{IMAGE} is not built (make images)"
    return problem


def ns_pid(pid: int) -> int | None:
    """`pid`'s number in its own (innermost) PID namespace."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("NSpid:"):
                    return int(line.split()[-1])
    except (OSError, ValueError):
        pass
    return None


class ContainerSampler(Sampler):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.ns_pids: dict[int, int] = {}  # host pid -> pid in the container

    def _find_hog(self) -> None:
        super()._find_hog()
        for pid in self.hog_pids - set(self.ns_pids):
            inner = ns_pid(pid)
            if inner is not None:
                self.ns_pids[pid] = inner


class ContainerHead:
    def __init__(self, limit_bytes: int, tasks: int, temp_dir: Path, fixed_poll: bool = False) -> None:
        self.limit_bytes, self.tasks, self.temp_dir, self.fixed_poll = limit_bytes, tasks, temp_dir, fixed_poll
        self.run_dir = Path(tempfile.mkdtemp(prefix="rg-oomrace-box-"))
        self.runtime = PodmanRuntime(self.run_dir)
        self.handle: ContainerHandle | None = None
        self.ports = new_ports()

    def start(self) -> None:
        body = {"apiVersion": "rayguard.dev/v1", "kind": "RayCluster", "metadata": {"name": "oomrace"},
                "spec": {"image": IMAGE, "workerGroups": [],
                         "head": {"numCpus": self.tasks, "resources": {"limits": {"memory": str(self.limit_bytes)}}}}}
        [pod] = [i for i in render_list(body, OperatorSettings.from_env({}))["items"] if i["kind"] == "Pod"]
        if self.fixed_poll:
            pod["spec"]["containers"][0]["env"].append({"name": FIXED_POLL_ENV, "value": "50"})
        secrets = self.run_dir / "secrets"
        for key in (names.SECRET_KEY_RAY_TOKEN, names.SECRET_KEY_REDIS_PASSWORD):
            ensure_secret(secrets / key, key)
        self.runtime.check(pod, "oomrace-head-0")
        self.runtime.open(lambda _text: None)
        node = local_node(pod, "oomrace-head-0", self.ports, self.ports, secrets, self.temp_dir)
        logs = self.run_dir / "pods" / node.name
        logs.mkdir(parents=True)
        self.handle = self.runtime.start(pod, node, logs)

    def wait_ready(self) -> None:
        assert self.handle is not None
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.handle.poll() is not None:
                raise RuntimeError(f"the container exited {self.handle.returncode}: "
                                   + self.handle.stderr_path.read_text(errors="replace")[-1500:])
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.ports.health}/readyz", timeout=2) as reply:
                    if reply.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"the container was not ready after {READY_TIMEOUT_S}s")

    def cgroup(self) -> MemoryCgroup:
        assert self.handle is not None
        state = self.handle._inspect_state() or {}
        found = memory_cgroup_of(int(state.get("Pid") or 0)) if state.get("Pid") else None
        if found is None:
            raise RuntimeError("the container's memory cgroup was not found")
        return found

    def plan(self) -> dict[str, Any]:
        assert self.handle is not None
        result = subprocess.run(["podman", "exec", self.handle.name, "rayguard-node", "plan", "--json",
                                 "--role", "head", "--num-cpus", str(self.tasks)],
                                capture_output=True, text=True, timeout=60, check=True)
        return json.loads(result.stdout)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.ports.gcs}"

    def driver(self, script: str) -> tuple[list[str], dict[str, str]]:
        env = {"RAY_ADDRESS": self.address, "RAY_AUTH_MODE": "token",
               "RAY_AUTH_TOKEN_PATH": str(self.run_dir / "secrets" / names.SECRET_KEY_RAY_TOKEN)}
        return self.runtime.driver_argv(["python", "-c", script], env), {**os.environ, **env}

    def oom_kills(self) -> int:
        return (self.handle.oom_kill_count() or 0) if self.handle is not None else 0

    def reports(self) -> list[dict[str, Any]]:
        if self.handle is None or not self.handle.stdout_path.exists():
            return []
        lines = self.handle.stdout_path.read_text(errors="replace").splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]

    def stop(self) -> None:
        if self.handle is not None:
            self.handle.terminate()
            try:
                self.handle.wait(15)
            except subprocess.TimeoutExpired:
                self.handle.kill()
                self.handle.wait()
        self.runtime.close()  # the container, its volumes, the driver's container
        shutil.rmtree(self.run_dir, ignore_errors=True)

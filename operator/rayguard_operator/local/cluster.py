"""`rayguard local up`: a whole RayCluster on one machine, no Kubernetes.

The pods come from the operator's own builders (`render`). Each pod's `rayguard-node run`
runs as a local process tree in its own memory cgroup sized from the pod's limit and,
where the machine allows, in its own mount namespace with that cgroup at the root path:
the view a real pod has. Every report a node prints is shown as the Event the operator
would post. Without cgroup rights the pods run with their declared limits, monitored but
not enforced.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TextIO

from rayguard_node.cgroup.scratch import (MemoryCgroup, ScratchParent, open_scratch_parent,
                                          pod_view_possible, why_not_writable)
from rayguard_node.contract import settings as S
from rayguard_node.sizing.quantity import format_bytes
from rayguard_node.contract.reports import Report
from rayguard_node.contract.secrets import ensure_secret

from rayguard_operator import names
from rayguard_operator.local.pods import LocalNode, LocalPorts, local_node, local_pod_names
from rayguard_operator.oom.messages import REASON_BY_KIND, container_message, report_message
from rayguard_operator.profile.fetch import copy_profiles

READY_TIMEOUT_S = 240
RAY_TEMP_LINK = "ray-temp"  # pods/<pod>/ray-temp: the pod's Ray temp dir while it runs
PROFILES_DIR = "profiles"  # pods/<pod>/profiles/<session>/: its memray files, once it stopped


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def new_ports() -> LocalPorts:
    return LocalPorts(*(free_port() for _ in range(7)))


@dataclass
class LocalPod:
    node: LocalNode
    ports: LocalPorts
    cgroup: MemoryCgroup | None
    process: subprocess.Popen[bytes]
    stdout_path: Path
    stderr_path: Path
    read_offset: int = 0
    announced_exit: bool = False

    def http_ok(self, path: str) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.ports.health}{path}", timeout=2) as reply:
                return reply.status == 200
        except OSError:
            return False

    def new_reports(self) -> list[dict[str, Any]]:
        with open(self.stdout_path, "rb") as handle:
            handle.seek(self.read_offset)
            data = handle.read()
        complete = data[: data.rfind(b"\n") + 1]
        self.read_offset += len(complete)
        return [json.loads(line) for line in complete.splitlines() if line.startswith(b"{")]


class LocalCluster:
    def __init__(self, body: dict[str, Any], items: list[dict[str, Any]], run_dir: Path,
                 out: TextIO = sys.stdout) -> None:
        self.name = body["metadata"]["name"]
        self.items = items
        self.run_dir = run_dir
        self.out = out
        self.secrets_dir = run_dir / "secrets"
        self.pods: list[LocalPod] = []
        self.parent: ScratchParent | None = None  # opened by `up`, closed by `down`
        self.pod_view = False
        self.events_printed = 0
        self.stopping = False
        self.final_oom_kills: dict[str, int] | None = None
        self.kept_profiles: list[Path] = []  # memray files copied out of the pods' Ray temp dirs

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    # -- up -------------------------------------------------------------------------
    def up(self) -> None:
        reason = why_not_writable()
        if reason is None:
            self.parent = open_scratch_parent()
            self.pod_view = self.parent is not None and pod_view_possible(self.parent.version)
        if self.parent is None:
            self.say(f"No cgroup rights here ({reason}): pods run with their declared"
                     " limits, monitored but not enforced.")
        ensure_secret(self.secrets_dir / names.SECRET_KEY_RAY_TOKEN, "Ray auth token")
        ensure_secret(self.secrets_dir / names.SECRET_KEY_REDIS_PASSWORD, "Redis password")
        pods = [item for item in self.items if item["kind"] == "Pod"]
        pods.sort(key=lambda pod: pod["metadata"]["labels"][names.LABEL_NODE_TYPE] != names.HEAD)
        head_ports: LocalPorts | None = None
        for pod, pod_name in zip(pods, local_pod_names(pods)):
            ports = new_ports()
            head_ports = head_ports or ports
            node = local_node(pod, pod_name, ports, head_ports, self.secrets_dir,
                              Path(tempfile.mkdtemp(prefix="rg-", dir="/tmp")))
            self._start(node, ports)
            if node.role == names.HEAD:
                self._wait_ready(self.pods[-1])
        for pod in self.pods[1:]:
            self._wait_ready(pod)

    def _start(self, node: LocalNode, ports: LocalPorts) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RAYGUARD_", "RAY_"))}
        env.update(node.env)
        argv = [sys.executable, "-m", "rayguard_node", "run"]
        cgroup = None
        if self.parent is not None:
            cgroup = self.parent.create(f"rayguard-local-{node.name}", node.limit_bytes)
            argv = cgroup.command(argv, pod_view=self.pod_view)
        logs = self.run_dir / "pods" / node.name
        logs.mkdir(parents=True, exist_ok=True)
        # Ray's temp dir (its logs; memray profiles while the pod runs) is found from the run dir.
        (logs / RAY_TEMP_LINK).symlink_to(node.env[S.RAY_TEMP_DIR.env], target_is_directory=True)
        stdout_path, stderr_path = logs / "reports.jsonl", logs / "runtime.log"
        with open(stdout_path, "wb") as out, open(stderr_path, "wb") as err:
            process = subprocess.Popen(argv, env=env, stdout=out, stderr=err, start_new_session=True)  # Ctrl-C reaches us, not them
        self.pods.append(LocalPod(node, ports, cgroup, process, stdout_path, stderr_path))

    def _wait_ready(self, pod: LocalPod) -> None:
        started = time.monotonic()
        while time.monotonic() - started < READY_TIMEOUT_S:
            if pod.process.poll() is not None:
                tail = pod.stderr_path.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"pod {pod.node.name} exited with status {pod.process.returncode}:\n{tail}")
            if pod.http_ok("/readyz"):
                how = ("its own cgroup, pod view" if self.pod_view else "its own cgroup (Ray cannot see it)") \
                    if pod.cgroup is not None else "no cgroup: not enforced"
                self.say(f"  pod {pod.node.name:<24} {pod.node.role:<6} {format_bytes(pod.node.limit_bytes):>9}"
                         f"  {how}, ready in {time.monotonic() - started:.0f}s")
                return
            time.sleep(0.5)
        raise RuntimeError(f"pod {pod.node.name} was not ready after {READY_TIMEOUT_S}s;"
                           f" see {pod.stderr_path}")

    # -- while up -------------------------------------------------------------------
    @property
    def head(self) -> LocalPod:
        return self.pods[0]

    def driver_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "RAY_AUTH_TOKEN"}
        env.update(RAY_ADDRESS=f"127.0.0.1:{self.head.ports.gcs}", RAY_AUTH_MODE="token",
                   RAY_AUTH_TOKEN_PATH=str(self.secrets_dir / names.SECRET_KEY_RAY_TOKEN))
        return env

    def top_command(self) -> str:
        """`rayguard top` for this cluster: the head's Redis and the password file."""
        return (f"rayguard top --redis-url redis://127.0.0.1:{self.head.ports.redis}"
                f" --redis-password-file {shlex.quote(str(self.secrets_dir / names.SECRET_KEY_REDIS_PASSWORD))}")

    def print_event(self, reason: str, pod: str, message: str) -> None:
        self.events_printed += 1
        self.say(f"\nEvent  Warning  {reason}  raycluster/{self.name}  pod/{pod}\n  {message}")

    def poll(self) -> None:
        """Show new reports as Events, and containers that died of OOM."""
        for pod in self.pods:
            for raw in pod.new_reports():
                report = Report.from_dict(raw)
                self.print_event(REASON_BY_KIND[report.kind], pod.node.name, report_message(report))
            if pod.process.poll() is not None and not pod.announced_exit:
                pod.announced_exit = True
                if pod.cgroup is not None and pod.process.returncode == -signal.SIGKILL \
                        and pod.cgroup.oom_kill_count() > 0:
                    self.print_event("OOMKilled", pod.node.name, container_message(
                        pod.node.name, pod.node.group, names.CONTAINER, pod.node.limit_bytes, 137,
                        pod.node.role))
                elif not self.stopping:
                    self.say(f"pod {pod.node.name} exited with status {pod.process.returncode};"
                             f" see {pod.stderr_path}")

    def wait(self, done: Callable[[], bool]) -> None:
        while not done():
            self.poll()
            time.sleep(0.25)
        self.poll()

    def kernel_oom_kills(self) -> dict[str, int]:
        """Per pod; after `down`, the counts its cgroups had when they were removed."""
        if self.final_oom_kills is not None:
            return dict(self.final_oom_kills)
        return {p.node.name: p.cgroup.oom_kill_count() for p in self.pods if p.cgroup is not None}

    # -- down -----------------------------------------------------------------------
    def down(self, grace_s: float = 30) -> None:
        self.stopping = True
        # Only the runtime gets SIGTERM: it stops Ray in order. The cgroup takes the rest.
        for pod in reversed(self.pods):  # workers first, the head last
            if pod.process.poll() is None:
                pod.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for pod in self.pods:
            try:
                pod.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pod.process.kill()
                pod.process.wait()
        self.poll()
        self.final_oom_kills = self.kernel_oom_kills()
        for pod in self.pods:
            if pod.cgroup is not None:
                pod.cgroup.remove()
            logs = self.run_dir / "pods" / pod.node.name
            temp_dir = pod.node.env.get(S.RAY_TEMP_DIR.env, "")
            if temp_dir:  # the profiles outlive the pod, as a volume's files would
                self.kept_profiles += copy_profiles(Path(temp_dir), logs / PROFILES_DIR)
            (logs / RAY_TEMP_LINK).unlink(missing_ok=True)
            shutil.rmtree(temp_dir, ignore_errors=True)
        if self.parent is not None:
            self.parent.close()  # on cgroup v2: our processes go back where they were
            self.parent = None

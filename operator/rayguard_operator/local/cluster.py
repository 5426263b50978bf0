"""`rayguard local up`: a whole RayCluster on one machine, no Kubernetes.

The pods come from the operator's own builders (`render`). A `PodRuntime` (runtime.py) runs
each: by default `rayguard-node run` as a local process tree in its own memory cgroup
(runtime_process.py), or, with `--runtime podman`, a container from the pod's own image and
spec (containers.py). Every report a node prints is shown as the Event the operator would post.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, TextIO

from rayguard_node.contract import settings as S
from rayguard_node.sizing.quantity import format_bytes
from rayguard_node.contract.reports import Report
from rayguard_node.contract.secrets import ensure_secret

from rayguard_operator import names
from rayguard_operator.local.autoscaling import (STATUS_FAILED, STATUS_PENDING, STATUS_UP, LocalAutoscaling,
                                                 LocalNodeState, LocalScaler, LocalTarget, bounds_of,
                                                 config_from_items, node_ip)
from rayguard_operator.local.pods import LocalNode, LocalPorts, local_node, local_pod_names, next_local_name
from rayguard_operator.local.ports import free_port
from rayguard_operator.local.runtime import NodeHandle, PodRuntime
from rayguard_operator.local.runtime_process import ProcessRuntime
from rayguard_operator.oom.messages import REASON_BY_KIND, container_message, report_message
from rayguard_operator.profile.fetch import copy_profiles

READY_TIMEOUT_S = 240
RAY_TEMP_LINK = "ray-temp"  # pods/<pod>/ray-temp: the pod's Ray temp dir while it runs
PROFILES_DIR = "profiles"  # pods/<pod>/profiles/<session>/: its memray files, once it stopped


def new_ports() -> LocalPorts:
    return LocalPorts(*(free_port() for _ in range(7)))


@dataclass
class LocalPod:
    node: LocalNode
    ports: LocalPorts
    process: NodeHandle  # what the runtime started: poll/wait/terminate as a Popen's
    read_offset: int = 0
    announced_exit: bool = False
    ready: bool = False
    started_at: float = 0.0
    stopped_by_us: bool = False  # stopped on the autoscaler's request: removed once it exits
    ip: str = "127.0.0.1"  # the node's loopback address

    def http_ok(self, path: str) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.ports.health}{path}", timeout=2) as reply:
                return reply.status == 200
        except OSError:
            return False

    @property
    def stderr_path(self) -> Path:
        return self.process.stderr_path

    def new_reports(self) -> list[dict[str, Any]]:
        with open(self.process.stdout_path, "rb") as handle:
            handle.seek(self.read_offset)
            data = handle.read()
        complete = data[: data.rfind(b"\n") + 1]
        self.read_offset += len(complete)
        return [json.loads(line) for line in complete.splitlines() if line.startswith(b"{")]


class LocalCluster:
    def __init__(self, body: dict[str, Any], items: list[dict[str, Any]], run_dir: Path,
                 out: TextIO = sys.stdout, runtime: PodRuntime | None = None,
                 templates: Mapping[str, dict[str, Any]] | None = None) -> None:
        self.name = body["metadata"]["name"]
        self.items = items
        self.run_dir = run_dir
        self.out = out
        self.secrets_dir = run_dir / "secrets"
        self.pods: list[LocalPod] = []
        self.runtime: PodRuntime = runtime or ProcessRuntime()  # opened by `up`, closed by `down`
        self.events_printed = 0
        self.stopping = False
        self.final_oom_kills: dict[str, int] | None = None
        self.kept_profiles: list[Path] = []  # memray files copied out of the pods' Ray temp dirs
        self.removed_oom_kills: dict[str, int] = {}  # of pods stopped while the cluster ran
        # Autoscaling (local/autoscaling.py): a pod manifest per worker group to start more from.
        self.templates = dict(templates or {})
        self.autoscaling: LocalAutoscaling | None = None
        self._started = 0  # pods started so far: the next one's loopback address
        self._names: dict[str, int] = {}  # per pod-name prefix, the next index
        config = config_from_items(items, self.name)
        if config is not None:
            scaler = LocalScaler(LocalTarget(self.name), bounds_of(config), self.running_workers,
                                 self.stop_pod, self.start_worker, self.print_normal_event)
            self.autoscaling = LocalAutoscaling(config, run_dir / "autoscaler" / "config.json", scaler)

    def say(self, text: str) -> None:
        try:
            print(text, file=self.out, flush=True)
        except OSError:  # a closed terminal or pipe must not stop the cleanup that follows
            pass

    # -- up -------------------------------------------------------------------------
    def rendered_pods(self) -> list[tuple[dict[str, Any], str]]:
        """(pod, local name), the head first."""
        pods = [item for item in self.items if item["kind"] == "Pod"]
        pods.sort(key=lambda pod: pod["metadata"]["labels"][names.LABEL_NODE_TYPE] != names.HEAD)
        return list(zip(pods, local_pod_names(pods)))


    def check(self) -> None:
        """The runtime refuses, before anything starts, a pod it cannot run as specified."""
        for pod, pod_name in self.rendered_pods():
            self.runtime.check(pod, pod_name)

    def up(self) -> None:
        self.check()
        self.runtime.open(self.say)
        ensure_secret(self.secrets_dir / names.SECRET_KEY_RAY_TOKEN, "Ray auth token")
        ensure_secret(self.secrets_dir / names.SECRET_KEY_REDIS_PASSWORD, "Redis password")
        for pod, _ in self.rendered_pods():
            self._start(pod, next_local_name(pod, self._names))
            if self.pods[-1].node.role == names.HEAD:
                self._wait_ready(self.pods[-1])
        for local_pod in self.pods[1:]:
            self._wait_ready(local_pod)
        if self.autoscaling is not None:
            self.say("  autoscaler: Ray's own, in this process, scaling the worker groups between their"
                     f" minReplicas and maxReplicas (log: {self.autoscaling.log_path})")
            self.autoscaling.start(f"127.0.0.1:{self.head.ports.gcs}", self.secrets_dir / names.SECRET_KEY_RAY_TOKEN)

    def _start(self, pod: Mapping[str, Any], pod_name: str) -> LocalPod:
        """Start one pod, not waiting for it (`poll` notices when it is ready)."""
        ports = new_ports()
        head_ports = self.head.ports if self.pods else ports
        # An autoscaling cluster's pods each get their own loopback address: Ray's autoscaler
        # tells nodes apart by IP.
        ip = node_ip(self._started) if self.autoscaling is not None else "127.0.0.1"
        self._started += 1
        node = local_node(pod, pod_name, ports, head_ports, self.secrets_dir,
                          Path(tempfile.mkdtemp(prefix="rg-", dir="/tmp")), ip=ip)
        logs = self.run_dir / "pods" / node.name
        logs.mkdir(parents=True, exist_ok=True)
        # Ray's temp dir (its logs; memray profiles while the pod runs) is found from the run dir.
        (logs / RAY_TEMP_LINK).symlink_to(node.env[S.RAY_TEMP_DIR.env], target_is_directory=True)
        self.pods.append(LocalPod(node, ports, self.runtime.start(pod, node, logs), started_at=time.monotonic(),
                                  ip=ip))
        return self.pods[-1]

    def start_worker(self, group: str) -> None:
        """One more pod of a worker group (the autoscaler asked)."""
        template = self.templates[group]
        self._start(template, next_local_name(template, self._names))

    def stop_pod(self, name: str) -> None:
        """SIGTERM to one pod's runtime (it stops Ray in order); `poll` removes it once it exited."""
        for pod in self.pods[1:]:
            if pod.node.name == name and not pod.stopped_by_us:
                pod.stopped_by_us = True
                if pod.process.poll() is None:
                    pod.process.terminate()

    def running_workers(self) -> dict[str, list[str]]:
        """Each worker group's pods that are not being stopped (every group, even with none)."""
        groups: dict[str, list[str]] = {group: [] for group in self.templates}
        for pod in self.pods[1:]:
            if not pod.stopped_by_us and pod.process.poll() is None:
                groups.setdefault(pod.node.group, []).append(pod.node.name)
        return groups

    def node_states(self) -> list[LocalNodeState]:
        return [LocalNodeState(pod.node.name, pod.node.group, pod.node.role == names.HEAD, pod.ip,
                               STATUS_FAILED if pod.process.poll() is not None else
                               STATUS_UP if pod.ready else STATUS_PENDING)
                for pod in self.pods if not pod.stopped_by_us]

    def _wait_ready(self, pod: LocalPod) -> None:
        started = time.monotonic()
        while time.monotonic() - started < READY_TIMEOUT_S:
            if pod.process.poll() is not None:
                tail = pod.stderr_path.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"pod {pod.node.name} exited with status {pod.process.returncode}:\n{tail}")
            if self._check_ready(pod):
                return
            time.sleep(0.5)
        raise RuntimeError(f"pod {pod.node.name} was not ready after {READY_TIMEOUT_S}s;"
                           f" see {pod.stderr_path}")

    def _check_ready(self, pod: LocalPod) -> bool:
        if not pod.ready and pod.http_ok("/readyz"):
            pod.ready = True
            self.say(f"  pod {pod.node.name:<24} {pod.node.role:<6} {format_bytes(pod.node.limit_bytes):>9}"
                     f"  {pod.process.how}, ready in {time.monotonic() - pod.started_at:.0f}s")
        return pod.ready

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

    def print_normal_event(self, reason: str, message: str) -> None:
        """A Normal Event on the RayCluster (scaling), as the operator would post it."""
        self.say(f"\nEvent  Normal  {reason}  raycluster/{self.name}\n  {message}")

    def poll(self) -> None:
        """Show new reports as Events, and containers that died of OOM."""
        for pod in self.pods:
            for raw in pod.new_reports():
                report = Report.from_dict(raw)
                self.print_event(REASON_BY_KIND[report.kind], pod.node.name, report_message(report))
            if pod.process.poll() is not None and not pod.announced_exit:
                pod.announced_exit = True
                if pod.process.oom_killed():
                    self.print_event("OOMKilled", pod.node.name, container_message(
                        pod.node.name, pod.node.group, names.CONTAINER, pod.node.limit_bytes, 137,
                        pod.node.role))
                elif not self.stopping and not pod.stopped_by_us:
                    self.say(f"pod {pod.node.name} exited with status {pod.process.returncode};"
                             f" see {pod.stderr_path}")

    def _scale(self) -> None:
        """Readiness of new pods, removal of stopped ones, and the autoscaler's requests."""
        for pod in list(self.pods[1:]):
            if pod.process.poll() is None:
                self._check_ready(pod)
            elif pod.stopped_by_us:
                self.pods.remove(pod)
                count = pod.process.oom_kill_count()
                if count is not None:
                    self.removed_oom_kills[pod.node.name] = count
                self._remove(pod)
                self.say(f"  pod {pod.node.name:<24} stopped and removed")
        if self.autoscaling is not None:
            self.autoscaling.step(self.node_states())

    def wait(self, done: Callable[[], bool]) -> None:
        while not done():
            self.poll()
            self._scale()
            time.sleep(0.25)
        self.poll()

    def kernel_oom_kills(self) -> dict[str, int]:
        """Per pod; after `down`, the counts its cgroups had when they were removed."""
        if self.final_oom_kills is not None:
            return dict(self.final_oom_kills)
        counts = {p.node.name: p.process.oom_kill_count() for p in self.pods}
        return self.removed_oom_kills | {name: count for name, count in counts.items() if count is not None}

    # -- down -----------------------------------------------------------------------
    def down(self, grace_s: float = 30) -> None:
        self.stopping = True
        if self.autoscaling is not None:
            self.autoscaling.stop()  # no pod is started or stopped behind our back from here
        # Only the runtime gets SIGTERM: it stops Ray in order. The cgroup takes the rest.
        for pod in reversed(self.pods):  # workers first, the head last
            if pod.process.poll() is None:
                pod.process.terminate()
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
            self._remove(pod)
        self.runtime.close()

    def _remove(self, pod: LocalPod) -> None:
        """What the runtime made for an exited pod goes; its memray files stay in the run dir."""
        pod.process.remove()
        logs = self.run_dir / "pods" / pod.node.name
        temp_dir = pod.node.env.get(S.RAY_TEMP_DIR.env, "")
        if temp_dir:  # the profiles outlive the pod, as a volume's files would
            self.kept_profiles += copy_profiles(Path(temp_dir), logs / PROFILES_DIR)
        (logs / RAY_TEMP_LINK).unlink(missing_ok=True)
        shutil.rmtree(temp_dir, ignore_errors=True)

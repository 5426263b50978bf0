"""Run real `rayguard-node run` processes (and Ray drivers) for integration tests and benchmarks.

A node runs inside its own memory cgroup, optionally with the pod view. Its stdout
(reports, one JSON per line) and stderr (logs) go to files the test can read. Teardown
sends SIGTERM, then removes the cgroup, which kills anything left inside it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rayguard_node.cgroup.scratch import MemoryCgroup
from rayguard_operator.local.ports import free_port

READY_TIMEOUT_S = 180


def short_temp_dir(prefix: str = "rg-") -> Path:
    # Ray's unix socket paths must stay short: keep the temp dir near the root.
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


@dataclass
class Node:
    role: str
    cgroup: MemoryCgroup | None
    temp_dir: Path
    health_port: int
    gcs_port: int
    redis_port: int
    process: subprocess.Popen[bytes] | None = None
    stdout_path: Path = field(default_factory=Path)
    stderr_path: Path = field(default_factory=Path)

    @property
    def token_file(self) -> Path:
        return self.temp_dir / "rayguard_auth_token"

    @property
    def redis_password_file(self) -> Path:
        return self.temp_dir / "rayguard_redis_password"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.gcs_port}"

    def reports(self) -> list[dict[str, Any]]:
        lines = self.stdout_path.read_text().splitlines() if self.stdout_path.exists() else []
        return [json.loads(line) for line in lines if line.startswith("{")]

    def log(self) -> str:
        return self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""

    def http(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}{path}", timeout=3) as reply:
                return reply.status, reply.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()
        except OSError as error:
            return 0, str(error)

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"{self.role} exited with {self.process.returncode}:\n{self.log()[-4000:]}")
            if self.http("/readyz")[0] == 200:
                return
            time.sleep(0.5)
        raise AssertionError(f"{self.role} not ready after {timeout_s}s:\n{self.log()[-4000:]}")

    def wait_for_report(self, kind: str, timeout_s: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for report in self.reports():
                if report["kind"] == kind:
                    return report
            time.sleep(0.2)
        raise AssertionError(f"no {kind} report within {timeout_s}s; reports: {self.reports()}\n"
                             f"{self.log()[-3000:]}")

    def stop(self, timeout_s: float = 60) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()

    def driver_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("RAY_AUTH_TOKEN", None)
        env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(self.token_file))
        return env


def start_node(role: str, cgroup: MemoryCgroup | None, *, pod_view: bool = False,
               env: dict[str, str] | None = None, head: Node | None = None,
               temp_dir: Path | None = None, dashboard_port: int | None = None,
               replaces: Node | None = None) -> Node:
    """A `rayguard-node run` process. The head runs without Ray's dashboard unless
    `dashboard_port` is given (the state API, which the quota path reads, needs it).
    `replaces`: a stopped node whose ports this one takes (a head restarted behind its Service)."""
    temp_dir = temp_dir or short_temp_dir()
    if replaces is not None:
        node = Node(role, cgroup, temp_dir, replaces.health_port, replaces.gcs_port, replaces.redis_port)
    else:
        node = Node(role, cgroup, temp_dir, free_port(), head.gcs_port if head else free_port(),
                    head.redis_port if head else free_port())
    params: dict[str, object] = {"node-ip-address": "127.0.0.1",
                                 "dashboard-agent-listen-port": free_port(),
                                 "metrics-export-port": free_port()}
    if role == "head":
        params.update({"port": node.gcs_port, "include-dashboard": dashboard_port is not None})
        if dashboard_port is not None:
            params["dashboard-port"] = dashboard_port
    run_env = dict(os.environ)
    for name in [k for k in run_env if k.startswith(("RAYGUARD_", "RAY_"))]:
        run_env.pop(name)
    run_env.update({
        "RAYGUARD_ROLE": role,
        "RAYGUARD_RAY_TEMP_DIR": str(temp_dir),
        "RAYGUARD_HEALTH_PORT": str(node.health_port),
        "RAYGUARD_REDIS_PORT": str(node.redis_port),
        "RAYGUARD_RAY_START_PARAMS": json.dumps(params),
        "RAYGUARD_CLUSTER": "test",
        "RAYGUARD_GROUP": "" if role == "head" else "cpu",
        "POD_NAME": f"test-{role}",
        "POD_NAMESPACE": "default",
        "RAYGUARD_GRACE_SECONDS": "10",
    })
    if dashboard_port is not None:
        run_env["RAYGUARD_DASHBOARD_PORT"] = str(dashboard_port)
    if head is not None:
        run_env.update({"RAYGUARD_HEAD_ADDRESS": head.address,
                        "RAYGUARD_RAY_AUTH_TOKEN_FILE": str(head.token_file),
                        "RAYGUARD_REDIS_PASSWORD_FILE": str(head.redis_password_file)})
    run_env.update(env or {})
    argv = [sys.executable, "-m", "rayguard_node", "run"]
    if cgroup is not None:
        argv = cgroup.command(argv, pod_view=pod_view)
    node.stdout_path, node.stderr_path = temp_dir / "node.stdout", temp_dir / "node.stderr"
    with open(node.stdout_path, "wb") as out, open(node.stderr_path, "wb") as err:
        node.process = subprocess.Popen(argv, env=run_env, stdout=out, stderr=err)
    return node


def cleanup(node: Node) -> None:
    node.stop(timeout_s=30)
    if node.cgroup is not None:
        node.cgroup.kill_all()
    shutil.rmtree(node.temp_dir, ignore_errors=True)


def run_driver(node: Node, script: str, timeout_s: float = 300) -> subprocess.CompletedProcess[str]:
    """A Ray driver connecting to `node` with the cluster's token; returns its output."""
    return subprocess.run([sys.executable, "-c", script], env=node.driver_env(), capture_output=True,
                          text=True, timeout=timeout_s)


HOG_DRIVER = """
import sys, time, ray
ray.init(address={address!r}, logging_level="ERROR", log_to_driver=False)

@ray.remote(max_retries=0)
def hog(step_bytes, total_bytes, pause_s):
    chunks = []
    while sum(map(len, chunks)) < total_bytes:
        chunks.append(b"x" * step_bytes)
        time.sleep(pause_s)
    return "survived"

@ray.remote
def small():
    return sum(range(1000))

try:
    print("RESULT", ray.get(hog.remote({step}, {total}, {pause}), timeout={timeout}), flush=True)
except Exception as error:
    print("ERROR", type(error).__name__, str(error).splitlines()[0][:300], flush=True)
print("FOLLOWUP", ray.get(small.remote(), timeout=120), flush=True)
"""


def hog_script(address: str, step_bytes: int = 50 << 20, total_bytes: int = 3 << 30,
               pause_s: float = 0.1, timeout_s: float = 240) -> str:
    return HOG_DRIVER.format(address=address, step=step_bytes, total=total_bytes, pause=pause_s,
                             timeout=timeout_s)

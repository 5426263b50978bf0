"""Ray alone, and `rayguard-node run` (testkit.nodes), in a scratch memory cgroup: starting
them, what Ray's monitor killed, the logs that explain a run, and rayguard-node's idle CPU."""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.harness.procfs import cmdline, cpu_seconds
from bench.harness.sampler import Sampler
from bench.harness.waiting import teardown
from rayguard_node.cgroup.scratch import MemoryCgroup, ScratchParent
from testkit.nodes import Node, free_port, short_temp_dir, start_node

READY_TIMEOUT_S = 180


def clean_env() -> dict[str, str]:
    env = dict(os.environ)
    for name in [k for k in env if k.startswith(("RAY_", "RAYGUARD_"))]:
        env.pop(name)
    return env


@dataclass
class RayAlone:
    """`ray start --head --block` inside the cgroup, no rayguard."""

    cgroup: MemoryCgroup
    temp_dir: Path
    pod_view: bool
    num_cpus: int = 1
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def token_file(self) -> Path:
        return self.temp_dir / "ray_auth_token"

    @property
    def output(self) -> Path:
        return self.temp_dir / "ray-start.out"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        descriptor = os.open(self.token_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(secrets.token_hex(32))
        ray = Path(sys.executable).with_name("ray")
        argv = [str(ray) if ray.exists() else "ray", "start", "--head", "--block",
                f"--num-cpus={self.num_cpus}", "--disable-usage-stats", "--include-dashboard=false",
                f"--temp-dir={self.temp_dir}", f"--port={self.port}",
                "--node-ip-address=127.0.0.1",
                f"--dashboard-agent-listen-port={free_port()}",
                f"--metrics-export-port={free_port()}",
                f"--ray-client-server-port={free_port()}"]
        with open(self.output, "wb") as out:
            self.process = subprocess.Popen(self.cgroup.command(argv, pod_view=self.pod_view),
                                            env=self.driver_env(), stdout=out,
                                            stderr=subprocess.STDOUT)

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"ray start exited with {self.process.returncode}:\n"
                                   f"{self.output.read_text(errors='replace')[-3000:]}")
            started = b"Ray runtime started" in self.output.read_bytes()
            if started and any(b"/raylet/raylet" in cmdline(p) for p in self.cgroup.pids()):
                return
            time.sleep(0.3)
        raise RuntimeError(f"ray start not ready after {timeout_s}s:\n"
                           f"{self.output.read_text(errors='replace')[-3000:]}")

    def driver_env(self) -> dict[str, str]:
        env = clean_env()
        env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(self.token_file))
        return env

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()  # the cgroup's removal kills the rest
            self.process.wait()


def guard_plan(cgroup: MemoryCgroup, pod_view: bool, num_cpus: int = 1) -> dict[str, Any]:
    """The plan `rayguard-node run` will compute, from the same view of the cgroup."""
    argv = [sys.executable, "-m", "rayguard_node", "plan", "--json", "--role", "head",
            "--num-cpus", str(num_cpus)]
    result = subprocess.run(cgroup.command(argv, pod_view=pod_view), env=clean_env(),
                            capture_output=True, text=True, timeout=60, check=True)
    return json.loads(result.stdout)


def ray_kills(raylet_out: Path) -> tuple[list[int], str | None]:
    """Pids Ray's monitor selected to kill, and Ray's view of the node at its first kill."""
    try:
        text = raylet_out.read_text(errors="replace")
    except FileNotFoundError:
        return [], None
    if "Killing" not in text:
        return [], None
    pids = [int(p) for p in re.findall(r"Selected to kill: \(.*?\bpid=(\d+)", text)]
    view = re.search(r"was ([\d.]+GB used / [\d.]+GB limit \([\d.]+\))", text)
    return pids or [-1], view.group(1) if view else None


def keep_logs(target: Path, temp_dir: Path, sampler: Sampler | None, driver_output: str) -> None:
    """Copy what explains a cell (logs, the working-set series) before its temp dir goes."""
    target.mkdir(parents=True, exist_ok=True)
    (target / "driver.out").write_text(driver_output)
    logs = temp_dir / "session_latest" / "logs"
    for source in [logs / "raylet.out", logs / "gcs_server.out", temp_dir / "node.stdout",
                   temp_dir / "node.stderr", temp_dir / "ray-start.out"]:
        if source.exists():
            shutil.copy(source, target / source.name)
    if sampler is not None and sampler.series:
        origin = sampler.hog_seen or sampler.series[0][0]
        (target / "working_set.tsv").write_text("".join(
            f"{(t - origin) * 1000:.1f}\t{ws / sampler.limit:.4f}\n" for t, ws in sampler.series))


def measure_overhead(parent: ScratchParent, limit_bytes: int, refresh_ms: int,
                     seconds: float) -> dict[str, Any]:
    cgroup = parent.create("rg-oomrace-idle", limit_bytes)
    temp_dir = short_temp_dir("rgr-")
    node: Node | None = None
    try:
        env = {"RAYGUARD_NUM_CPUS": "1", "RAYGUARD_GUARD_REFRESH_MS": str(refresh_ms)}
        node = start_node("head", cgroup, pod_view=False, env=env, temp_dir=temp_dir)
        node.wait_ready()
        time.sleep(3)  # let start-up settle
        runtime = [p for p in cgroup.pids()
                   if b"rayguard_node" in cmdline(p) and b"\0run" in cmdline(p)]
        if len(runtime) != 1:
            raise RuntimeError(f"expected one rayguard-node process in the cgroup, found {runtime}")
        pid = runtime[0]
        others = [p for p in cgroup.pids() if p != pid]

        def others_cpu() -> float:
            total = 0.0
            for other in others:
                try:
                    total += cpu_seconds(other)
                except OSError:
                    pass
            return total

        wall0, cpu0, rest0 = time.monotonic(), cpu_seconds(pid), others_cpu()
        time.sleep(seconds)
        wall1, cpu1, rest1 = time.monotonic(), cpu_seconds(pid), others_cpu()
        window = wall1 - wall0
        return {"guard_refresh_ms": refresh_ms, "window_s": round(window, 2),
                "rayguard_cpu_s": round(cpu1 - cpu0, 3),
                "rayguard_pct_of_core": round((cpu1 - cpu0) / window * 100, 3),
                "ray_processes_pct_of_core": round((rest1 - rest0) / window * 100, 2)}
    finally:
        teardown([(lambda: node.stop(timeout_s=15)) if node is not None else None,
                  lambda: cgroup.remove(timeout_s=30),
                  lambda: shutil.rmtree(temp_dir, ignore_errors=True)])

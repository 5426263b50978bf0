"""`rayguard local up --runtime podman`: the demo's pods as containers from rayguard/node, under
their real memory limit, user, capabilities and /dev/shm; the memory hog is killed by rayguard,
not by the kernel; nothing is left behind, also after Ctrl-C or a crashed driver."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest
import yaml

from tests.containers.conftest import podman_cgroups, rayguard_containers
from tests.paths import REPO_ROOT
from tests.scale_events import assert_up_to_peak_then_down

pytestmark = [pytest.mark.containers, pytest.mark.usefixtures("images")]
GiB = 1 << 30
RUN_TIMEOUT_S = 480
READY = re.compile(r"^  pod (\S+)\s+(head|worker)\s.*container (\S+), ready in")


@pytest.fixture
def local_up() -> Iterator[Callable[..., "LocalUp"]]:
    """Starts `rayguard local up`; whatever still runs at the end of the test gets Ctrl-C."""
    started: list[LocalUp] = []

    def start(file: str, *driver: str) -> LocalUp:
        started.append(LocalUp(file, *driver))
        return started[-1]

    yield start
    for run in started:
        run.stop()


class LocalUp:
    """`rayguard local up FILE --runtime podman [-- DRIVER]`, its output read as it comes."""

    def __init__(self, file: str, *driver: str) -> None:
        argv = [sys.executable, "-m", "rayguard_operator.cli", "local", "up", file, "--runtime", "podman"]
        self.process = subprocess.Popen([*argv, *(["--", *driver] if driver else [])], cwd=REPO_ROOT,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def out(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, text: str, timeout_s: float = 300) -> None:
        deadline = time.monotonic() + timeout_s
        while not any(text in line for line in self.lines):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.reader.join(5)
                pytest.fail(f"no {text!r} in the output:\n{self.out[-4000:]}")
            time.sleep(0.2)

    def containers(self) -> dict[str, str]:
        """pod name -> container name, from the ready lines."""
        return {m[1]: m[3] for m in map(READY.match, self.lines) if m}

    def stop(self) -> None:
        """Ctrl-C, as a user would, if it still runs (a failed test must not leave it up)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(180)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def finish(self, timeout_s: float = RUN_TIMEOUT_S) -> int:
        try:
            status = self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.stop()
            pytest.fail(f"rayguard local up did not finish in {timeout_s}s:\n{self.out[-4000:]}")
        self.reader.join(10)
        return status


def in_container(container: str, script: str) -> str:
    result = subprocess.run(["podman", "exec", container, "sh", "-c", script],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def status_field(container: str, field: str) -> str:
    """A field of /proc/1/status: PID 1 is the pod's `rayguard-node run` (the command execs it)."""
    return in_container(container, f"grep '^{field}:' /proc/1/status").split(":", 1)[1].strip()


def test_the_demo_in_containers_the_hog_is_killed_by_rayguard_and_nothing_is_left(local_up) -> None:
    before = set(rayguard_containers())
    run = local_up("examples/raycluster.yaml", "python", "examples/memory_hog.py")
    run.wait_for("Running the driver")
    worker = run.containers()["demo-worker-cpu-0"]
    head = run.containers()["demo-head-0"]

    # Inside the running worker: the view a real pod has.
    assert status_field(worker, "Uid").split() == ["1000"] * 4
    assert status_field(worker, "Gid").split() == ["1000"] * 4
    assert status_field(worker, "CapEff") == "0000000000000000"
    assert status_field(worker, "NoNewPrivs") == "1"
    assert status_field(worker, "Seccomp") == "2"  # filtered: podman's default profile
    shm = in_container(worker, "python3 -c \"import os; s = os.statvfs('/dev/shm'); print(s.f_blocks * s.f_frsize)\"")
    assert int(shm) == 805306368  # the pod's dshm emptyDir sizeLimit: the planned object store
    detected = json.loads(in_container(worker, "rayguard-node detect --json"))
    assert detected["limit_bytes"] == 3 * GiB and detected["limited_by"] != "host", detected
    assert detected["shm_bytes"] == 805306368
    head_detected = json.loads(in_container(head, "rayguard-node detect --json"))
    assert head_detected["limit_bytes"] == 2 * GiB
    secrets = in_container(head, "stat -c '%a %u:%g %n' /etc/rayguard/secrets/*; test ! -w /etc/rayguard/secrets"
                                 " && echo read-only")
    assert "440 0:1000 /etc/rayguard/secrets/ray-auth-token" in secrets and "read-only" in secrets, secrets

    status = run.finish()
    out = run.out
    assert status == 0, out[-6000:]
    events = [line for line in out.splitlines() if line.startswith("Event  Warning")]
    assert events, out[-6000:]
    assert any("MemoryMonitorKill" in e and "pod/demo-worker-cpu-0" in e for e in events), events
    assert "ray::allocate_memory" in out.split(events[0], 1)[1]
    assert "allocate_memory was killed after" in out
    assert "done: 8 of 8 tasks that fit finished" in out
    assert "Kernel OOM kills per pod cgroup: demo-head-0 0, demo-worker-cpu-0 0" in out
    assert "Every container and volume is gone." in out
    assert set(rayguard_containers()) - before == set()
    assert podman_cgroups() == []  # nor any cgroup of theirs, conmon's included


def test_after_ctrl_c_every_container_is_gone(local_up) -> None:
    before = set(rayguard_containers())
    run = local_up("examples/raycluster-minimal.yaml")
    run.wait_for("Connect a driver")
    assert set(run.containers().values()) <= set(rayguard_containers())
    run.process.send_signal(signal.SIGINT)
    assert run.finish(180) == 0, run.out[-4000:]
    assert "Every container and volume is gone." in run.out
    assert set(rayguard_containers()) - before == set()
    assert podman_cgroups() == []  # nor any cgroup of theirs, conmon's included


def test_a_crashed_driver_leaves_nothing_and_its_status_is_returned(local_up) -> None:
    before = set(rayguard_containers())
    run = local_up("examples/raycluster-minimal.yaml", "python", "-c", "import ray; raise SystemExit(3)")
    assert run.finish() == 3, run.out[-4000:]
    assert "Every container and volume is gone." in run.out
    assert set(rayguard_containers()) - before == set()
    assert podman_cgroups() == []  # nor any cgroup of theirs, conmon's included


def test_a_security_context_the_runtime_cannot_honour_is_refused(tmp_path: Path) -> None:
    cluster = tmp_path / "selinux.yaml"
    cluster.write_text("""
apiVersion: rayguard.dev/v1
kind: RayCluster
metadata: {name: selinux}
spec:
  image: rayguard/node:0.1.0
  head:
    resources: {limits: {cpu: "1", memory: 2Gi}}
  workerGroups:
  - name: cpu
    replicas: 1
    resources: {limits: {cpu: "1", memory: 2Gi}}
    template:
      spec:
        containers:
        - name: ray-node
          securityContext:
            seLinuxOptions: {level: "s0:c123,c456"}
""")
    before = set(rayguard_containers())
    result = subprocess.run([sys.executable, "-m", "rayguard_operator.cli", "local", "up", str(cluster),
                             "--runtime", "podman"], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stdout == ""  # refused before anything started
    assert result.stderr.splitlines() == [
        "rayguard local: pod selinux-worker-cpu-0 spec.containers[0].securityContext.seLinuxOptions:"
        " --runtime podman cannot honour it: no SELinux labels are set here"]
    assert set(rayguard_containers()) - before == set()
    assert podman_cgroups() == []  # nor any cgroup of theirs, conmon's included


def test_an_autoscaling_cluster_scales_containers_up_and_down(local_up, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The head's autoscaler sidecar is not run as a container: the same autoscaler runs in
    `rayguard local up`, and the worker pods it asks for are containers, each on its own
    loopback address, removed once it scales them down."""
    body = yaml.safe_load((REPO_ROOT / "examples" / "raycluster-autoscaling.yaml").read_text())
    body["spec"]["autoscaling"]["idleTimeoutSeconds"] = 10
    cluster = tmp_path / "autoscaling.yaml"
    cluster.write_text(yaml.safe_dump(body))
    monkeypatch.setenv("AUTOSCALER_UPDATE_INTERVAL_S", "2")
    monkeypatch.setenv("DEMAND_TASK_SECONDS", "4")
    before = set(rayguard_containers())
    run = local_up(str(cluster), "python", "examples/autoscale_demand.py")
    assert run.finish() == 0, run.out[-6000:]
    out = run.out
    assert_up_to_peak_then_down(out, "cpu", peak=2)
    assert re.search(r"driver: 4 tasks done in \d+s on [12] node\(s\)", out), out[-6000:]
    assert set(run.containers()) == {"autoscaling-head-0", "autoscaling-worker-cpu-0", "autoscaling-worker-cpu-1"}
    assert "stopped and removed" in out  # the last may be removed by the end of the run instead
    assert "Every container and volume is gone." in out
    assert set(rayguard_containers()) - before == set()
    assert podman_cgroups() == []  # nor any cgroup of theirs, conmon's included

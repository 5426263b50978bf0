"""`rayguard top` against `rayguard local up`: real Ray, real cgroups, the command local up prints,
and an actor with a `memory=` quota listed with that quota and its memory."""

from __future__ import annotations

import json
import os
import queue
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from rayguard_node.cgroup.scratch import own_memory_cgroup, why_not_writable

pytestmark = pytest.mark.ray
ROOT = Path(__file__).resolve().parents[2]
MiB = 1 << 20
QUOTA = 300 * MiB
HELD = 100 * MiB

DRIVER = """
import os, time, ray
ray.init(address=os.environ["RAY_ADDRESS"], logging_level="ERROR", log_to_driver=False)

@ray.remote(num_cpus=0.1, memory=300 * 1024**2)
class Holder:
    def __init__(self):
        self.held = bytearray(100 * 1024**2)  # written: resident, not shared
    def pid(self):
        return os.getpid()

holder = Holder.options(name="holder").remote()
print("PID", ray.get(holder.pid.remote(), timeout=120), flush=True)
time.sleep(3600)  # alive until the test stops it
"""


class Lines:
    """A process's stdout, line by line, read on a thread (so a read can time out)."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.seen: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, args=(process,), daemon=True).start()

    def _read(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def until(self, prefix: str, timeout_s: float) -> str:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                line = self._queue.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no line starting {prefix!r} in {timeout_s}s:\n"
                                     + "\n".join(self.seen[-40:])) from None
            if line is None:
                raise AssertionError(f"output ended before {prefix!r}:\n" + "\n".join(self.seen[-40:]))
            self.seen.append(line)
            if line.strip().startswith(prefix):
                return line.strip()


def _stop(process: subprocess.Popen[str], sig: int, timeout_s: float) -> int:
    if process.poll() is None:
        process.send_signal(sig)
    try:
        return process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()


@pytest.fixture
def local_cluster(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], Lines]]:
    reason = why_not_writable()
    if reason is not None:
        pytest.skip(f"needs a writable memory cgroup (v1 or v2): {reason}")
    up = subprocess.Popen(
        [sys.executable, "-m", "rayguard_operator.cli", "local", "up",
         str(ROOT / "examples" / "raycluster-minimal.yaml"), "--duration", "240"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path)
    try:
        yield up, Lines(up)
    finally:
        _stop(up, signal.SIGINT, 60)


def _top(command: list[str], *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command + list(extra), capture_output=True, text=True, timeout=30)


def _holder_row(report: dict[str, Any], pid: int) -> dict[str, Any] | None:
    return next((row for row in report["rows"] if row["pid"] == pid), None)


@pytest.mark.timeout(240)
def test_top_lists_a_running_actor_with_its_quota_and_memory(local_cluster, tmp_path: Path) -> None:
    up, lines = local_cluster
    export = lines.until("export RAY_ADDRESS=", 150)
    top_line = lines.until("rayguard top ", 5)
    assert top_line.startswith("rayguard top --redis-url redis://127.0.0.1:")
    command = [sys.executable, "-m", "rayguard_operator.cli"] + shlex.split(top_line)[1:]
    env = dict(os.environ)
    env.update(dict(word.split("=", 1) for word in shlex.split(export)[1:]))
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    driver = subprocess.Popen([sys.executable, str(script)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    try:
        pid = int(Lines(driver).until("PID ", 120).split()[1])
        deadline, report, row = time.monotonic() + 30, {}, None
        while time.monotonic() < deadline:  # the quota comes from Ray's state API, polled every 2 s
            result = _top(command, "--once", "--json")
            assert result.returncode == 0, result.stderr
            report = json.loads(result.stdout)
            row = _holder_row(report, pid)
            if row is not None and row["quota_bytes"] is not None:
                break
            time.sleep(1)
        assert row is not None, report
        assert row["quota_bytes"] == QUOTA, row
        assert row["name"].startswith("ray::Holder"), row
        assert HELD <= row["rss_minus_shr_bytes"] < QUOTA, row
        assert row["peak_bytes"] >= row["rss_minus_shr_bytes"] and row["pod"] == "minimal-worker-cpu-0"
        nodes = {node["pod"]: node for node in report["nodes"]}
        assert set(nodes) == {"minimal-head-0", "minimal-worker-cpu-0"}, nodes
        worker = nodes["minimal-worker-cpu-0"]
        assert worker["limit_bytes"] == 2 << 30 and worker["working_set_bytes"] >= HELD
        assert worker["headroom_bytes"] == int(worker["threshold"] * worker["limit_bytes"]) - worker["working_set_bytes"]
        assert not worker["stale"]
        table = _top(command, "--once")
        assert table.returncode == 0, table.stderr
        assert "\x1b" not in table.stdout  # not a TTY: plain lines
        line = next(line for line in table.stdout.splitlines() if f" {pid} " in line)
        assert line.startswith("minimal-worker-cpu-0") and "300 MiB" in line and "ray::Holder" in line
        print(f"\n$ {shlex.join(['rayguard'] + command[3:])} --once\n{table.stdout}")
    finally:
        _stop(driver, signal.SIGTERM, 10)
    assert _stop(up, signal.SIGINT, 60) == 0, "\n".join(lines.seen[-40:])
    parent = own_memory_cgroup()
    assert parent is None or not [p for p in parent.iterdir() if p.name.startswith("rayguard-local-")]

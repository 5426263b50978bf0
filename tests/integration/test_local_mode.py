"""`rayguard local up` end to end: a real cluster, a hog, the Event text, and a clean exit."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from rayguard_node.cgroup.scratch import own_memory_cgroup, why_not_writable

pytestmark = pytest.mark.ray
ROOT = Path(__file__).resolve().parents[2]

HOG = """
import os, time, ray
ray.init(address=os.environ["RAY_ADDRESS"], logging_level="ERROR", log_to_driver=False)

@ray.remote(max_retries=0)
def allocate_memory():
    chunks = []
    while True:
        chunks.append(b"x" * (64 << 20))
        time.sleep(0.1)

@ray.remote
def fits():
    return len(b"x" * (100 << 20))

try:
    ray.get(allocate_memory.remote(), timeout=180)
except Exception as error:
    print("HOG", type(error).__name__, flush=True)
print("FITS", ray.get(fits.remote(), timeout=120), flush=True)
"""


def _rayguard_cgroups() -> list[str]:
    parent = own_memory_cgroup()
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("rayguard-local-")) if parent else []


def _ray_processes_in(pids_before: set[int]) -> list[str]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) not in pids_before:
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as handle:
                    cmd = handle.read().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            # Ray's processes name their temp dir (local mode makes /tmp/rg-*); the redis-server
            # and runtime of each pod were in its cgroup, which could only be removed empty.
            if "/tmp/rg-" in cmd and any(m in cmd for m in ("raylet", "gcs_server", "ray start")):
                found.append(f"{entry}: {cmd[:120]}")
    return found


def test_local_up_shows_the_kill_as_an_event_and_cleans_up(tmp_path):
    reason = why_not_writable()
    if reason is not None:
        pytest.skip(f"needs a writable memory cgroup (v1 or v2): {reason}")
    driver = tmp_path / "hog.py"
    driver.write_text(HOG)
    pids_before = {int(p) for p in os.listdir("/proc") if p.isdigit()}
    result = subprocess.run(
        [sys.executable, "-m", "rayguard_operator.cli", "local", "up",
         str(ROOT / "examples" / "raycluster-minimal.yaml"), "--", sys.executable, str(driver)],
        capture_output=True, text=True, timeout=420, cwd=tmp_path)
    out = result.stdout
    assert result.returncode == 0, out[-4000:] + result.stderr[-4000:]
    # Ray's own error line may land between the words of the driver's line.
    assert re.search(r"HOG\b.*?(WorkerCrashedError|OutOfMemoryError)", out, re.S), out[-4000:]
    assert "FITS 104857600" in out, out[-4000:]
    event_lines = [line for line in out.splitlines() if line.startswith("Event  Warning")]
    assert event_lines, out[-4000:]
    assert any(reason in event_lines[0] for reason in ("MemoryMonitorKill", "RayMemoryMonitorKill"))
    assert "pod/minimal-worker-cpu-0" in event_lines[0]
    assert "ray::allocate_memory" in out.split(event_lines[0], 1)[1]
    assert "Kernel OOM kills per pod cgroup: minimal-head-0 0, minimal-worker-cpu-0 0" in out
    assert _rayguard_cgroups() == []
    assert _ray_processes_in(pids_before) == []

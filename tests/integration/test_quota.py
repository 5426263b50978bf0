"""Actor heap quotas end to end, through `rayguard local up`: real Ray, real cgroups, the
state API on the head's dashboard, and the Event text the operator would post."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rayguard_node.cgroup.scratch import why_not_writable

pytestmark = pytest.mark.ray
ROOT = Path(__file__).resolve().parents[2]

DRIVER = """
import os, time, ray
ray.init(address=os.environ["RAY_ADDRESS"], logging_level="ERROR", log_to_driver=False)
MiB = 1 << 20

class Holder:
    def __init__(self):
        self.chunks = []
    def grow(self, mib):
        self.chunks.append(b"x" * (mib * MiB))
        return sum(len(c) for c in self.chunks) // MiB
    def pid(self):
        return os.getpid()

Quota = ray.remote(num_cpus=0.1, memory=300 * MiB)(Holder)
Free = ray.remote(num_cpus=0.1)(Holder)
big, modest, free = Quota.options(name="big").remote(), Quota.remote(), Free.remote()
print("PIDS", ray.get([a.pid.remote() for a in (big, modest, free)]), flush=True)
print("GREW", ray.get([modest.grow.remote(200), free.grow.remote(500), big.grow.remote(500)]), flush=True)
deadline = time.monotonic() + 40
outcome = "BIG_ALIVE"
while time.monotonic() < deadline:
    try:
        ray.get(big.pid.remote(), timeout=10)
    except Exception as error:
        outcome = "BIG_DIED " + type(error).__name__
        break
    time.sleep(0.5)
print(outcome, flush=True)
print("OTHERS", ray.get([modest.grow.remote(0), free.grow.remote(0)], timeout=30), flush=True)
"""


def local_up(tmp_path: Path, quota: dict[str, object]) -> str:
    reason = why_not_writable()
    if reason is not None:
        pytest.skip(f"needs a writable memory cgroup (v1 or v2): {reason}")
    body = yaml.safe_load((ROOT / "examples" / "raycluster-minimal.yaml").read_text())
    body["metadata"]["name"] = "quota"
    body["spec"]["memory"] = {"quota": quota}
    cluster, driver = tmp_path / "cluster.yaml", tmp_path / "driver.py"
    cluster.write_text(yaml.safe_dump(body))
    driver.write_text(DRIVER)
    result = subprocess.run(
        [sys.executable, "-m", "rayguard_operator.cli", "local", "up", str(cluster), "--",
         sys.executable, str(driver)], capture_output=True, text=True, timeout=420, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return result.stdout


def test_an_actor_over_its_quota_is_killed_and_the_others_survive(tmp_path):
    out = local_up(tmp_path, {"graceSeconds": 2})
    assert "GREW [200, 500, 500]" in out, out[-4000:]
    assert "BIG_DIED ActorDiedError" in out, out[-4000:]
    assert "OTHERS [200, 500]" in out, out[-4000:]  # within its quota, and without one
    events = [line for line in out.splitlines() if line.startswith("Event  Warning")]
    assert len(events) == 1 and "MemoryQuotaExceeded" in events[0] and "pod/quota-worker-cpu-0" in events[0], out
    message = out.split(events[0], 1)[1].strip().splitlines()[0]
    assert message.startswith("rayguard killed actor Holder 'big' (pid "), message
    assert "over its memory= quota of 300 MiB x 1.2 for " in message
    assert "Advice: raise the actor's memory= quota" in message


def test_warn_reports_without_killing(tmp_path):
    out = local_up(tmp_path, {"enforcement": "Warn", "graceSeconds": 1})
    assert "BIG_ALIVE" in out and "OTHERS [200, 500]" in out, out[-4000:]
    events = [line for line in out.splitlines() if line.startswith("Event  Warning")]
    assert len(events) == 1 and "MemoryQuotaExceeded" in events[0], out
    assert "not killed (enforcement Warn)" in out.split(events[0], 1)[1]

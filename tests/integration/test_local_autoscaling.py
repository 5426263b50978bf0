"""Autoscaling end to end in local mode: Ray's own autoscaler (the sidecar's code, run in the
`rayguard local up` process) scaling real worker pods (processes in their own cgroups) up for
pending demand and down when idle, and choosing the group whose planned heap fits a
`memory=` task."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rayguard_node.cgroup.scratch import own_memory_cgroup
from tests.scale_events import assert_up_to_peak_then_down, scale_events

pytestmark = pytest.mark.ray
ROOT = Path(__file__).resolve().parents[2]
# Ray's autoscaler updates every 5 s by default; 2 s keeps the test short. Ray reads it from
# the environment of the process the autoscaler runs in (here: `rayguard local up`).
FAST = {"AUTOSCALER_UPDATE_INTERVAL_S": "2"}

MEMORY_DRIVER = """
import os, ray
ray.init(address=os.environ["RAY_ADDRESS"], logging_level="ERROR", log_to_driver=False)
MiB = 1 << 20

@ray.remote(num_cpus=1, memory=600 * MiB)
def heavy():
    data = b"x" * (300 * MiB)
    node = ray.get_runtime_context().get_node_id()
    return len(data) // MiB, node

size, node = ray.get(heavy.remote(), timeout=240)
memory = next(n["Resources"]["memory"] for n in ray.nodes() if n["NodeID"] == node)
print(f"HEAVY ran with {size} MiB on a node with memory resource {memory / MiB:.0f} MiB", flush=True)
"""


def local_up(tmp_path: Path, body: dict, driver: list[str], env: dict[str, str]) -> str:
    cluster = tmp_path / "cluster.yaml"
    cluster.write_text(yaml.safe_dump(body))
    result = subprocess.run([sys.executable, "-m", "rayguard_operator.cli", "local", "up", str(cluster), "--", *driver],
                            capture_output=True, text=True, timeout=480, cwd=tmp_path, env={**os.environ, **FAST, **env})
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return result.stdout


def leftover_cgroups() -> list[str]:
    parent = own_memory_cgroup()
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("rayguard-local-")) if parent else []


def test_demand_scales_a_group_up_to_its_max_and_idleness_back_to_zero(tmp_path: Path) -> None:
    body = yaml.safe_load((ROOT / "examples" / "raycluster-autoscaling.yaml").read_text())
    body["spec"]["autoscaling"]["idleTimeoutSeconds"] = 10
    out = local_up(tmp_path, body, [sys.executable, str(ROOT / "examples" / "autoscale_demand.py")],
                   {"DEMAND_TASKS": "4", "DEMAND_TASK_SECONDS": "4", "DEMAND_WAIT_DOWN_S": "120"})
    assert "driver: 0 worker(s); submitting 4 tasks" in out, out[-4000:]
    assert re.search(r"driver: 4 tasks done in \d+s on [12] node\(s\)", out), out[-4000:]
    # Up for the pending tasks, to maxReplicas (2) and no further; down once idle, to minReplicas.
    assert_up_to_peak_then_down(out, "cpu", peak=2)
    assert re.search(r"driver: 0 worker\(s\) after \d+s idle", out), out[-4000:]
    # Both workers were there and are gone (stopped by the autoscaler, or by the end of the run).
    assert re.search(r"Kernel OOM kills per pod cgroup: .*autoscaling-worker-cpu-1 0", out), out[-4000:]
    assert "stopped and removed" in out
    assert "OOM event" in out and "0 OOM event(s) shown" in out
    assert leftover_cgroups() == []


def test_a_memory_task_scales_out_the_group_whose_planned_heap_fits_it(tmp_path: Path) -> None:
    body = yaml.safe_load((ROOT / "examples" / "raycluster-autoscaling.yaml").read_text())
    body["metadata"]["name"] = "heap-fit"
    body["spec"]["autoscaling"]["idleTimeoutSeconds"] = 600
    small = {"name": "small", "replicas": 0, "minReplicas": 0, "maxReplicas": 1,
             "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}
    big = {**small, "name": "big", "resources": {"limits": {"cpu": "1", "memory": "3Gi"}}}
    # `small` comes first and its 1 GiB limit is above the task's 600 MiB: advertising the
    # limit (as KubeRay does) would send the task there; its planned heap is ~360 MiB.
    body["spec"]["workerGroups"] = [small, big]
    driver = tmp_path / "driver.py"
    driver.write_text(MEMORY_DRIVER)
    out = local_up(tmp_path, body, [sys.executable, str(driver)], {})
    assert scale_events(out) == ["group big: 0 -> 1 (pending demand)"], out[-4000:]
    ran = re.search(r"HEAVY ran with 300 MiB on a node with memory resource (\d+) MiB", out)
    assert ran and 600 <= int(ran.group(1)) < 3 * 1024, out[-4000:]
    assert "0 OOM event(s) shown" in out

"""A real two-node Ray cluster on loopback, each node under `rayguard-node run`."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from testkit.nodes import cleanup, run_driver, start_node

from .cgroups import make_cgroup, scratch_parent  # noqa: F401  (fixtures)

pytestmark = pytest.mark.ray
GiB = 1024**3

PLACEMENT_DRIVER = """
import json, time, ray
ray.init(address={address!r}, logging_level="ERROR", log_to_driver=False)
deadline = time.monotonic() + 60
while len([n for n in ray.nodes() if n["Alive"]]) < 2 and time.monotonic() < deadline:
    time.sleep(0.5)  # the worker's raylet may still be registering with the GCS

@ray.remote
def where():
    return ray.get_runtime_context().get_node_id()

nodes = {{n["NodeID"]: n for n in ray.nodes() if n["Alive"]}}
ran_on = ray.get([where.remote() for _ in range(20)], timeout=120)
print(json.dumps({{
    "cpus": {{node_id: n["Resources"].get("CPU", 0) for node_id, n in nodes.items()}},
    "head": [node_id for node_id, n in nodes.items() if n["Resources"].get("node:__internal_head__")],
    "ran_on": sorted(set(ran_on)),
}}))
"""


def test_head_runs_no_tasks_and_worker_joins_with_the_token(make_cgroup):
    head = start_node("head", make_cgroup(2 * GiB))
    worker = None
    try:
        head.wait_ready()
        worker = start_node("worker", make_cgroup(2 * GiB), head=head, env={"RAYGUARD_NUM_CPUS": "2"})
        worker.wait_ready()
        result = run_driver(head, PLACEMENT_DRIVER.format(address=head.address))
        assert result.returncode == 0, result.stderr[-3000:]
        seen = json.loads(result.stdout.strip().splitlines()[-1])
        assert len(seen["cpus"]) == 2, seen
        (head_id,) = seen["head"]
        assert seen["cpus"][head_id] == 0, "the head must advertise num-cpus=0"
        worker_ids = set(seen["cpus"]) - {head_id}
        assert set(seen["ran_on"]) == worker_ids, "every task must run on the worker"
    finally:
        if worker is not None:
            cleanup(worker)
        cleanup(head)


def test_worker_with_a_wrong_token_is_refused_clearly(make_cgroup, tmp_path):
    head = start_node("head", make_cgroup(2 * GiB))
    try:
        head.wait_ready()
        wrong = tmp_path / "wrong-token"
        wrong.write_text("0" * 64)
        worker = start_node("worker", make_cgroup(2 * GiB), head=head,
                            env={"RAYGUARD_RAY_AUTH_TOKEN_FILE": str(wrong)})
        try:
            status = worker.process.wait(timeout=90)
            assert status == 3
            assert "the head refused this node's Ray auth token" in worker.log()
            assert str(wrong) in worker.log()
        finally:
            cleanup(worker)
    finally:
        cleanup(head)


def test_worker_without_a_token_file_refuses_to_start(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "rayguard_node", "run", "--role", "worker", "--head-address",
         "127.0.0.1:1", "--limit-bytes", "2Gi", "--ray-temp-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=60,
        env={"PATH": "/usr/bin:/bin"})
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("rayguard-node: error: invalid --ray-auth-token-file")
    assert "Traceback" not in result.stderr

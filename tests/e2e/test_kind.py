"""End to end on kind: the operator, a real RayCluster, and an OOM kill surfaced in Kubernetes.

Runs against the kind cluster `make kind-up` sets up (see conftest.py; without docker, kind,
kubectl, helm or that cluster, these tests skip and say what is missing):

- the CRD is installed and RayCluster `demo` is Ready, every desired worker ready;
- its head pod runs no tasks (RAYGUARD_NUM_CPUS=0) and its /dev/shm is a memory emptyDir
  sized to exactly the object store in status.memoryPlan.head;
- examples/memory_hog.py, run as a driver inside the head pod, loses only the task that
  outgrows its worker, and the job finishes;
- that kill shows up as a MemoryMonitorKill or RayMemoryMonitorKill Event on the RayCluster,
  naming allocate_memory, and in status.oom.total.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from tests.e2e.conftest import Kube

# The first test's setup may run scripts/kind-e2e.sh up (RAYGUARD_E2E=1 and no cluster yet:
# image builds, up to an hour), far past the project's 600 s default; every wait inside has
# its own, shorter bound.
E2E_TEST_TIMEOUT_S = 90 * 60
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(E2E_TEST_TIMEOUT_S)]

MEMORY_HOG = Path(__file__).resolve().parents[2] / "examples" / "memory_hog.py"

CLUSTER_LABEL = "rayguard.dev/cluster"
NODE_TYPE_LABEL = "rayguard.dev/node-type"
CONTAINER = "ray-node"
HEAD_PLAN_KEY = "head"  # the head's key in status.memoryPlan
SHM_PATH = "/dev/shm"
DEFAULT_TOKEN_FILE = "/etc/rayguard/secrets/ray-auth-token"

READY_TIMEOUT_S = 300  # the cluster should already be Ready; allow for a pod that restarts
DRIVER_TIMEOUT_S = 600
SURFACING_TIMEOUT_S = 180  # report -> head Redis stream -> operator -> Event and status
OOM_REASONS = ("MemoryMonitorKill", "RayMemoryMonitorKill")
VICTIM = "allocate_memory"

# What examples/memory_hog.py prints when the hog was stopped and the job went on.
HOG_KILLED = "allocate_memory was killed after"
HOG_FINISHED = "the hog finished"
JOB_DONE = "done: 8 of 8 tasks that fit finished"


def _condition(body: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in (body.get("status") or {}).get("conditions") or [] if c.get("type") == kind), {})


def _is_ready(body: dict[str, Any]) -> bool:
    status = body.get("status") or {}
    ready = _condition(body, "Ready")
    return (status.get("phase") == "Ready" and ready.get("status") == "True"
            and status.get("observedGeneration") == body["metadata"].get("generation"))


def _ready_cluster(kube: Kube) -> dict[str, Any]:
    return kube.poll(kube.raycluster, _is_ready, READY_TIMEOUT_S, interval=3)


def _container(pod: dict[str, Any], name: str = CONTAINER) -> dict[str, Any]:
    found = [c for c in pod["spec"]["containers"] if c["name"] == name]
    names = [c["name"] for c in pod["spec"]["containers"]]
    assert found, f"pod {pod['metadata']['name']} has no container {name}: {names}"
    return found[0]


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env") or []}


def _restarts(kube: Kube) -> dict[str, int]:
    pods = kube.json("get", "pods", "-n", kube.namespace, "-l", f"{CLUSTER_LABEL}={kube.name}")["items"]
    return {f"{p['metadata']['name']}/{s['name']}": int(s.get("restartCount") or 0)
            for p in pods for s in (p.get("status") or {}).get("containerStatuses") or []}


def _oom_events(kube: Kube) -> list[dict[str, Any]]:
    """Events about the RayCluster itself (not a pod that shares its name)."""
    items = kube.json("get", "events", "-n", kube.namespace,
                      "--field-selector", f"involvedObject.name={kube.name}")["items"]
    return [e for e in items if (e.get("involvedObject") or {}).get("kind") == "RayCluster"]


def _event_counts(events: list[dict[str, Any]]) -> dict[str, int]:
    return {e["metadata"]["uid"]: int(e.get("count") or 1) for e in events}


def _oom_total(body: dict[str, Any]) -> int:
    return int(((body.get("status") or {}).get("oom") or {}).get("total") or 0)


def _head_pod(kube: Kube, body: dict[str, Any]) -> dict[str, Any]:
    name = ((body.get("status") or {}).get("head") or {}).get("podName")
    assert name, f"status.head.podName is not set: status.head = {(body.get('status') or {}).get('head')}"
    return kube.json("get", "pod", name, "-n", kube.namespace)


def test_crd_installed_and_cluster_ready(kube: Kube) -> None:
    crd = kube.json("get", "crd", "rayclusters.rayguard.dev")
    established = next((c for c in crd["status"].get("conditions") or [] if c["type"] == "Established"), {})
    assert established.get("status") == "True", f"the CRD is not Established: {crd['status'].get('conditions')}"
    assert "rgc" in crd["spec"]["names"].get("shortNames", []), crd["spec"]["names"]
    v1 = next((v for v in crd["spec"]["versions"] if v["name"] == "v1"), None)
    assert v1 is not None and v1["served"] and v1["storage"], crd["spec"]["versions"]
    assert "status" in (v1.get("subresources") or {}), "the CRD has no status subresource"

    body = _ready_cluster(kube)
    status = body.get("status") or {}
    assert status.get("phase") == "Ready", f"phase is {status.get('phase')!r}, conditions {status.get('conditions')}"
    ready = _condition(body, "Ready")
    assert ready.get("status") == "True", f"condition Ready: {ready}"
    assert status.get("observedGeneration") == body["metadata"]["generation"], (
        f"status.observedGeneration {status.get('observedGeneration')} != generation {body['metadata']['generation']}")
    for kind in ("SpecValid", "HeadReady", "WorkersReady"):
        assert _condition(body, kind).get("status") == "True", f"condition {kind}: {_condition(body, kind)}"
    desired = sum(int(g.get("replicas") or 0) for g in body["spec"]["workerGroups"])
    assert desired >= 1, "the demo needs at least one worker for the memory hog"
    assert status.get("workersDesired") == desired, f"workersDesired {status.get('workersDesired')} != spec {desired}"
    assert status.get("workersReady") == status.get("workersDesired"), (
        f"workersReady {status.get('workersReady')} != workersDesired {status.get('workersDesired')};"
        f" groups {status.get('workerGroups')}")
    assert (status.get("head") or {}).get("ready") is True, f"status.head: {status.get('head')}"


def test_head_pod_runs_no_tasks_and_shm_matches_plan(kube: Kube) -> None:
    from rayguard_node.sizing.quantity import parse_bytes  # imported here: a skipped run stays fast

    body = _ready_cluster(kube)
    pod = _head_pod(kube, body)
    name = pod["metadata"]["name"]
    labels = pod["metadata"].get("labels") or {}
    assert labels.get(CLUSTER_LABEL) == kube.name and labels.get(NODE_TYPE_LABEL) == "head", labels
    container = _container(pod)

    env = _env(container)
    assert env.get("RAYGUARD_NUM_CPUS") == "0", f"head pod {name}: RAYGUARD_NUM_CPUS={env.get('RAYGUARD_NUM_CPUS')!r}"

    plan = ((body.get("status") or {}).get("memoryPlan") or {}).get(HEAD_PLAN_KEY)
    assert plan, f"status.memoryPlan has no {HEAD_PLAN_KEY!r}: {(body.get('status') or {}).get('memoryPlan')}"
    object_store = int(plan["objectStoreBytes"])
    assert object_store > 0, plan
    assert plan.get("numCpus", 0) == 0, f"status.memoryPlan.head.numCpus = {plan.get('numCpus')}"

    mounts = [m for m in container.get("volumeMounts") or [] if m.get("mountPath") == SHM_PATH]
    assert len(mounts) == 1, f"head pod {name}: mounts at {SHM_PATH}: {mounts}"
    volume = next((v for v in pod["spec"].get("volumes") or [] if v["name"] == mounts[0]["name"]), None)
    assert volume is not None, f"head pod {name}: no volume {mounts[0]['name']}"
    empty_dir = volume.get("emptyDir")
    assert empty_dir is not None, f"{SHM_PATH} is not an emptyDir: {volume}"
    assert empty_dir.get("medium") == "Memory", f"{SHM_PATH} emptyDir is not memory-backed: {empty_dir}"
    assert "sizeLimit" in empty_dir, f"{SHM_PATH} emptyDir has no sizeLimit: {empty_dir}"
    size_limit = parse_bytes(empty_dir["sizeLimit"], "sizeLimit")
    assert size_limit == object_store, (
        f"{SHM_PATH} sizeLimit {empty_dir['sizeLimit']} ({size_limit} bytes) != "
        f"status.memoryPlan.head.objectStoreBytes {object_store}")


@dataclass(frozen=True)
class HogRun:
    returncode: int | None  # None: the driver timed out
    stdout: str
    stderr: str
    head_pod: str
    oom_total_before: int
    events_before: dict[str, int]  # uid -> count of the RayCluster's events before the run
    restarts_before: dict[str, int]


@pytest.fixture(scope="module")
def hog_run(kube: Kube) -> HogRun:
    """examples/memory_hog.py, once, as a driver inside the head pod (fed on stdin). The head
    runs no tasks, so every task lands on a worker; the driver authenticates with the token
    the operator mounted into the pod."""
    body = _ready_cluster(kube)
    assert _is_ready(body), f"RayCluster {kube.name} is not Ready: {(body.get('status') or {}).get('conditions')}"
    pod = _head_pod(kube, body)
    head = pod["metadata"]["name"]
    token_file = _env(_container(pod)).get("RAYGUARD_RAY_AUTH_TOKEN_FILE") or DEFAULT_TOKEN_FILE
    before = _oom_total(body)
    events_before = _event_counts(_oom_events(kube))
    restarts_before = _restarts(kube)

    argv = ["exec", "-i", "-n", kube.namespace, head, "-c", CONTAINER, "--",
            "env", "RAY_ADDRESS=auto", "RAY_AUTH_MODE=token", f"RAY_AUTH_TOKEN_PATH={token_file}",
            "python", "-u", "-"]
    started = time.monotonic()
    try:
        done = kube.run(*argv, input=MEMORY_HOG.read_text(), timeout=DRIVER_TIMEOUT_S, check=False)
        returncode, stdout, stderr = done.returncode, done.stdout, done.stderr
    except AssertionError as error:  # conftest's CommandFailed: the driver timed out
        returncode, stdout, stderr = None, "", str(error)
    print(f"driver in pod {head}: exit status {returncode} after {time.monotonic() - started:.0f}s\n"
          f"--- stdout\n{stdout}\n--- stderr (tail)\n{stderr[-4000:]}")
    return HogRun(returncode, stdout, stderr, head, before, events_before, restarts_before)


def _driver_output(run: HogRun) -> str:
    return (f"driver in pod {run.head_pod}, exit status {run.returncode}\n--- stdout\n{run.stdout}"
            f"\n--- stderr (tail)\n{run.stderr[-4000:]}")


def test_memory_hog_is_killed_and_the_job_finishes(kube: Kube, hog_run: HogRun) -> None:
    assert hog_run.returncode == 0, _driver_output(hog_run)
    assert HOG_FINISHED not in hog_run.stdout, "the hog was never stopped\n" + _driver_output(hog_run)
    assert HOG_KILLED in hog_run.stdout, _driver_output(hog_run)
    assert JOB_DONE in hog_run.stdout, _driver_output(hog_run)
    # Only the task was lost: no container of the cluster restarted or was replaced (the
    # kernel did not OOM-kill a whole pod).
    after = _restarts(kube)
    restarted = {k: (hog_run.restarts_before[k], v) for k, v in after.items()
                 if k in hog_run.restarts_before and v > hog_run.restarts_before[k]}
    assert not restarted, f"containers restarted during the run (before, after): {restarted}"
    gone = sorted(set(hog_run.restarts_before) - set(after))
    assert not gone, f"containers gone after the run (pods replaced?): {gone}"


def _new_oom_event(run: HogRun, events: list[dict[str, Any]]) -> dict[str, Any] | None:
    """An OOM Event naming the victim that is new since the run started, or counts more."""
    for event in events:
        if event.get("reason") not in OOM_REASONS or VICTIM not in (event.get("message") or ""):
            continue
        uid, count = event["metadata"]["uid"], int(event.get("count") or 1)
        if uid not in run.events_before or count > run.events_before[uid]:
            return event
    return None


def test_oom_kill_is_an_event_and_counted_in_status(kube: Kube, hog_run: HogRun) -> None:
    events = kube.poll(lambda: _oom_events(kube), lambda found: _new_oom_event(hog_run, found) is not None,
                       SURFACING_TIMEOUT_S, interval=3)
    event = _new_oom_event(hog_run, events)
    seen = [(e.get("type"), e.get("reason"), e.get("count"), (e.get("message") or "")[:200]) for e in events]
    assert event is not None, (
        f"no new {' or '.join(OOM_REASONS)} Event naming {VICTIM} on RayCluster {kube.name} within"
        f" {SURFACING_TIMEOUT_S}s; its events: {seen}\n" + _driver_output(hog_run))
    assert event.get("type") == "Warning", event

    body = kube.poll(kube.raycluster, lambda b: _oom_total(b) > hog_run.oom_total_before, SURFACING_TIMEOUT_S)
    oom = (body.get("status") or {}).get("oom") or {}
    assert _oom_total(body) >= 1, f"status.oom: {oom}"
    assert _oom_total(body) > hog_run.oom_total_before, (
        f"status.oom.total {_oom_total(body)} did not rise from {hog_run.oom_total_before}: {oom}")

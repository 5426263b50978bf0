"""The replica-scale case of `bench.reconcile`: one RayCluster of G groups of R replicas.

One cell: a fresh emulator and a fresh `rayguard operator --standalone`, with pod creates
batched (the operator as it is, `MAX_POD_CREATES_PER_PASS` per pass) or unbounded (the
operator before batching: every missing pod planned, built and created in one pass). The bench
creates the RayCluster and measures:

- *pods s*: from the create until the last of the 1 + G x R pods was created;
- *idle s*: until the operator is idle again: the pod events of the created pods have all
  been handled (kopf logged no `pod_event` handler, nor the syncer an event's pass, for a few
  seconds) and nobody has written for as long; the time of the last write. The time to converge;
- *passes*: reconcile passes (the syncer logs one line for each, with its pod creates), and
  the most pod creates of one of them (the largest batch);
- *status*: the status writes, and `workersDesired` at the end;
- *peak RSS*: the operator process's VmHWM at the end.

There is no kubelet: pods stay without a status, which is what a pass sees while a large
group is being created.
"""

from __future__ import annotations

import copy
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kubernetes.client

from bench.harness.emulator import NS, bench_client, new_emulator
from bench.harness.operator_process import EVENT_PASS, FRESH_PASS, Operator, cluster_body, wait_watching
from bench.harness.output import column_table, seconds
from bench.harness.procfs import cpu_seconds_or_zero
from bench.harness.waiting import wait_quiet_log, wait_until
from testkit.kube import EmulatorServer, write_kubeconfig
from testkit.kube.emulator import WRITE_METHODS

QUIET_S = 3.0
NAME = "scale"


@dataclass
class ReplicaResult:
    groups: int
    replicas: int
    batched: bool
    pods_s: float | None = None
    idle_s: float | None = None
    passes: int = 0
    largest_batch: int = 0
    status_writes: int = 0
    workers_desired: int | None = None
    peak_rss: int | None = None
    operator_cpu_s: float = 0.0
    reached: str = ""
    problems: list[str] = field(default_factory=list)

    @property
    def pods(self) -> int:
        return 1 + self.groups * self.replicas


def replica_body(groups: int, replicas: int) -> dict[str, Any]:
    body = cluster_body(NAME, replicas)
    group = body["spec"]["workerGroups"][0]
    body["spec"]["workerGroups"] = [dict(copy.deepcopy(group), name=f"g{i:02d}", replicas=replicas,
                                         maxReplicas=max(replicas, 1)) for i in range(groups)]
    return body


def _largest_batch(pass_lines: list[str]) -> int:
    """The most pod creates of one pass (`..., N pod creates` ends each pass line)."""
    return max((int(m.group(1)) for line in pass_lines if (m := re.search(r"(\d+) pod creates", line))),
               default=0)


def run_replica_cell(groups: int, replicas: int, batched: bool, resync_s: float, workdir: Path,
                     timeout_s: float) -> ReplicaResult:
    result = ReplicaResult(groups, replicas, batched)
    tag = f"{groups}x{replicas}-{'batched' if batched else 'unbounded'}"
    emulator = new_emulator()
    with EmulatorServer(emulator) as server:
        kubeconfig = write_kubeconfig(workdir / f"kubeconfig-{tag}", server.url)
        client = bench_client(server.url)
        custom = kubernetes.client.CustomObjectsApi(client)
        operator = Operator(kubeconfig, workdir / f"operator-{tag}.log", resync_s, unbounded_batches=not batched)
        try:
            wait_watching(emulator, operator)

            def pods() -> int:
                def count() -> int:
                    return sum(1 for (resource, _ns, _name), obj in list(emulator._objects.items())
                               if resource.plural == "pods" and not obj.deleted)
                return int(server.call(count, timeout=30))

            t0 = time.monotonic()
            custom.create_namespaced_custom_object("rayguard.dev", "v1", NS, "rayclusters",
                                                   replica_body(groups, replicas))
            done = wait_until(lambda: pods() >= result.pods, timeout_s, 0.5)
            creates = [r.time for r in emulator.since(t0) if r.method == "POST" and r.resource == "pods"
                       and r.origin == "operator"]
            if not done:
                result.reached = f"after {timeout_s:.0f} s: {pods()}/{result.pods} pods"
                return result
            result.pods_s = max(creates) - t0
            left = max(60.0, timeout_s - (time.monotonic() - t0))
            if not all(wait_quiet_log(operator.log_path, marker, QUIET_S, left)
                       for marker in ("Handler 'pod_event'", *EVENT_PASS)):
                result.reached = f"pods created; pod events still being handled after {timeout_s:.0f} s"
            else:
                last_write = max((r.time for r in emulator.since(t0)
                                  if r.method in WRITE_METHODS and r.origin != "bench"), default=t0)
                result.idle_s = last_write - t0
            log = emulator.since(t0)
            pass_lines = operator.passes((*EVENT_PASS, FRESH_PASS))
            result.passes = len(pass_lines)
            result.largest_batch = _largest_batch(pass_lines)
            result.status_writes = sum(1 for r in log if r.resource == "rayclusters/status" and r.origin == "operator")
            status = custom.get_namespaced_custom_object("rayguard.dev", "v1", NS, "rayclusters", NAME).get("status")
            result.workers_desired = (status or {}).get("workersDesired")
            result.peak_rss = operator.peak_rss()
            result.operator_cpu_s = cpu_seconds_or_zero(operator.process.pid)
        finally:
            operator.stop()
            client.close()
            result.problems = operator.problems()
    return result


def default_cells(caps: tuple[int, int], groups: tuple[int, ...] = (1, 4, 32),
                  replicas: tuple[int, ...] = (100, 1000)) -> list[tuple[int, int]]:
    """G x R for each pair, each R lowered to what the caps (per group, per cluster) allow."""
    group_cap, cluster_cap = caps
    cells: list[tuple[int, int]] = []
    for r in replicas:
        for g in groups:
            cell = (g, min(r, group_cap, cluster_cap // g))
            if cell not in cells:
                cells.append(cell)
    return cells


def replica_table(results: list[ReplicaResult]) -> str:
    header = ["groups x replicas", "pods", "creates", "most creates in a pass", "pods created s", "idle s",
              "passes", "status writes", "workersDesired", "peak RSS MiB", "operator CPU s"]
    rows = [[f"{r.groups} x {r.replicas}", str(r.pods), "batched" if r.batched else "unbounded",
             str(r.largest_batch), seconds(r.pods_s), seconds(r.idle_s), str(r.passes), str(r.status_writes),
             str(r.workers_desired), f"{r.peak_rss / 1024**2:.0f}" if r.peak_rss else "-",
             f"{r.operator_cpu_s:.0f}"] for r in results]
    lines = [column_table(header, rows)]
    for r in results:
        if r.reached:
            lines.append(f"{r.groups} x {r.replicas} ({'batched' if r.batched else 'unbounded'}): {r.reached}")
        for line in r.problems[:3]:
            lines.append(f"{r.groups} x {r.replicas}: operator log: {line[:200]}")
    return "\n".join(lines)

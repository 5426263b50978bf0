"""The operator at scale against the Kubernetes API emulator, in one run, with its cache off
(before: every pass reads the API, each pod event runs its own pass) and on (passes read the
watches' cache, pod events coalesced per cluster), side by side.

For 10, 50 and 200 RayClusters of 10 workers each (13 children: Secret, head Service, head
pod, 10 workers), it measures:

- time to converge: from the first create until every cluster's children exist, then, after
  the bench has marked every pod Ready (there is no kubelet), until every status says Ready;
- API reads per cluster to Ready (GETs that are not watches, from the first create until the
  passes that the Ready events triggered are done), by who made them: event-driven passes,
  the resync timer's full reads, and other (the OOM report follower, which reads the head
  Service and the Secret each time it tries to reach the head's Redis; here it never can);
- reconcile passes per cluster that events triggered (the syncer logs one line per pass);
- API writes per cluster created, split into children, status, Events and other (kopf's
  own bookkeeping, and any other write);
- writes during a no-op resync of the converged clusters (target: 0);
- the operator's peak RSS (VmHWM of the operator process).

The operator runs as `rayguard operator --standalone`, a separate process, so its RSS is its
own; the cache is switched off by setting `rayguard_operator.reconcile.cache.ENABLED` before
kopf imports the handlers (bench/harness/operator_process.py). The emulator runs in this
process and tells requesters apart by User-Agent: the bench's own requests (creating clusters,
marking pods Ready) are left out; kopf's are "other"; the operator names the part of itself
that made each request (`rayguard_operator/kube/caller.py`).
A naive reconcile that PUTs every child and the status on every pass is computed, not run.

The emulator is the tests' (testkit.kube) with the same behaviour but three shortcuts, so that
at 200 clusters it is the operator that gets measured: kmock's request log keeps only the
requests in flight (it walks the whole log to route each request), and objects are found by
key, and listed per resource and per cluster label, instead of by scanning every object
(bench/harness/emulator.py).

The replica-scale case (`--case replicas`, bench/harness/replica_scale.py) is one RayCluster
of 1, 4 and 32 groups of 100 and 1000 replicas, each lowered to what the scale caps allow,
created by the operator as it is (pod creates batched, `MAX_POD_CREATES_PER_PASS` per pass) and
by the operator with no bound (every pod in the first pass, as before batching): time to
converge, passes, the largest batch, and the operator's peak RSS.

Run, from the repository root:
  .venv/bin/python -m bench.reconcile [--scales 10,50,200] [--workers 10] [--resync 30] [--cache off,on]
  .venv/bin/python -m bench.reconcile --case replicas [--cells 1x100,4x100,...] [--modes unbounded,batched]
      [--cell-timeout 600]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import kubernetes.client

from rayguard_operator.reconcile.actions import MAX_POD_CREATES_PER_PASS
from rayguard_operator.spec.model import MAX_CLUSTER_WORKERS, MAX_GROUP_REPLICAS

from bench.harness.emulator import MERGE, NS, RecordingEmulator, Request, bench_client, new_emulator
from bench.harness.operator_process import EVENT_PASS, Operator, cluster_body, wait_watching
from bench.harness.output import load_line
from bench.harness.procfs import cpu_seconds_or_zero
from bench.harness.reconcile_report import ScaleResult, details, table
from bench.harness.replica_scale import ReplicaResult, default_cells, replica_table, run_replica_cell
from bench.harness.waiting import wait_until
from testkit.kube import EmulatorServer, write_kubeconfig
from testkit.kube.emulator import WRITE_METHODS

PHASE_TIMEOUT_S = 600.0
QUIET_S = 3.0


def classify(request: Request) -> str:
    """children | status | events | kopf | other:<method resource>."""
    if request.origin == "kopf":
        return "kopf"
    resource = request.resource
    if resource == "events":
        return "events"
    if resource == "rayclusters/status":
        return "status"
    if request.method == "POST" and resource in ("secrets", "services", "pods"):
        return "children"
    if request.method == "PATCH" and resource == "services":  # server-side apply creates the head Service
        return "children"
    return f"other:{request.method} {resource}"


def operator_writes(requests: list[Request]) -> Counter[str]:
    return Counter(classify(r) for r in requests if r.method in WRITE_METHODS and r.origin != "bench")


def operator_reads(requests: list[Request]) -> Counter[str]:
    """The operator's reads (not watches) by the part of it that made them; kopf's as `kopf`."""
    return Counter("kopf" if r.origin == "kopf" else r.part for r in requests
                   if r.method == "GET" and r.origin != "bench")


def wait_quiet(emulator: RecordingEmulator, quiet_s: float, timeout: float) -> bool:
    """Until neither the operator nor kopf has written for `quiet_s`."""
    def quiet() -> bool:
        last = next((r.time for r in reversed(list(emulator.log))
                     if r.method in WRITE_METHODS and r.origin != "bench"), 0.0)
        return time.monotonic() - last >= quiet_s
    return wait_until(quiet, timeout, 0.25)


def wait_drained(operator: Operator, quiet_s: float, timeout: float) -> float:
    """Until kopf has logged no pod_event handler, nor the syncer an event's pass, for `quiet_s`;
    returns when the last of them was seen (time.monotonic())."""
    markers = ("Handler 'pod_event'", *EVENT_PASS)
    state = {"count": -1, "since": time.monotonic()}

    def quiet() -> bool:
        text = operator.log_path.read_text(errors="replace")
        count = sum(text.count(m) for m in markers)
        if count != state["count"]:
            state["count"], state["since"] = count, time.monotonic()
        return time.monotonic() - state["since"] >= quiet_s
    wait_until(quiet, timeout, 0.5)
    return state["since"]


def run_scale(clusters: int, workers: int, resync_s: float, workdir: Path, cached: bool) -> ScaleResult:
    result = ScaleResult(clusters, workers, cached)
    names = [f"c{i:03d}" for i in range(clusters)]
    children = 3 + workers  # secret, service, head
    tag = f"{clusters}-{result.mode}"
    emulator = new_emulator()
    wall0, cpu0 = time.monotonic(), time.process_time()
    with EmulatorServer(emulator) as server:
        kubeconfig = write_kubeconfig(workdir / f"kubeconfig-{tag}", server.url)
        client = bench_client(server.url)
        custom, core = kubernetes.client.CustomObjectsApi(client), kubernetes.client.CoreV1Api(client)
        operator = Operator(kubeconfig, workdir / f"operator-{tag}.log", resync_s, cached=cached)
        try:
            wait_watching(emulator, operator)

            def snapshot() -> dict[str, tuple[int, str]]:
                """cluster -> (children that exist, status.phase)."""
                def read() -> dict[str, tuple[int, str]]:
                    count: Counter[str] = Counter()
                    phases: dict[str, str] = {}
                    for (resource, _ns, _name), obj in emulator._objects.items():
                        if obj.deleted:
                            continue
                        raw = obj.raw
                        if resource.plural == "rayclusters":
                            phases[raw["metadata"]["name"]] = (raw.get("status") or {}).get("phase", "")
                        elif resource.plural in ("pods", "services", "secrets"):
                            owner = ((raw["metadata"].get("labels") or {}).get("rayguard.dev/cluster"))
                            if owner:
                                count[owner] += 1
                    return {n: (count[n], phases.get(n, "")) for n in names}
                return server.call(read, timeout=30)

            # 1. create every cluster, wait for every child
            t0, log0 = time.monotonic(), operator.log_size()
            for name in names:
                custom.create_namespaced_custom_object("rayguard.dev", "v1", NS, "rayclusters",
                                                       cluster_body(name, workers))
            done = wait_until(lambda: all(c == children for c, _ in snapshot().values()), PHASE_TIMEOUT_S, 0.2)
            created = [r.time for r in emulator.since(t0) if classify(r) == "children"]
            if not done:
                state = snapshot()
                result.reached = (f"after {PHASE_TIMEOUT_S:.0f} s: {sum(1 for c, _ in state.values() if c == children)}"
                                  f"/{clusters} clusters had all children")
                return result
            result.pods_s = max(created) - t0
            wait_until(lambda: all(p for _, p in snapshot().values()), 60, 0.2)
            wait_quiet(emulator, QUIET_S, 120)

            # 2. mark every pod Ready, as a kubelet would, and wait for every status to say Ready
            t1, log1 = time.monotonic(), operator.log_size()
            result.create_writes = operator_writes(emulator.since(t0, t1))
            result.create_passes = len(operator.passes(EVENT_PASS, log0, log1))
            pods = [p["metadata"]["name"] for p in json.loads(core.list_namespaced_pod(
                NS, label_selector="rayguard.dev/cluster", _preload_content=False).data)["items"]]
            status = {"status": {"phase": "Running", "podIP": "10.0.0.1",
                                 "conditions": [{"type": "Ready", "status": "True"}]}}

            def mark(pod: str) -> None:
                core.patch_namespaced_pod_status(pod, NS, status, _content_type=MERGE)
            with ThreadPoolExecutor(4) as pool:
                list(pool.map(mark, sorted(pods)))
            result.mark_ready_s = time.monotonic() - t1
            done = wait_until(lambda: all(p == "Ready" for _, p in snapshot().values()), PHASE_TIMEOUT_S, 0.2)
            if not done:
                state = snapshot()
                result.reached = (f"after {PHASE_TIMEOUT_S:.0f} s: {sum(1 for _, p in state.values() if p == 'Ready')}"
                                  f"/{clusters} clusters Ready")
                return result
            status_writes = [r.time for r in emulator.since(t1) if classify(r) == "status"]
            result.ready_s = max(status_writes) - t1
            wait_quiet(emulator, QUIET_S, 120)
            # Each pod event queues a pass over its cluster, and those may still be running: wait
            # until kopf has logged no pod_event handler, nor the syncer an event's pass, for a while.
            t_drain = time.monotonic()
            result.drain_s = wait_drained(operator, QUIET_S, PHASE_TIMEOUT_S) - t_drain

            # 3. a no-op resync: every cluster passed over at least once, nothing to change
            t2, log2 = time.monotonic(), operator.log_size()
            result.ready_writes = operator_writes(emulator.since(t1, t2))
            result.ready_passes = len(operator.passes(EVENT_PASS, log1, log2))
            result.reads = operator_reads(emulator.since(t0, t2))

            def passes() -> Counter[str]:
                return Counter(r.path.rsplit("/", 1)[-1] for r in emulator.cluster_reads(t2))
            wait_until(lambda: len(passes()) == clusters and time.monotonic() - t2 >= resync_s,
                       max(60.0, 10 * resync_s), 0.25)
            time.sleep(1.0)  # let the last passes finish their writes, if any
            t3 = time.monotonic()
            result.noop_writes = operator_writes(emulator.since(t2, t3))
            result.noop_passes = sum(passes().values())
            result.noop_window_s = t3 - t2
            times: dict[str, list[float]] = {}
            for r in emulator.cluster_reads(t2 - 2 * resync_s, t3):
                times.setdefault(r.path.rsplit("/", 1)[-1], []).append(r.time)
            firsts = [min((t for t in ts if t >= t2), default=t3) - t2 for ts in times.values()]
            result.noop_first_pass_s = max(firsts, default=0.0)
            result.noop_longest_gap_s = max((b - a for ts in times.values() for a, b in zip(ts, ts[1:])), default=0.0)
            result.peak_rss = operator.peak_rss()
            result.operator_cpu_s = cpu_seconds_or_zero(operator.process.pid)
            result.bench_cpu_s = time.process_time() - cpu0
            result.wall_s = time.monotonic() - wall0
        finally:
            operator.stop()
            client.close()
            result.problems = operator.problems()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scales", default="10,50,200", help="cluster counts, comma-separated")
    parser.add_argument("--workers", type=int, default=10, help="workers per cluster")
    parser.add_argument("--resync", type=float, default=30.0, help="RAYGUARD_OPERATOR_RESYNC_SECONDS")
    parser.add_argument("--cache", default="off,on", help="clusters case: the operator's cache off, on, or both")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument("--keep-logs", type=Path, help="copy the operator logs to this directory")
    parser.add_argument("--case", choices=("clusters", "replicas", "all"), default="clusters",
                        help="many clusters of 10 workers, or one cluster of many replicas, or both")
    parser.add_argument("--cells", help="replica case: GROUPSxREPLICAS, comma-separated (default: 1, 4, 32"
                                        " groups of 100 and 1000 replicas, within the caps)")
    parser.add_argument("--modes", default="unbounded,batched", help="replica case: unbounded, batched or both")
    parser.add_argument("--cell-timeout", type=float, default=600.0, help="replica case: seconds per cell")
    args = parser.parse_args(argv)
    scales = [int(s) for s in args.scales.split(",") if s.strip()] if args.case != "replicas" else []
    caches = [m.strip() == "on" for m in args.cache.split(",") if m.strip()]
    cells = [tuple(int(n) for n in c.split("x")) for c in args.cells.split(",")] if args.cells else \
        default_cells((MAX_GROUP_REPLICAS, MAX_CLUSTER_WORKERS))
    if args.case == "clusters":
        cells = []
    modes = [m.strip() == "batched" for m in args.modes.split(",") if m.strip()]
    results: list[ScaleResult] = []
    replica_results: list[ReplicaResult] = []
    load_before = os.getloadavg()
    workdir = Path(tempfile.mkdtemp(prefix="rayguard-bench-reconcile-"))
    started = time.monotonic()
    try:
        for clusters in scales:
            for cached in caches:
                t = time.monotonic()
                results.append(run_scale(clusters, args.workers, args.resync, workdir, cached))
                print(f"[{time.monotonic() - started:5.0f}s] {clusters} clusters, cache {'on' if cached else 'off'},"
                      f" done in {time.monotonic() - t:.0f} s", file=sys.stderr, flush=True)
        for groups, replicas in cells:
            for batched in modes:
                t = time.monotonic()
                replica_results.append(run_replica_cell(groups, replicas, batched, args.resync, workdir,
                                                        args.cell_timeout))
                print(f"[{time.monotonic() - started:5.0f}s] {groups} x {replicas}"
                      f" {'batched' if batched else 'unbounded'} done in {time.monotonic() - t:.0f} s",
                      file=sys.stderr, flush=True)
        if args.keep_logs:
            args.keep_logs.mkdir(parents=True, exist_ok=True)
            for log in workdir.glob("operator-*.log"):
                shutil.copy(log, args.keep_logs / log.name)
    except KeyboardInterrupt:
        print("interrupted: printing what was measured", file=sys.stderr)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    load_after = os.getloadavg()
    if scales:
        print()
        print(f"Reconcile at scale: clusters of 1 head + {args.workers} workers ({3 + args.workers} children),"
              f" operator `rayguard operator --standalone` in its own process, resync {args.resync:g} s;"
              f" cache off (every pass reads the API, a pass per pod event) and on (the watches' cache,"
              f" passes coalesced per cluster)")
        print(table(results))
        print(details(results, args.workers, args.resync))
    if cells:
        print()
        print(f"Replica scale: one RayCluster of G groups of R replicas (1 + G x R pods), pod creates"
              f" unbounded or batched ({MAX_POD_CREATES_PER_PASS} per pass); caps: {MAX_GROUP_REPLICAS} per group,"
              f" {MAX_CLUSTER_WORKERS} per cluster; resync {args.resync:g} s")
        print(replica_table(replica_results))
    print(load_line(load_before, load_after))
    if args.json:
        args.json.write_text(json.dumps([{**r.__dict__, "create_writes": dict(r.create_writes),
                                          "ready_writes": dict(r.ready_writes), "reads": dict(r.reads),
                                          "noop_writes": dict(r.noop_writes)} for r in results]
                                        + [r.__dict__ for r in replica_results], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

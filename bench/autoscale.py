"""Autoscaling in local mode, with Ray's own autoscaler: how fast, and how it packs memory= tasks.

Every cluster is an autoscaling RayCluster run as `rayguard local up` runs it (real Ray 2.60,
each pod's `rayguard-node run` in its own memory cgroup, pod view where the machine allows,
Ray's v1 autoscaler with rayguard's provider in this process), with a driver process.

1. Latency. A worker group with `minReplicas: 0`, `maxReplicas: 1`, 1 CPU. R times, once no
   worker is left and after a pause (spread over one update interval): the driver submits one
   1-CPU task (the demand); the worker is ready when Ray has a node alive with its
   CPUs; the task runs 1 s; the node is idle from the task's end until it is gone. The steps
   between come from the Events local mode shows (ScaledUp, ScaledDown) and the pods' readiness
   and removal, all on one clock. Scale-down is set against its ideal, `idleTimeoutSeconds`;
   Ray's autoscaler looks every `AUTOSCALER_UPDATE_INTERVAL_S` (Ray's default 5 s), which
   bounds both directions.
2. Packing. A batch of N tasks, each `memory=X` and 1 CPU, each growing its own process to X
   and holding it 5 s (`max_retries=0`, so every task runs once). The group (`maxReplicas` N,
   3 CPUs, 2Gi) has a planned heap that holds one such task (X = 0.9 x heap) while its limit
   would "hold" three. The same batch runs twice, one cluster after the other:
   - memory = planned heap: rayguard as it ships (autoscaler config and Ray's `--memory`);
   - memory = limit: what KubeRay does. The autoscaler config advertises the container limit
     (`autoscaling_config(model, memory="limit")`) and each node's Ray gets `--memory` = the
     limit too (bench/harness/autoscale_limit_node.py), so Ray's scheduler really places that
     many tasks on one node; everything else (cgroup, guard, Ray's monitor) is the same.
   It counts the worker nodes launched, and the tasks that died, with who killed them (the
   kill Events: rayguard's guard, Ray's memory monitor, the kernel) and the kernel's counters.

Needs root and a writable memory cgroup. Every cgroup and process it starts is gone at the end.

Run, from the repository root:
  .venv/bin/python -m bench.autoscale [--parts latency,packing] [--reps 5] [--idle-timeout-s 10]
                                      [--update-interval-s 5] [--tasks 3] [--json out.json] [--keep-logs]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

GiB, MiB = 1 << 30, 1 << 20
UPDATE_INTERVAL_ENV = "AUTOSCALER_UPDATE_INTERVAL_S"  # read by Ray's autoscaler when it is imported
RAY_DEFAULT_INTERVAL_S = 5
PARTS = ("latency", "packing")
SIDES = ("heap", "limit")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default=",".join(PARTS), help="latency, packing or both (default both)")
    parser.add_argument("--reps", type=int, default=5, help="latency repetitions (default 5)")
    parser.add_argument("--idle-timeout-s", type=int, default=10, help="idleTimeoutSeconds (default 10)")
    parser.add_argument("--update-interval-s", type=int, default=None,
                        help=f"Ray's autoscaler update interval (default: ${UPDATE_INTERVAL_ENV} or Ray's"
                             f" {RAY_DEFAULT_INTERVAL_S})")
    parser.add_argument("--tasks", type=int, default=3, help="memory= tasks in the packing batch (default 3)")
    parser.add_argument("--worker-memory", default="2Gi", help="the packing group's memory limit (default 2Gi)")
    parser.add_argument("--worker-cpus", type=int, default=3, help="the packing group's CPUs (default 3)")
    parser.add_argument("--task-fraction", type=float, default=0.9,
                        help="each task's memory= and real size, as a fraction of the planned heap (default 0.9)")
    parser.add_argument("--hold-s", type=float, default=5.0, help="how long each task holds its memory")
    parser.add_argument("--sides", default=",".join(SIDES), help="heap, limit or both (default both)")
    parser.add_argument("--timeout-s", type=float, default=300.0, help="per cluster, for its driver")
    parser.add_argument("--json", type=Path, default=None, help="write every record here too")
    parser.add_argument("--keep-logs", action="store_true", help="keep the run directory (pods' and Ray's logs)")
    args = parser.parse_args(argv)
    args.parts = [p for p in args.parts.split(",") if p]
    args.sides = [s for s in args.sides.split(",") if s]
    for name, given, known in (("--parts", args.parts, PARTS), ("--sides", args.sides, SIDES)):
        if not given or set(given) - set(known):
            parser.error(f"{name}: expected a comma-separated subset of {','.join(known)}")
    if not 0.5 < args.task_fraction <= 1:
        parser.error("--task-fraction: expected a number in (0.5, 1]: the planned heap holds one task, not two")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    interval_s = args.update_interval_s or int(os.environ.get(UPDATE_INTERVAL_ENV, RAY_DEFAULT_INTERVAL_S))
    os.environ[UPDATE_INTERVAL_ENV] = str(interval_s)  # before anything imports Ray's autoscaler

    from ray.autoscaler._private import constants

    from bench.harness.autoscale_cluster import ClusterSpec, prepare, run_cluster
    from bench.harness.autoscale_report import latency_steps, latency_table, packing, packing_table
    from bench.harness.output import load_line
    from rayguard_node.cgroup.scratch import why_not_writable

    if constants.AUTOSCALER_UPDATE_INTERVAL_S != interval_s:
        raise SystemExit(f"Ray's autoscaler was imported before {UPDATE_INTERVAL_ENV} was set")
    reason = why_not_writable()
    if reason is not None:
        raise SystemExit(f"bench.autoscale needs a writable memory cgroup: {reason}")
    load_before, started = os.getloadavg(), time.monotonic()
    work_dir = Path(tempfile.mkdtemp(prefix="rayguard-bench-autoscale-"))
    log_path = work_dir / "clusters.log"
    out: dict[str, object] = {"update_interval_s": interval_s, "idle_timeout_s": args.idle_timeout_s}
    tables: list[str] = []
    try:
        with open(log_path, "a") as log:
            if "latency" in args.parts:
                spec = ClusterSpec("bench-as-latency", args.idle_timeout_s, 1, 1, "2Gi")
                print(f"latency: {args.reps} demands on a group of 0..1 workers (idleTimeoutSeconds"
                      f" {args.idle_timeout_s}, update interval {interval_s} s) ...", flush=True)
                run = run_cluster(prepare(spec, "heap", work_dir),
                                  ["latency", "--reps", str(args.reps), "--jitter-s", str(interval_s),
                                   "--timeout-s", "180"], work_dir, log,
                                  args.timeout_s + args.reps * 60, settle_s=30)
                reps = latency_steps(run)
                out["latency"] = {"reps": reps, "records": run.records, "wall_s": run.wall_s}
                tables.append(f"Scale-up and scale-down, {len(reps)} of {args.reps} repetitions (pod view:"
                              f" {run.pod_view}); seconds, on one monotonic clock, 0.25 s resolution\n"
                              + latency_table(reps, args.idle_timeout_s, interval_s))
                print(f"  done in {run.wall_s:.0f}s", flush=True)
            if "packing" in args.parts:
                spec = ClusterSpec("bench-as-heap", args.idle_timeout_s, args.tasks, args.worker_cpus,
                                   args.worker_memory)
                heap_bytes = int(prepare(spec, "heap", work_dir).advertised["memory"])
                memory_bytes = int(heap_bytes * args.task_fraction)
                sides = []
                for side in args.sides:
                    side_spec = dataclasses.replace(spec, name=f"bench-as-{side}")
                    prepared = prepare(side_spec, side, work_dir)
                    print(f"packing, memory = {side}: {args.tasks} tasks of memory={memory_bytes / MiB:.0f} MiB,"
                          f" autoscaler told memory={prepared.advertised['memory'] / MiB:.0f} MiB per node ...",
                          flush=True)
                    run = run_cluster(prepared, ["packing", "--tasks", str(args.tasks), "--memory-bytes",
                                                 str(memory_bytes), "--hold-s", str(args.hold_s), "--timeout-s",
                                                 str(args.timeout_s - 60)], work_dir, log, args.timeout_s)
                    sides.append(packing(run))
                    if any(m != sides[-1].advertised_memory_bytes for m in sides[-1].ray_memory_bytes):
                        print(f"  WARNING: Ray's nodes had memory {sides[-1].ray_memory_bytes}, not the"
                              f" {sides[-1].advertised_memory_bytes} the autoscaler was told", flush=True)
                    summary = {**vars(sides[-1]), "outcomes": dict(sides[-1].outcomes), "killers": dict(sides[-1].killers)}
                    out[f"packing_{side}"] = {"summary": summary, "records": run.records,
                                              "events": run.timeline.normal + run.timeline.kills,
                                              "kernel_oom_kills": run.kernel_oom_kills, "wall_s": run.wall_s}
                    print(f"  done in {run.wall_s:.0f}s", flush=True)
                tables.append(f"Packing: {args.tasks} tasks, each memory={memory_bytes / MiB:.0f} MiB and 1 CPU,"
                              f" each growing to that size and holding it {args.hold_s:g} s; worker group"
                              f" {args.worker_cpus} CPUs, limit {args.worker_memory}, planned heap"
                              f" {heap_bytes / MiB:.0f} MiB, maxReplicas {args.tasks}\n"
                              + packing_table(sides, memory_bytes, args.tasks))
    finally:
        if args.keep_logs:
            print(f"logs kept in {work_dir}", file=sys.stderr)
        else:
            shutil.rmtree(work_dir, ignore_errors=True)
    print()
    print("\n\n".join(tables))
    print(f"autoscaler update interval {interval_s} s; {load_line(load_before, os.getloadavg())};"
          f" total {time.monotonic() - started:.0f} s")
    if args.json is not None:
        args.json.write_text(json.dumps(out, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())

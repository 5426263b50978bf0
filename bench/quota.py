"""What actor quota enforcement costs, and how fast it acts, side by side in one run.

1. Idle cost. A Ray head (`rayguard-node run`, with Ray's dashboard, which serves the state
   API the quota path reads) with enforcement `Kill` and one with `Off` each run N idle actors
   (`memory=120 MiB`, above what an idle worker holds, `num_cpus=0`). Each head gets a memory
   cgroup sized for N actors, and its plan gives Ray's `memory` resource room for N quotas (a
   head sized from the host's memory has room for about 32: the actors past that stay pending).
   Once every actor is up and listed by the state API, the CPU time of each rayguard-node
   process itself (and, apart, of Ray's dashboard, which answers the enforcement's polls) is
   measured over a window of the same length, as % of one core. When both heads' limits fit
   the memory budget (`--budget-gib`) they run at once, over the same window, so the machine's
   load weighs on both alike; when not, the two modes run one after the other, each over its
   own window of the same length, and the table says so. N = 10 and 100 by default.
   Target: enforcement adds at most 0.5% of one core at 100 actors.
2. Latency. In the same kind of cluster (`graceSeconds` 2, tolerance 1.2), an actor with a
   100 MiB quota waits until the runtime lists it, then grows past 120 MiB in one step. The bench
   samples the actor's RSS - SHR from /proc every ~5 ms: "over" is the first sample above quota x
   tolerance, "killed" the first sample where the process has started to exit. The time from over
   to killed, minus the grace period, is the enforcement's own delay (a scan every 0.5 s).

Needs root and a writable memory cgroup (v1 or v2). Everything it makes is removed at the end.

Run, from the repository root:
  .venv/bin/python -m bench.quota [--actors 10,100] [--window-s 20] [--latency-runs 3] [--budget-gib 14]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from bench.harness.output import column_table, load_line
from bench.harness.procfs import cmdline, cpu_seconds, cpu_seconds_or_zero, exit_state
from bench.harness.waiting import teardown, wait_until
from rayguard_node.cgroup.processes import read_process
from rayguard_node.cgroup.scratch import ScratchParent, open_scratch_parent, why_not_writable
from testkit.nodes import Node, free_port, short_temp_dir, start_node

GiB, MiB = 1 << 30, 1 << 20
GRACE_S = 2.0
IDLE_QUOTA_BYTES = 120 * MiB  # an idle actor worker holds ~60-100 MiB of RSS - SHR; 1.2 x 120 = 144
# The head's plan, so that Ray's `memory` resource (the plan's heap) holds N quotas: a small
# object store and Redis (idle actors use neither), and most of the rest as heap.
OBJECT_STORE_BYTES = 256 * MiB
REDIS_MAX_BYTES = 128 * MiB
HEAP_FRACTION = 0.95
RAY_BASE_BYTES = 1536 * MiB  # raylet, GCS, dashboard and its agents, Redis, the runtime: what they use
IDLE_ACTOR_BYTES = 100 * MiB  # what one idle actor's worker uses, with room
MIN_LIMIT_BYTES = 2 * GiB


def head_limit_bytes(actors: int) -> int:
    """A memory limit for a head with `actors` idle actors: its plan's heap holds their quotas
    (and one spare), and its real use (Ray, the runtime, the workers) stays well under it."""
    for_heap = int((actors + 1) * IDLE_QUOTA_BYTES / HEAP_FRACTION) + OBJECT_STORE_BYTES + REDIS_MAX_BYTES
    for_use = RAY_BASE_BYTES + actors * IDLE_ACTOR_BYTES + OBJECT_STORE_BYTES + REDIS_MAX_BYTES
    return max(for_heap, for_use, MIN_LIMIT_BYTES)


DRIVER_HEAD = """
import os, sys, time, ray
ray.init(address=os.environ["BENCH_ADDRESS"], logging_level="ERROR", log_to_driver=False)

class WithPid:
    def pid(self):
        return os.getpid()
"""

IDLE_DRIVER = DRIVER_HEAD + """
Idle = ray.remote(num_cpus=0, memory=int(sys.argv[2]))(WithPid)
actors = [Idle.remote() for _ in range(int(sys.argv[1]))]
print("PIDS " + " ".join(str(p) for p in ray.get([a.pid.remote() for a in actors], timeout=600)), flush=True)
time.sleep(3600)
"""

GROW_DRIVER = DRIVER_HEAD + """
@ray.remote(num_cpus=0, memory=100 * 1024 * 1024)
class Grower(WithPid):
    def grow(self):
        self.block = b"x" * (200 * 1024 * 1024)

for _ in range(int(sys.argv[1])):
    actor = Grower.remote()
    print("PID", ray.get(actor.pid.remote()), flush=True)
    sys.stdin.readline()  # the bench says when the runtime lists it
    actor.grow.remote()
    sys.stdin.readline()  # the bench says when it saw the kill
print("DONE", flush=True)
"""


def head_env(enforcement: str, grace_s: float) -> dict[str, str]:
    # num-cpus 8: Ray starts min(host CPUs, num-cpus) task workers at once (the actors need no CPU).
    return {"RAYGUARD_NUM_CPUS": "8", "RAYGUARD_QUOTA_ENFORCEMENT": enforcement,
            "RAYGUARD_QUOTA_GRACE_SECONDS": str(grace_s), "RAYGUARD_OBJECT_STORE_BYTES": str(OBJECT_STORE_BYTES),
            "RAYGUARD_REDIS_MAX_BYTES": str(REDIS_MAX_BYTES), "RAYGUARD_HEAP_FRACTION": str(HEAP_FRACTION)}


@dataclass
class Head:
    mode: str
    node: Node
    cgroup: Any
    dashboard_port: int
    process: subprocess.Popen[str] | None = None  # the driver


def start_head(parent: ScratchParent, enforcement: str, limit_bytes: int, grace_s: float) -> Head:
    cgroup = parent.create("rg-quota", limit_bytes)
    port = free_port()
    head = Head(enforcement, start_node("head", cgroup, env=head_env(enforcement, grace_s),
                                        temp_dir=short_temp_dir("rgq-"), dashboard_port=port), cgroup, port)
    try:
        head.node.wait_ready()
    except BaseException:
        stop_all(head.node, cgroup, None)
        raise
    return head


def planned_heap_bytes(node: Node) -> int:
    """Ray's `memory` resource, as the runtime's plan gave it (its `--memory=` flag)."""
    for word in node.log().split():
        if word.startswith("--memory="):
            return int(word.split("=", 1)[1])
    raise RuntimeError(f"no --memory= in the runtime's log:\n{node.log()[-2000:]}")


def runtime_pid(cgroup: Any) -> int:
    found = [p for p in cgroup.pids() if b"rayguard_node" in cmdline(p) and b"\0run" in cmdline(p)]
    if len(found) != 1:
        raise RuntimeError(f"expected one rayguard-node process, found {found}")
    return found[0]


def driver(node: Node, script: str, *args: str) -> subprocess.Popen[str]:
    env = {**node.driver_env(), "BENCH_ADDRESS": node.address}
    errors = open(node.temp_dir / "driver.err", "w")  # read when the driver fails
    return subprocess.Popen([sys.executable, "-c", script, *args], env=env, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors)


def read_marker(process: subprocess.Popen[str], marker: str, timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    assert process.stdout is not None
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            raise RuntimeError(f"driver exited before {marker!r} (status {process.wait()})")
        if line.startswith(marker):
            return line[len(marker):].strip()
    raise RuntimeError(f"no {marker!r} within {timeout_s}s")


def start_idle_head(parent: ScratchParent, mode: str, limit_bytes: int, actors: int) -> Head:
    head = start_head(parent, mode, limit_bytes, 5.0)
    try:
        heap = planned_heap_bytes(head.node)
        if heap < actors * IDLE_QUOTA_BYTES:
            raise RuntimeError(f"the plan's heap ({heap} bytes) holds {heap // IDLE_QUOTA_BYTES} quotas,"
                               f" not {actors}: raise head_limit_bytes")
        head.process = driver(head.node, IDLE_DRIVER, str(actors), str(IDLE_QUOTA_BYTES))
    except BaseException:
        stop_all(head.node, head.cgroup, head.process)
        raise
    return head


def alive_actors(head: Head) -> int:
    """How many live actors Ray's state API lists (what the runtime's actor directory reads)."""
    url = (f"http://127.0.0.1:{head.dashboard_port}/api/v0/actors?limit=10000"
           "&filter_keys=state&filter_predicates=%3D&filter_values=ALIVE")
    token = head.node.token_file.read_text().strip()
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return len(json.loads(reply.read())["data"]["result"]["result"])
    except (OSError, ValueError, KeyError, TypeError):
        return -1


def ray_service_pids(cgroup: Any) -> list[int]:
    """Ray's dashboard (its head and module processes) and GCS: what answers the state API."""
    return [p for p in cgroup.pids()
            if any(mark in cmdline(p) for mark in (b"dashboard/dashboard.py", b"ray-dashboard-", b"gcs_server"))]


def idle_cells(parent: ScratchParent, actors: int, window_s: float, budget_bytes: int) -> Iterator[dict[str, Any]]:
    """Both modes at once over the same window when both heads fit the memory budget, so that
    the machine's load hits both alike; else one after the other, over windows of equal length."""
    limit = head_limit_bytes(actors)
    together = 2 * limit <= budget_bytes
    for modes in [("Off", "Kill")] if together else [("Off",), ("Kill",)]:
        yield from measure_idle(parent, modes, actors, limit, window_s, "together" if together else "in turn")


def measure_idle(parent: ScratchParent, modes: tuple[str, ...], actors: int, limit: int, window_s: float,
                 run: str) -> list[dict[str, Any]]:
    heads: list[Head] = []
    try:
        for mode in modes:
            heads.append(start_idle_head(parent, mode, limit, actors))
        try:
            pids = [read_marker(h.process, "PIDS ", 900).split() for h in heads if h.process is not None]
        except RuntimeError as error:
            tails = [(h.node.temp_dir / "driver.err").read_text(errors="replace")[-1500:] for h in heads]
            raise RuntimeError(f"{error}; driver stderr: {tails}") from None
        if not wait_until(lambda: all(alive_actors(h) >= actors for h in heads), 120, 2):
            raise RuntimeError(f"the state API does not list {actors} live actors: {[alive_actors(h) for h in heads]}")
        time.sleep(6)  # three polls of the actor directory, and start-up settled
        runtimes = [runtime_pid(h.cgroup) for h in heads]
        services = [ray_service_pids(h.cgroup) for h in heads]
        for head in heads:
            head.cgroup.reset_peak()
        load0, wall0 = os.getloadavg()[0], time.monotonic()
        cpu0 = [cpu_seconds(pid) for pid in runtimes]
        ray0 = [sum(cpu_seconds_or_zero(p) for p in group) for group in services]
        time.sleep(window_s)
        cpu1 = [cpu_seconds(pid) for pid in runtimes]
        ray1 = [sum(cpu_seconds_or_zero(p) for p in group) for group in services]
        wall1, load1 = time.monotonic(), os.getloadavg()[0]
        span = wall1 - wall0
        return [{"actors": actors, "enforcement": h.mode, "run": run, "actor_pids": len(found),
                 "alive_after": alive_actors(h), "limit_gib": round(limit / GiB, 2),
                 "peak_gib": round((h.cgroup.max_usage_bytes() or 0) / GiB, 2),
                 "largest_actor_mib": max((private_bytes(int(pid)) or 0 for pid in found), default=0) // MiB,
                 "quota_kills": sum(r.get("kind") == "quota_exceeded" for r in h.node.reports()),
                 "window_s": round(span, 1), "load_1m": (round(load0, 2), round(load1, 2)),
                 "rayguard_pct_of_core": round((c1 - c0) / span * 100, 3),
                 "ray_services_pct_of_core": round((r1 - r0) / span * 100, 3)}
                for h, found, c0, c1, r0, r1 in zip(heads, pids, cpu0, cpu1, ray0, ray1)]
    finally:
        for head in heads:
            stop_all(head.node, head.cgroup, head.process)


def stop_all(node: Node, cgroup: Any, process: subprocess.Popen[str] | None) -> None:
    teardown([(lambda: (process.kill(), process.wait())) if process is not None else None,
              lambda: node.stop(timeout_s=20), lambda: cgroup.remove(timeout_s=30),
              lambda: shutil.rmtree(node.temp_dir, ignore_errors=True)])


def private_bytes(pid: int) -> int | None:
    process = read_process(Path("/proc"), pid)
    return None if process is None else process.rss_minus_shr_bytes


def latency_cells(parent: ScratchParent, runs: int) -> list[dict[str, Any]]:
    head = start_head(parent, "Kill", head_limit_bytes(1), GRACE_S)
    node, cgroup = head.node, head.cgroup
    process = None
    results: list[dict[str, Any]] = []
    over_bytes = int(100 * MiB * 1.2)
    try:
        process = driver(node, GROW_DRIVER, str(runs))
        assert process.stdin is not None
        for run in range(1, runs + 1):
            pid = int(read_marker(process, "PID ", 300))
            time.sleep(4)  # two polls of the actor directory (every 2 s)
            process.stdin.write("\n")
            process.stdin.flush()
            over = killed = None
            deadline = time.monotonic() + GRACE_S + 20
            while time.monotonic() < deadline and killed is None:
                now = time.monotonic()
                if over is None:
                    used = private_bytes(pid)
                    if used is not None and used > over_bytes:
                        over = now
                if exit_state(pid)[0]:
                    killed = now
                time.sleep(0.005)
            reports = [r for r in node.reports() if r.get("kind") == "quota_exceeded"]
            results.append({"run": run, "pid": pid, "reported": any(r["victim"]["pid"] == pid for r in reports),
                            "over_to_kill_ms": None if over is None or killed is None else round((killed - over) * 1000),
                            "after_grace_ms": None if over is None or killed is None
                            else round((killed - over - GRACE_S) * 1000)})
            process.stdin.write("\n")
            process.stdin.flush()
        return results
    finally:
        stop_all(node, cgroup, process)


def pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def idle_tables(counts: list[int], idle: list[dict[str, Any]]) -> str:
    rows = []
    for count in counts:
        cells = {c["enforcement"]: c for c in idle if c["actors"] == count}
        run = next((c["run"] for c in cells.values()), "-")
        row = [str(count), run]
        for key in ("rayguard_pct_of_core", "ray_services_pct_of_core"):
            off, kill = (cells[m][key] if m in cells else None for m in ("Off", "Kill"))
            row += [pct(off), pct(kill), "-" if off is None or kill is None else f"{kill - off:+.2f}"]
        rows.append(row)
    summary = column_table(["actors", "modes", "rayguard Off", "Kill", "added by enforcement",
                            "Ray dashboard+GCS Off", "Kill", "added"], rows)
    detail = column_table(
        ["actors", "mode", "window s", "load 1m (start/end)", "actors up / listed after", "quota kills",
         "largest actor RSS-SHR MiB", "limit GiB", "peak GiB"],
        [[str(c["actors"]), c["enforcement"], str(c["window_s"]), "{} / {}".format(*c["load_1m"]),
          f"{c['actor_pids']} / {c['alive_after']}", str(c["quota_kills"]), str(c["largest_actor_mib"]),
          str(c["limit_gib"]), str(c["peak_gib"])]
         for c in idle])
    return summary + "\n\n" + detail


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--actors", default="10,100", help="idle actors per cell, comma-separated")
    parser.add_argument("--window-s", type=float, default=20.0)
    parser.add_argument("--latency-runs", type=int, default=3)
    parser.add_argument("--budget-gib", type=float, default=14.0,
                        help="the memory both heads' limits may add up to; above it the modes run in turn")
    args = parser.parse_args(argv)
    counts = [int(c) for c in args.actors.split(",") if c.strip()]
    reason = why_not_writable()
    parent = open_scratch_parent() if reason is None else None
    if parent is None:
        print(f"bench.quota needs a writable memory cgroup: {reason}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    load_before, started = os.getloadavg(), time.monotonic()
    idle: list[dict[str, Any]] = []
    latency: list[dict[str, Any]] = []
    try:
        for count in counts:
            for cell in idle_cells(parent, count, args.window_s, int(args.budget_gib * GiB)):
                idle.append(cell)
                print(f"[{time.monotonic() - started:5.0f}s] {count} actors, {cell['enforcement']} ({cell['run']}):"
                      f" rayguard {cell['rayguard_pct_of_core']:.2f}% of one core,"
                      f" Ray dashboard+GCS {cell['ray_services_pct_of_core']:.2f}%", flush=True)
        if args.latency_runs:
            latency = latency_cells(parent, args.latency_runs)
    except KeyboardInterrupt:
        print("interrupted: printing what was measured", file=sys.stderr)
    finally:
        parent.close()
    print(f"\nIdle cost, % of one core (quota enforcement Off vs Kill; {IDLE_QUOTA_BYTES // MiB} MiB quota per"
          f" actor; {args.window_s:g} s windows; modes 'together' share one window, 'in turn' run one after the other)")
    print(idle_tables(counts, idle))
    if latency:
        print(f"\nQuota over x tolerance -> kill (grace {GRACE_S:g} s, scan every 0.5 s, directory poll every 2 s)")
        print(column_table(["run", "over -> kill ms", "minus grace ms", "report"],
                           [[str(r["run"]), str(r["over_to_kill_ms"]), str(r["after_grace_ms"]),
                             "quota_exceeded" if r["reported"] else "none"] for r in latency]))
    print(f"{load_line(load_before, os.getloadavg())}; total {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What actor quota enforcement costs, and how fast it acts, side by side in one run.

1. Idle cost. Two Ray heads (`rayguard-node run`, with Ray's dashboard, which serves the state
   API the quota path reads), each in its own 64 GiB memory cgroup, one with enforcement `Kill`
   and one with `Off`, each run N idle actors (`memory=150 MiB`, above what an idle worker holds, `num_cpus=0`). Once every actor
   is up (and, with `Kill`, listed by the runtime's actor directory), the CPU time of each
   rayguard-node process itself (not Ray's) is measured over the same window, as % of one core,
   so that the machine's load weighs on both alike. N = 10 and 100 by default.
   Target: enforcement adds at most 0.5% of one core at 100 actors.
2. Latency. In the same kind of cluster (`graceSeconds` 2, tolerance 1.2), an actor with a
   100 MiB quota waits until the runtime lists it, then grows past 120 MiB in one step. The bench
   samples the actor's RSS - SHR from /proc every ~5 ms: "over" is the first sample above quota x
   tolerance, "killed" the first sample where the process has started to exit. The time from over
   to killed, minus the grace period, is the enforcement's own delay (a scan every 0.5 s).

Needs root and a writable memory cgroup (v1 or v2). Everything it makes is removed at the end.

Run, from the repository root:
  .venv/bin/python -m bench.quota [--actors 10,100] [--window-s 20] [--latency-runs 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.harness.output import column_table, load_line
from bench.harness.procfs import cmdline, cpu_seconds, exit_state
from bench.harness.waiting import teardown
from rayguard_node.cgroup.processes import read_process
from rayguard_node.cgroup.scratch import ScratchParent, open_scratch_parent, why_not_writable
from testkit.nodes import Node, free_port, short_temp_dir, start_node

GiB, MiB = 1 << 30, 1 << 20
LIMIT_BYTES = 64 * GiB  # a limit, not a use: 100 actors reserve 100 x 150 MiB of heap
GRACE_S = 2.0

DRIVER_HEAD = """
import os, sys, time, ray
ray.init(address=os.environ["BENCH_ADDRESS"], logging_level="ERROR", log_to_driver=False)

class WithPid:
    def pid(self):
        return os.getpid()
"""

IDLE_DRIVER = DRIVER_HEAD + """
Idle = ray.remote(num_cpus=0, memory=150 * 1024 * 1024)(WithPid)
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


def start_head(parent: ScratchParent, enforcement: str, grace_s: float = 5.0) -> tuple[Node, Any]:
    cgroup = parent.create("rg-quota", LIMIT_BYTES)
    # 8 CPUs: Ray starts at most that many workers at once (the actors need none to run).
    env = {"RAYGUARD_NUM_CPUS": "8", "RAYGUARD_QUOTA_ENFORCEMENT": enforcement,
           "RAYGUARD_QUOTA_GRACE_SECONDS": str(grace_s)}
    node = start_node("head", cgroup, env=env, temp_dir=short_temp_dir("rgq-"), dashboard_port=free_port())
    node.wait_ready()
    return node, cgroup


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


def idle_cells(parent: ScratchParent, actors: int, window_s: float) -> list[dict[str, Any]]:
    """Both modes at once, measured over the same window: the machine's load hits both alike."""
    heads = [(mode, *start_head(parent, mode)) for mode in ("Off", "Kill")]
    drivers: list[subprocess.Popen[str] | None] = [None, None]
    try:
        for index, (_mode, node, _cgroup) in enumerate(heads):
            drivers[index] = driver(node, IDLE_DRIVER, str(actors))
        try:
            pids = [read_marker(d, "PIDS ", 900).split() for d in drivers if d is not None]
        except RuntimeError as error:
            tails = [(n.temp_dir / "driver.err").read_text(errors="replace")[-1500:] for _m, n, _c in heads]
            raise RuntimeError(f"{error}; driver stderr: {tails}") from None
        time.sleep(6)  # a few polls of the actor directory, and start-up settled
        runtimes = [runtime_pid(cgroup) for _mode, _node, cgroup in heads]
        wall0, cpu0 = time.monotonic(), [cpu_seconds(pid) for pid in runtimes]
        time.sleep(window_s)
        wall1, cpu1 = time.monotonic(), [cpu_seconds(pid) for pid in runtimes]
        return [{"actors": actors, "enforcement": mode, "actor_pids": len(found),
                 "window_s": round(wall1 - wall0, 1),
                 "rayguard_pct_of_core": round((after - before) / (wall1 - wall0) * 100, 3)}
                for (mode, _n, _c), found, before, after in zip(heads, pids, cpu0, cpu1)]
    finally:
        for (_mode, node, cgroup), process in zip(heads, drivers):
            stop_all(node, cgroup, process)


def stop_all(node: Node, cgroup: Any, process: subprocess.Popen[str] | None) -> None:
    teardown([(lambda: (process.kill(), process.wait())) if process is not None else None,
              lambda: node.stop(timeout_s=20), lambda: cgroup.remove(timeout_s=30),
              lambda: shutil.rmtree(node.temp_dir, ignore_errors=True)])


def private_bytes(pid: int) -> int | None:
    process = read_process(Path("/proc"), pid)
    return None if process is None else process.rss_minus_shr_bytes


def latency_cells(parent: ScratchParent, runs: int) -> list[dict[str, Any]]:
    node, cgroup = start_head(parent, "Kill", GRACE_S)
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--actors", default="10,100", help="idle actors per cell, comma-separated")
    parser.add_argument("--window-s", type=float, default=20.0)
    parser.add_argument("--latency-runs", type=int, default=3)
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
            for cell in idle_cells(parent, count, args.window_s):
                idle.append(cell)
                print(f"[{time.monotonic() - started:5.0f}s] {count} actors, {cell['enforcement']}:"
                      f" {cell['rayguard_pct_of_core']:.2f}% of one core", flush=True)
        if args.latency_runs:
            latency = latency_cells(parent, args.latency_runs)
    except KeyboardInterrupt:
        print("interrupted: printing what was measured", file=sys.stderr)
    finally:
        parent.close()
    print("\nIdle cost of the rayguard-node process, % of one core (quota enforcement Off vs Kill)")
    rows = []
    for count in counts:
        by_mode = {c["enforcement"]: c["rayguard_pct_of_core"] for c in idle if c["actors"] == count}
        off, kill = by_mode.get("Off"), by_mode.get("Kill")
        added = "-" if off is None or kill is None else f"{kill - off:+.2f}"
        rows.append([str(count), "-" if off is None else f"{off:.2f}", "-" if kill is None else f"{kill:.2f}", added])
    print(column_table(["actors", "Off", "Kill", "added by enforcement"], rows))
    if latency:
        print(f"\nQuota over x tolerance -> kill (grace {GRACE_S:g} s, scan every 0.5 s, directory poll every 2 s)")
        print(column_table(["run", "over -> kill ms", "minus grace ms", "report"],
                           [[str(r["run"]), str(r["over_to_kill_ms"]), str(r["after_grace_ms"]),
                             "quota_exceeded" if r["reported"] else "none"] for r in latency]))
    print(f"{load_line(load_before, os.getloadavg())}; total {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""One cell of `bench.oom_race`: one setup (row), N tasks at one allocation rate, in a fresh
cgroup.

A driver outside the cgroup first starts N workers (so that the race is not against worker
start-up), then submits N tasks at once that each commit memory in chunks at a set pace; the
cell records what the driver saw, the kernel's oom_kill count, the peak working set, the
kills each killer made, and how long after the threshold the first task was killed (see
bench/oom_race.py).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.harness.oom_race_container import ContainerHead, ContainerSampler
from bench.harness.ray_nodes import RayAlone, guard_plan, keep_logs, ray_kills
from bench.harness.sampler import MiB, Sampler
from bench.harness.waiting import teardown
from rayguard_node.cgroup.scratch import ScratchParent
from testkit.nodes import Node, short_temp_dir, start_node

GiB = 1 << 30
TOTAL_BYTES = 6 * GiB
RAY_THRESHOLD = 0.95  # Ray 2.60's default RAY_memory_usage_threshold (and the plan's)
DRIVER_GET_TIMEOUT_S = 90
DRIVER_TIMEOUT_S = 180

# rate name -> (chunk bytes, target MiB/s or None for "as fast as it can")
RATES: dict[str, tuple[int, int | None]] = {
    "256": (16 * MiB, 256),
    "1024": (32 * MiB, 1024),
    "max": (64 * MiB, None),
}


@dataclass(frozen=True)
class Row:
    key: str
    label: str
    rayguard: bool
    pod_view: bool
    fixed_poll: bool = False  # rayguard before the adaptive guard: every 50 ms, whatever the rate
    container: bool = False  # a podman container from rayguard/node, as `--runtime podman` runs a pod


ROWS = {row.key: row for row in [
    Row("ray-nested", "Ray alone, nested (blind)", False, False),
    Row("ray-pod", "Ray alone, pod view", False, True),
    Row("rayguard-nested-fixed", "rayguard fixed poll, nested", True, False, True),
    Row("rayguard-nested", "rayguard adaptive, nested", True, False),
    Row("rayguard-pod-fixed", "rayguard fixed poll, pod view", True, True, True),
    Row("rayguard-pod", "rayguard adaptive, pod view", True, True),
    Row("rayguard-container", "rayguard in a container", True, True, container=True),
]}
FIXED_POLL_ENV = {"RAYGUARD_GUARD_MIN_REFRESH_MS": "50"}  # = the default guard period

DRIVER = r'''
import json, time, ray
ray.init(address={address!r}, logging_level="ERROR", log_to_driver=False)

@ray.remote(num_cpus=1)
def warm():
    time.sleep(1.0)  # held long enough that each call gets its own worker
    return 0

@ray.remote(num_cpus=1, max_retries=0)
def hog(step, total, period):
    chunks, allocated, start = [], 0, time.monotonic()
    while allocated < total:
        chunks.append(b"x" * step)  # commits `step` bytes
        allocated += step
        if period:
            delay = start + (allocated // step) * period - time.monotonic()
            if delay > 0:
                time.sleep(delay)
    return allocated

ray.get([warm.remote() for _ in range({tasks})], timeout=120)
started = time.monotonic()
refs = [hog.remote({step}, {total}, {period}) for _ in range({tasks})]
errors, messages = [], []
for ref in refs:
    try:
        allocated = ray.get(ref, timeout=max(1, {timeout} - (time.monotonic() - started)))
        messages.append("survived, %d bytes" % allocated)
    except Exception as error:
        lines = str(error).strip().splitlines() or [""]
        errors.append(type(error).__name__)
        messages.append(lines[0][:300])
outcome = {{"error": errors[0] if errors else None, "errors": errors, "message": messages[0]}}
outcome["seconds"] = round(time.monotonic() - started, 3)
print("OUTCOME " + json.dumps(outcome), flush=True)
'''


@dataclass
class Cell:
    row: str
    rate: str
    tasks: int = 1
    cgroup_version: int = 1
    driver_error: str | None = None
    driver_errors: list[str] = field(default_factory=list)  # one per task that failed
    driver_message: str = ""
    driver_seconds: float | None = None
    oom_kills: int = 0
    limit_bytes: int = 0
    peak_ws_fraction: float = 0.0
    peak_usage_fraction: float = 0.0  # memory.max_usage_in_bytes (includes page cache)
    guard_threshold: float | None = None
    guard_mode: str | None = None
    latency_threshold: float | None = None
    latency_ms: float | None = None  # threshold crossed -> the victim starts to exit
    released_ms: float | None = None  # threshold crossed -> working set back under FREED_FRACTION
    latency_resolution_ms: float | None = None
    crossed_ms_after_hog_start: dict[str, float | None] = field(default_factory=dict)
    measured_rate_mib_s: float | None = None
    who_killed: str = "none"
    killers: list[str] = field(default_factory=list)
    kills: dict[str, int] = field(default_factory=dict)  # killer -> kills it made
    reports: list[str] = field(default_factory=list)
    ray_view_at_kill: str | None = None
    hog_pid: int | None = None
    sample_count: int = 0
    load1: float | None = None  # 1-minute load average when the task started
    run: int = 1
    error: str | None = None


def run_cell(parent: ScratchParent, row: Row, rate: str, limit_bytes: int,
             keep_dir: Path | None = None, tasks: int = 1) -> Cell:
    cell = Cell(row.key, rate, tasks=tasks, cgroup_version=parent.version, limit_bytes=limit_bytes)
    step, mib_s = RATES[rate]
    period = 0.0 if mib_s is None else step / (mib_s * MiB)
    cgroup = None if row.container else parent.create("rg-oomrace", limit_bytes)
    temp_dir = short_temp_dir("rgr-")
    node: Node | None = None
    alone: RayAlone | None = None
    box: ContainerHead | None = None
    sampler: Sampler | None = None
    driver_output = ""
    try:
        if row.container:  # the container's own cgroup, which podman makes with the limit
            box = ContainerHead(limit_bytes, tasks, temp_dir, row.fixed_poll)
            box.start()
            box.wait_ready()
            cgroup = box.cgroup()
            plan = box.plan()
            cell.guard_threshold, cell.guard_mode = plan["guard_threshold"], plan["guard_mode"]
            address = box.address
        elif row.rayguard:
            plan = guard_plan(cgroup, row.pod_view, tasks)
            cell.guard_threshold, cell.guard_mode = plan["guard_threshold"], plan["guard_mode"]
            env = {"RAYGUARD_NUM_CPUS": str(tasks), **(FIXED_POLL_ENV if row.fixed_poll else {})}
            node = start_node("head", cgroup, pod_view=row.pod_view, env=env, temp_dir=temp_dir)
            node.wait_ready()
            address, env = node.address, node.driver_env()
        else:
            alone = RayAlone(cgroup, temp_dir, row.pod_view, num_cpus=tasks)
            alone.start()
            alone.wait_ready()
            address, env = alone.address, alone.driver_env()
        assert cgroup is not None
        thresholds = sorted({RAY_THRESHOLD, *( [cell.guard_threshold] if cell.guard_threshold else [])})
        oom_before = box.oom_kills() if box is not None else cgroup.oom_kill_count()
        cgroup.reset_peak()
        sampler = (ContainerSampler if box is not None else Sampler)(cgroup, limit_bytes, thresholds)
        sampler.start()
        cell.load1 = round(os.getloadavg()[0], 2)
        total = max(TOTAL_BYTES, 2 * limit_bytes)  # one task alone must outgrow the cgroup too
        script = DRIVER.format(address=address, step=step, total=total, period=period,
                               timeout=DRIVER_GET_TIMEOUT_S, tasks=tasks)
        argv = [sys.executable, "-c", script]
        if box is not None:  # in a container beside the head: Ray wants the head's Python
            argv, env = box.driver(script)
        try:
            result = subprocess.run(argv, env=env, capture_output=True,
                                    text=True, timeout=DRIVER_TIMEOUT_S)
            driver_output = result.stdout + "\n--- stderr ---\n" + result.stderr
            marker = result.stdout.rfind("OUTCOME ")
            if marker >= 0:
                # raw_decode: anything printed after the JSON on the same line is ignored
                outcome, _end = json.JSONDecoder().raw_decode(result.stdout, marker + len("OUTCOME "))
                cell.driver_error = outcome["error"]
                cell.driver_errors = outcome["errors"]
                cell.driver_message = outcome["message"]
                cell.driver_seconds = outcome["seconds"]
            else:
                cell.driver_error = f"driver exited {result.returncode}"
                cell.driver_message = (result.stderr.strip().splitlines() or [""])[-1][:300]
        except subprocess.TimeoutExpired as timeout:
            cell.driver_error = "driver timeout"
            driver_output = f"{timeout.stdout!r}\n--- stderr ---\n{timeout.stderr!r}"
        # Let the detectors catch up: reports, raylet.out, the kernel counter.
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline:
            settled = sampler.hog_gone is not None and sampler.freed is not None
            if settled and (node is None or node.reports()) and (box is None or box.reports()):
                break
            time.sleep(0.1)
        time.sleep(0.5)
        sampler.stop()

        cell.oom_kills = (box.oom_kills() if box is not None else cgroup.oom_kill_count()) - oom_before
        cell.peak_ws_fraction = sampler.peak_ws / limit_bytes
        peak_usage = cgroup.max_usage_bytes()
        cell.peak_usage_fraction = 0.0 if peak_usage is None else peak_usage / limit_bytes
        cell.hog_pid = sampler.hog_pid
        cell.sample_count = sampler.samples
        cell.measured_rate_mib_s = sampler.measured_rate_mib_s()
        if sampler.hog_seen is not None:
            cell.crossed_ms_after_hog_start = {
                f"{t:g}": None if when is None else round((when - sampler.hog_seen) * 1000, 1)
                for t, when in sampler.crossed.items()}

        raylet_out = temp_dir / "session_latest" / "logs" / "raylet.out"
        ray_pids, cell.ray_view_at_kill = ray_kills(raylet_out)
        reports = node.reports() if node is not None else box.reports() if box is not None else []
        cell.reports = [r["kind"] for r in reports]
        killers = []
        hog = sampler.hog_pid
        if isinstance(sampler, ContainerSampler) and hog is not None:  # reports name the container's pids
            hog = sampler.ns_pids.get(hog, hog)
        guard_victims = [r["victim"]["pid"] for r in reports if r["kind"] == "monitor_kill"]
        ray_victims = ray_pids + [r["victim"]["pid"] for r in reports if r["kind"] == "ray_monitor_kill"]
        if guard_victims:
            killers.append("rayguard")
        if ray_victims:
            killers.append("ray")
        if cell.oom_kills:
            killers.append("kernel")
        cell.killers = killers
        known_ray = set(ray_victims) - {-1}  # -1: raylet.out said it killed, but not whom
        cell.kills = {"rayguard": len(set(guard_victims)),
                      "ray": len(known_ray) or (1 if ray_victims else 0), "kernel": cell.oom_kills}
        # Who got the hog: the one that named it; else the kernel.
        if hog is not None and hog in guard_victims:
            first = "rayguard"
        elif hog is not None and hog in ray_victims:
            first = "ray"
        elif cell.oom_kills:
            first = "kernel"
        elif killers:
            first = killers[0]
        else:
            first = "none" if sampler.hog_gone is None or cell.driver_error is None else "unknown"
        others = [k for k in killers if k != first]
        cell.who_killed = first + (f" (+{'+'.join(others)})" if others else "")

        if first == "ray":
            cell.latency_threshold = RAY_THRESHOLD
        elif first == "rayguard":
            cell.latency_threshold = cell.guard_threshold
        elif row.rayguard:
            cell.latency_threshold = cell.guard_threshold
        elif row.pod_view:
            cell.latency_threshold = RAY_THRESHOLD
        if cell.latency_threshold is not None and first != "none":
            crossed = sampler.crossed.get(cell.latency_threshold)
            if crossed is not None and sampler.hog_killed is not None:
                cell.latency_ms = round((sampler.hog_killed - crossed) * 1000, 1)
                gap = sampler.max_gap_near(crossed, sampler.hog_killed)
                cell.latency_resolution_ms = None if gap is None else round(gap * 1000, 1)
            if crossed is not None and sampler.freed is not None:
                cell.released_ms = round((sampler.freed - crossed) * 1000, 1)
    except Exception as error:  # one broken cell must not lose the others
        cell.error = f"{type(error).__name__}: {str(error)[:2000]}"
    finally:
        if keep_dir is not None:
            keep_logs(keep_dir / f"{row.key}-{rate}", temp_dir, sampler, driver_output)
        teardown([sampler.stop if sampler is not None else None,
                  (lambda: node.stop(timeout_s=15)) if node is not None else None,
                  alone.stop if alone is not None else None,
                  box.stop if box is not None else None,
                  (lambda: cgroup.remove(timeout_s=30)) if box is None and cgroup is not None else None,
                  lambda: shutil.rmtree(temp_dir, ignore_errors=True)])
    return cell

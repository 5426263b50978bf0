"""The OOM race, side by side in one run: who stops a task that outgrows its cgroup, how fast,
and what the driver is told.

Setup: one memory cgroup (3 GiB by default). A Ray head runs inside it with one CPU. A driver,
outside the cgroup, submits one task (`max_retries=0`) that commits memory in chunks at a set
pace, up to 6 GiB: about 256 MiB/s, about 1 GiB/s, and as fast as it can ("max").

Rows:
  ray-nested       Ray alone, in a nested cgroup: Ray is blind to the limit.
  ray-pod          Ray alone, with the pod view: the cgroup is bind-mounted at the root path
                   in a private mount namespace, so Ray sees the limit.
  rayguard-nested  `rayguard-node run` (defaults) in the nested cgroup: the guard is primary.
  rayguard-pod     `rayguard-node run` (defaults) with the pod view: the guard is a backstop
                   behind Ray's own monitor.

Columns: the rate the task really reached (working set from 50% to 85% of the limit), what the
driver saw (the exception type), the kernel's oom_kill count, the peak working set as a fraction
of the limit, the threshold the latency is measured from, the latency from crossing it to the
kill ("kill ms") and to the memory being back ("freed ms"), and who killed.

The bench samples the cgroup from its own thread every ~2 ms (usage minus total_inactive_file,
as the kubelet and the guard compute it) and watches the task's process (`ray::hog`, found by
its cmdline). "Killed" is the first sample where the process has started to exit (PF_EXITING in
/proc/PID/stat, or a zombie, or gone), whoever sent the signal; "freed" is the first sample
after that with the working set under half the limit (a worker's leader thread can be a zombie
while another thread is still freeing its pages, so the pid is not a good signal for that).
The threshold is the killer's: Ray's 0.95 for Ray's monitor, the plan's guard threshold for
rayguard (0.95 as primary when Ray is blind, 0.975 as backstop in the pod view). For a kernel
kill it is the threshold the row was meant to be protected by (none for Ray alone, blind).
Who killed: "rayguard" (a monitor_kill report names the task's pid), "ray" (raylet.out's
"Selected to kill" or a ray_monitor_kill report names it), "kernel" (the cgroup's oom_kill
count rose); others that also fired are added in parentheses.

Then the monitor's overhead: `rayguard-node run` idle in the nested cgroup, CPU time of the
rayguard-node process itself (not Ray's processes) over a window, as % of one core, at the
default guard refresh (50 ms) and at 250 ms.

Targets for the rayguard rows: no kernel OOM kill at 256 MiB/s and 1 GiB/s with defaults;
kill latency <= guard refresh + 20 ms; monitor overhead <= 1% of one core at the default refresh.

Needs root and a writable cgroup v1 memory controller. Every cgroup and temp dir it makes is
removed at the end, whatever happens.

Run: .venv/bin/python bench/oom_race.py [--rates 256,1024,max] [--rows ray-nested,...]
                                         [--limit-gib 3] [--repeat N] [--json out.json]
                                         [--keep-logs DIR] [--overhead-seconds 20]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # for the integration-test harness (tests/integration/nodes.py)

from rayguard_node.cgroup.files import UsageReader, read_small  # noqa: E402
from rayguard_node.cgroup.paths import V1  # noqa: E402
from rayguard_node.cgroup.scratch import MemoryCgroup, why_not_writable, writable_v1_parent  # noqa: E402
from tests.integration.nodes import Node, free_port, short_temp_dir, start_node  # noqa: E402

MiB, GiB = 1 << 20, 1 << 30
TOTAL_BYTES = 6 * GiB
RAY_THRESHOLD = 0.95  # Ray 2.60's default RAY_memory_usage_threshold (and the plan's)
SAMPLE_PERIOD_S = 0.002
HOG_SCAN_PERIOD_S = 0.01
FREED_FRACTION = 0.5  # after the kill, the working set back under this: the memory is back
SLOW_RATE = 0.6  # a measured rate under this share of the target is flagged in the table
DRIVER_GET_TIMEOUT_S = 90
DRIVER_TIMEOUT_S = 180
READY_TIMEOUT_S = 180

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


ROWS = {row.key: row for row in [
    Row("ray-nested", "Ray alone, nested (blind)", False, False),
    Row("ray-pod", "Ray alone, pod view", False, True),
    Row("rayguard-nested", "Ray + rayguard, nested", True, False),
    Row("rayguard-pod", "Ray + rayguard, pod view", True, True),
]}

DRIVER = r'''
import json, time, ray
ray.init(address={address!r}, logging_level="ERROR", log_to_driver=False)

@ray.remote(max_retries=0)
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

started = time.monotonic()
try:
    allocated = ray.get(hog.remote({step}, {total}, {period}), timeout={timeout})
    outcome = {{"error": None, "message": "survived, %d bytes" % allocated}}
except Exception as error:
    lines = str(error).strip().splitlines() or [""]
    outcome = {{"error": type(error).__name__, "message": lines[0][:300]}}
outcome["seconds"] = round(time.monotonic() - started, 3)
print("OUTCOME " + json.dumps(outcome), flush=True)
'''


# -- sampling -------------------------------------------------------------------------------

PF_EXITING = 0x4  # task flag set as soon as a killed process starts to exit


def exit_state(pid: int) -> tuple[bool, bool]:
    """(killed, gone): the process has started to exit (a fatal signal took effect); it is
    a zombie or gone."""
    try:
        stat = read_small(f"/proc/{pid}/stat")
    except (FileNotFoundError, ProcessLookupError):
        return True, True
    fields = stat.rsplit(b")", 1)[1].split()
    gone = fields[0] in (b"Z", b"X")
    return gone or bool(int(fields[6]) & PF_EXITING), gone


def cmdline(pid: int) -> bytes:
    try:
        return read_small(f"/proc/{pid}/cmdline")
    except OSError:
        return b""


class Sampler(threading.Thread):
    """Samples the cgroup's working set every ~2 ms and watches the hog's process."""

    def __init__(self, cgroup: MemoryCgroup, limit_bytes: int, thresholds: list[float]) -> None:
        super().__init__(name="oom-race-sampler", daemon=True)
        self.cgroup = cgroup
        self.reader = UsageReader(cgroup.directory, V1)
        self.limit = limit_bytes
        self.crossed: dict[float, float | None] = {t: None for t in thresholds}
        self.rate_marks: dict[float, float | None] = {0.5: None, 0.85: None}
        self.peak_ws = 0
        self.hog_pid: int | None = None
        self.hog_seen: float | None = None
        self.hog_killed: float | None = None  # it started to exit
        self.hog_gone: float | None = None  # gone or a zombie
        self.freed: float | None = None  # killed, and the working set is back under FREED_FRACTION
        self.samples = 0
        self.gaps: list[tuple[float, float]] = []  # (time, gap since previous sample)
        self.errors: list[str] = []
        self.series: list[tuple[float, int]] = []  # (time, working set), every ~20 ms
        self._halt = threading.Event()

    def stop(self) -> None:
        self._halt.set()
        if self.is_alive():
            self.join(5)

    def _find_hog(self) -> None:
        try:
            pids = self.cgroup.pids()
        except OSError:
            return
        for pid in pids:
            if cmdline(pid).startswith(b"ray::hog"):
                self.hog_pid, self.hog_seen = pid, time.monotonic()
                return

    def run(self) -> None:
        previous = None
        last_scan = 0.0
        while not self._halt.is_set():
            now = time.monotonic()
            try:
                ws = self.reader.read().working_set_bytes
            except OSError as error:  # the cgroup went away under us
                self.errors.append(str(error))
                return
            self.samples += 1
            if previous is not None:
                self.gaps.append((now, now - previous))
            previous = now
            self.peak_ws = max(self.peak_ws, ws)
            if not self.series or now - self.series[-1][0] >= 0.02:
                self.series.append((now, ws))
            for table in (self.crossed, self.rate_marks):
                for fraction, when in table.items():
                    if when is None and ws >= fraction * self.limit:
                        table[fraction] = now
            if self.hog_killed is not None and self.freed is None and ws < FREED_FRACTION * self.limit:
                self.freed = now
            if self.hog_pid is None:
                if now - last_scan >= HOG_SCAN_PERIOD_S:
                    last_scan = now
                    self._find_hog()
            elif self.hog_gone is None:
                killed, gone = exit_state(self.hog_pid)
                if killed and self.hog_killed is None:
                    self.hog_killed = now
                if gone:
                    self.hog_gone = now
            time.sleep(SAMPLE_PERIOD_S)

    def max_gap_near(self, start: float | None, end: float | None) -> float | None:
        """The worst sampling gap over [start, end]: the resolution of a latency there."""
        if start is None or end is None:
            return None
        gaps = [gap for when, gap in self.gaps if start <= when <= end + 0.001]
        return max(gaps) if gaps else None

    def measured_rate_mib_s(self) -> float | None:
        low, high = self.rate_marks[0.5], self.rate_marks[0.85]
        if low is None or high is None or high <= low:
            return None
        return (0.35 * self.limit / MiB) / (high - low)


# -- nodes ----------------------------------------------------------------------------------

def clean_env() -> dict[str, str]:
    env = dict(os.environ)
    for name in [k for k in env if k.startswith(("RAY_", "RAYGUARD_"))]:
        env.pop(name)
    return env


@dataclass
class RayAlone:
    """`ray start --head --block` inside the cgroup, no rayguard."""

    cgroup: MemoryCgroup
    temp_dir: Path
    pod_view: bool
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def token_file(self) -> Path:
        return self.temp_dir / "ray_auth_token"

    @property
    def output(self) -> Path:
        return self.temp_dir / "ray-start.out"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        descriptor = os.open(self.token_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(secrets.token_hex(32))
        ray = Path(sys.executable).with_name("ray")
        argv = [str(ray) if ray.exists() else "ray", "start", "--head", "--block",
                "--num-cpus=1", "--disable-usage-stats", "--include-dashboard=false",
                f"--temp-dir={self.temp_dir}", f"--port={self.port}",
                "--node-ip-address=127.0.0.1",
                f"--dashboard-agent-listen-port={free_port()}",
                f"--metrics-export-port={free_port()}",
                f"--ray-client-server-port={free_port()}"]
        with open(self.output, "wb") as out:
            self.process = subprocess.Popen(self.cgroup.command(argv, pod_view=self.pod_view),
                                            env=self.driver_env(), stdout=out,
                                            stderr=subprocess.STDOUT)

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"ray start exited with {self.process.returncode}:\n"
                                   f"{self.output.read_text(errors='replace')[-3000:]}")
            started = b"Ray runtime started" in self.output.read_bytes()
            if started and any(b"/raylet/raylet" in cmdline(p) for p in self.cgroup.pids()):
                return
            time.sleep(0.3)
        raise RuntimeError(f"ray start not ready after {timeout_s}s:\n"
                           f"{self.output.read_text(errors='replace')[-3000:]}")

    def driver_env(self) -> dict[str, str]:
        env = clean_env()
        env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(self.token_file))
        return env

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()  # the cgroup's removal kills the rest
            self.process.wait()


def guard_plan(cgroup: MemoryCgroup, pod_view: bool) -> dict[str, Any]:
    """The plan `rayguard-node run` will compute, from the same view of the cgroup."""
    argv = [sys.executable, "-m", "rayguard_node", "plan", "--json", "--role", "head",
            "--num-cpus", "1"]
    result = subprocess.run(cgroup.command(argv, pod_view=pod_view), env=clean_env(),
                            capture_output=True, text=True, timeout=60, check=True)
    return json.loads(result.stdout)


def ray_kills(raylet_out: Path) -> tuple[list[int], str | None]:
    """Pids Ray's monitor selected to kill, and Ray's view of the node at its first kill."""
    try:
        text = raylet_out.read_text(errors="replace")
    except FileNotFoundError:
        return [], None
    if "Killing" not in text:
        return [], None
    pids = [int(p) for p in re.findall(r"Selected to kill: \(.*?\bpid=(\d+)", text)]
    view = re.search(r"was ([\d.]+GB used / [\d.]+GB limit \([\d.]+\))", text)
    return pids or [-1], view.group(1) if view else None


def teardown(steps: list[Callable[[], object] | None]) -> None:
    """Run every step, even after one fails; then re-raise the first failure."""
    failure: BaseException | None = None
    for step in steps:
        if step is None:
            continue
        try:
            step()
        except BaseException as error:  # noqa: BLE001 (the remaining steps must still run)
            print(f"cleanup step failed: {type(error).__name__}: {error}", file=sys.stderr)
            failure = failure or error
    if failure is not None:
        raise failure


def keep_logs(target: Path, temp_dir: Path, sampler: Sampler | None, driver_output: str) -> None:
    """Copy what explains a cell (logs, the working-set series) before its temp dir goes."""
    target.mkdir(parents=True, exist_ok=True)
    (target / "driver.out").write_text(driver_output)
    logs = temp_dir / "session_latest" / "logs"
    for source in [logs / "raylet.out", logs / "gcs_server.out", temp_dir / "node.stdout",
                   temp_dir / "node.stderr", temp_dir / "ray-start.out"]:
        if source.exists():
            shutil.copy(source, target / source.name)
    if sampler is not None and sampler.series:
        origin = sampler.hog_seen or sampler.series[0][0]
        (target / "working_set.tsv").write_text("".join(
            f"{(t - origin) * 1000:.1f}\t{ws / sampler.limit:.4f}\n" for t, ws in sampler.series))


# -- one cell -------------------------------------------------------------------------------

@dataclass
class Cell:
    row: str
    rate: str
    driver_error: str | None = None
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
    reports: list[str] = field(default_factory=list)
    ray_view_at_kill: str | None = None
    hog_pid: int | None = None
    sample_count: int = 0
    load1: float | None = None  # 1-minute load average when the task started
    run: int = 1
    error: str | None = None


def run_cell(parent: Path, row: Row, rate: str, limit_bytes: int,
             keep_dir: Path | None = None) -> Cell:
    cell = Cell(row.key, rate, limit_bytes=limit_bytes)
    step, mib_s = RATES[rate]
    period = 0.0 if mib_s is None else step / (mib_s * MiB)
    cgroup = MemoryCgroup.create(parent, "rg-oomrace", limit_bytes)
    temp_dir = short_temp_dir("rgr-")
    node: Node | None = None
    alone: RayAlone | None = None
    sampler: Sampler | None = None
    driver_output = ""
    try:
        if row.rayguard:
            plan = guard_plan(cgroup, row.pod_view)
            cell.guard_threshold, cell.guard_mode = plan["guard_threshold"], plan["guard_mode"]
            node = start_node("head", cgroup, pod_view=row.pod_view,
                              env={"RAYGUARD_NUM_CPUS": "1"}, temp_dir=temp_dir)
            node.wait_ready()
            address, env = node.address, node.driver_env()
        else:
            alone = RayAlone(cgroup, temp_dir, row.pod_view)
            alone.start()
            alone.wait_ready()
            address, env = alone.address, alone.driver_env()
        thresholds = sorted({RAY_THRESHOLD, *( [cell.guard_threshold] if cell.guard_threshold else [])})
        oom_before = cgroup.oom_kill_count()
        (cgroup.directory / "memory.max_usage_in_bytes").write_text("0")  # reset the peak
        sampler = Sampler(cgroup, limit_bytes, thresholds)
        sampler.start()
        cell.load1 = round(os.getloadavg()[0], 2)
        script = DRIVER.format(address=address, step=step, total=TOTAL_BYTES, period=period,
                               timeout=DRIVER_GET_TIMEOUT_S)
        try:
            result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                                    text=True, timeout=DRIVER_TIMEOUT_S)
            driver_output = result.stdout + "\n--- stderr ---\n" + result.stderr
            marker = result.stdout.rfind("OUTCOME ")
            if marker >= 0:
                # raw_decode: anything printed after the JSON on the same line is ignored
                outcome, _end = json.JSONDecoder().raw_decode(result.stdout, marker + len("OUTCOME "))
                cell.driver_error = outcome["error"]
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
            if settled and (node is None or node.reports()):
                break
            time.sleep(0.1)
        time.sleep(0.5)
        sampler.stop()

        cell.oom_kills = cgroup.oom_kill_count() - oom_before
        cell.peak_ws_fraction = sampler.peak_ws / limit_bytes
        cell.peak_usage_fraction = cgroup.max_usage_bytes() / limit_bytes
        cell.hog_pid = sampler.hog_pid
        cell.sample_count = sampler.samples
        cell.measured_rate_mib_s = sampler.measured_rate_mib_s()
        if sampler.hog_seen is not None:
            cell.crossed_ms_after_hog_start = {
                f"{t:g}": None if when is None else round((when - sampler.hog_seen) * 1000, 1)
                for t, when in sampler.crossed.items()}

        raylet_out = temp_dir / "session_latest" / "logs" / "raylet.out"
        ray_pids, cell.ray_view_at_kill = ray_kills(raylet_out)
        reports = node.reports() if node is not None else []
        cell.reports = [r["kind"] for r in reports]
        killers = []
        hog = sampler.hog_pid
        guard_victims = [r["victim"]["pid"] for r in reports if r["kind"] == "monitor_kill"]
        ray_victims = ray_pids + [r["victim"]["pid"] for r in reports if r["kind"] == "ray_monitor_kill"]
        if guard_victims:
            killers.append("rayguard")
        if ray_victims:
            killers.append("ray")
        if cell.oom_kills:
            killers.append("kernel")
        cell.killers = killers
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
                  lambda: cgroup.remove(timeout_s=30),
                  lambda: shutil.rmtree(temp_dir, ignore_errors=True)])
    return cell


# -- monitor overhead -----------------------------------------------------------------------

def cpu_seconds(pid: int) -> float:
    fields = read_small(f"/proc/{pid}/stat").rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def measure_overhead(parent: Path, limit_bytes: int, refresh_ms: int, seconds: float) -> dict[str, Any]:
    cgroup = MemoryCgroup.create(parent, "rg-oomrace-idle", limit_bytes)
    temp_dir = short_temp_dir("rgr-")
    node: Node | None = None
    try:
        env = {"RAYGUARD_NUM_CPUS": "1", "RAYGUARD_GUARD_REFRESH_MS": str(refresh_ms)}
        node = start_node("head", cgroup, pod_view=False, env=env, temp_dir=temp_dir)
        node.wait_ready()
        time.sleep(3)  # let start-up settle
        runtime = [p for p in cgroup.pids()
                   if b"rayguard_node" in cmdline(p) and b"\0run" in cmdline(p)]
        if len(runtime) != 1:
            raise RuntimeError(f"expected one rayguard-node process in the cgroup, found {runtime}")
        pid = runtime[0]
        others = [p for p in cgroup.pids() if p != pid]

        def others_cpu() -> float:
            total = 0.0
            for other in others:
                try:
                    total += cpu_seconds(other)
                except OSError:
                    pass
            return total

        wall0, cpu0, rest0 = time.monotonic(), cpu_seconds(pid), others_cpu()
        time.sleep(seconds)
        wall1, cpu1, rest1 = time.monotonic(), cpu_seconds(pid), others_cpu()
        window = wall1 - wall0
        return {"guard_refresh_ms": refresh_ms, "window_s": round(window, 2),
                "rayguard_cpu_s": round(cpu1 - cpu0, 3),
                "rayguard_pct_of_core": round((cpu1 - cpu0) / window * 100, 3),
                "ray_processes_pct_of_core": round((rest1 - rest0) / window * 100, 2)}
    finally:
        teardown([(lambda: node.stop(timeout_s=15)) if node is not None else None,
                  lambda: cgroup.remove(timeout_s=30),
                  lambda: shutil.rmtree(temp_dir, ignore_errors=True)])


# -- output ---------------------------------------------------------------------------------

def rate_label(rate: str) -> str:
    return {"256": "256 MiB/s", "1024": "1 GiB/s", "max": "max"}.get(rate, rate)


def measured_label(cell: Cell) -> str:
    if cell.measured_rate_mib_s is None:
        return "-"
    target = RATES[cell.rate][1]
    slow = target is not None and cell.measured_rate_mib_s < SLOW_RATE * target
    return f"{cell.measured_rate_mib_s:.0f} MiB/s" + (" !" if slow else "")


def table(cells: list[Cell]) -> str:
    header = ["setup", "rate", "measured", "driver saw", "oom_kill", "peak ws", "threshold",
              "kill ms", "freed ms", "who killed"]
    rows = []
    repeated = any(cell.run > 1 for cell in cells)
    for cell in cells:
        latency = "-" if cell.latency_ms is None else f"{cell.latency_ms:.0f}"
        resolution = cell.latency_resolution_ms
        if cell.latency_ms is not None and resolution is not None and resolution > 10:
            latency += f" (±{resolution:.0f})"
        rows.append([
            ROWS[cell.row].label + (f" #{cell.run}" if repeated else ""), rate_label(cell.rate),
            measured_label(cell),
            "ERROR: " + (cell.error or "")[:40] if cell.error else (cell.driver_error or "(survived)"),
            str(cell.oom_kills), f"{cell.peak_ws_fraction:.3f}",
            "-" if cell.latency_threshold is None else f"{cell.latency_threshold:g}",
            latency, "-" if cell.released_ms is None else f"{cell.released_ms:.0f}", cell.who_killed,
        ])
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    lines = [" | ".join(h.ljust(w) for h, w in zip(header, widths)),
             "-|-".join("-" * w for w in widths)]
    lines += [" | ".join(str(v).ljust(w) for v, w in zip(r, widths)) for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", default="256,1024,max", help="comma-separated: 256,1024,max")
    parser.add_argument("--rows", default=",".join(ROWS), help="comma-separated: " + ",".join(ROWS))
    parser.add_argument("--limit-gib", type=float, default=3.0)
    parser.add_argument("--repeat", type=int, default=1, help="runs of each cell (noisy machines)")
    parser.add_argument("--overhead-seconds", type=float, default=20.0,
                        help="idle window for the overhead measurement (0 skips it)")
    parser.add_argument("--overhead-refresh-ms", default="50,250",
                        help="guard refreshes to measure the overhead at")
    parser.add_argument("--json", type=Path, help="write the results as JSON here")
    parser.add_argument("--keep-logs", type=Path,
                        help="copy each cell's Ray and rayguard logs and working-set series here")
    args = parser.parse_args(argv)

    rates = [r.strip() for r in args.rates.split(",") if r.strip()]
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    for rate in rates:
        if rate not in RATES:
            parser.error(f"unknown rate {rate!r}; choose from {', '.join(RATES)}")
    for row in rows:
        if row not in ROWS:
            parser.error(f"unknown row {row!r}; choose from {', '.join(ROWS)}")
    parent = writable_v1_parent()
    if parent is None:
        print(f"oom_race needs a writable cgroup v1 memory controller: {why_not_writable()}",
              file=sys.stderr)
        return 2
    limit_bytes = int(args.limit_gib * GiB)

    # SIGTERM (or a timeout) must still run the finally blocks that remove cgroups.
    def interrupted(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    started = time.monotonic()
    load_before = os.getloadavg()
    cells: list[Cell] = []
    overhead: list[dict[str, Any]] = []
    interrupted_run = False
    try:
        for row_key, rate, run in itertools.product(rows, rates, range(1, args.repeat + 1)):
            t0 = time.monotonic()
            keep = None if args.keep_logs is None else args.keep_logs / f"run{run}"
            cell = run_cell(parent, ROWS[row_key], rate, limit_bytes, keep)
            cell.run = run
            cells.append(cell)
            print(f"[{time.monotonic() - started:6.0f}s] {row_key:<16} {rate:>4} #{run}: "
                  f"{cell.driver_error or 'survived'}, oom_kill={cell.oom_kills},"
                  f" peak={cell.peak_ws_fraction:.3f}, kill={cell.latency_ms} ms,"
                  f" freed={cell.released_ms} ms, killed by {cell.who_killed}, load {cell.load1}"
                  f" ({time.monotonic() - t0:.0f}s)"
                  + (f"\n    error: {cell.error}" if cell.error else ""), flush=True)
        if args.overhead_seconds > 0:
            for refresh in [int(r) for r in args.overhead_refresh_ms.split(",") if r.strip()]:
                result = measure_overhead(parent, limit_bytes, refresh, args.overhead_seconds)
                overhead.append(result)
                print(f"[{time.monotonic() - started:6.0f}s] overhead at {refresh} ms: "
                      f"{result['rayguard_pct_of_core']:.2f}% of one core", flush=True)
    except KeyboardInterrupt:
        interrupted_run = True
        print("interrupted: printing what was measured", file=sys.stderr)
    load_after = os.getloadavg()

    print()
    print(f"OOM race: {args.limit_gib:g} GiB cgroup, one task allocating up to "
          f"{TOTAL_BYTES // GiB} GiB; working set = usage - total_inactive_file")
    print(table(cells))
    if any(measured_label(c).endswith("!") for c in cells):
        print(f"! measured rate (working set from 50% to 85% of the limit) under {SLOW_RATE:.0%} of"
              " the target: the task could not commit memory that fast here at that moment")
    for result in overhead:
        print(f"monitor overhead (rayguard-node idle, guard refresh {result['guard_refresh_ms']} ms):"
              f" {result['rayguard_pct_of_core']:.2f}% of one core over {result['window_s']:.0f} s"
              f" (Ray's own processes: {result['ray_processes_pct_of_core']:.1f}%)")
    print(f"load average before/after: {load_before[0]:.2f} / {load_after[0]:.2f} on "
          f"{os.cpu_count()} CPUs; total {time.monotonic() - started:.0f} s")
    if args.json is not None:
        args.json.write_text(json.dumps({
            "limit_bytes": limit_bytes, "total_bytes": TOTAL_BYTES, "rates": rates,
            "cells": [asdict(c) for c in cells], "overhead": overhead,
            "cpus": os.cpu_count(), "loadavg_before": load_before, "loadavg_after": load_after,
            "seconds": round(time.monotonic() - started, 1)}, indent=2))
    if interrupted_run:
        return 130
    return 1 if any(c.error for c in cells) else 0


if __name__ == "__main__":
    sys.exit(main())

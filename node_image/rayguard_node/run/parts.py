"""Wiring of the runtime's parts for one node: what to measure, where to report.

Kept apart from the supervisor so the lifecycle reads as a sequence of steps and the
wiring as a list of parts.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import psutil
from prometheus_client import CollectorRegistry

from rayguard_node.cgroup.processes import RAYLET, ProcessMemory, pids_in_cgroup, scan
from rayguard_node.contract.live import WRITE_PERIOD_S
from rayguard_node.cgroup.reading import read_bytes
from rayguard_node.cgroup.files import UsageReader, WorkingSetSampler, oom_counted_in, read_oom_kill_count
from rayguard_node.cgroup.detect import detect, parse_meminfo
from rayguard_node.guard.actors import ActorDirectory, node_id_of_raylet
from rayguard_node.guard.killer import Guard, TaskTracker, process_gone
from rayguard_node.guard.quota import QuotaEnforcer, title_matches
from rayguard_node.run.health import HealthServer, RuntimeCollector
from rayguard_node.guard.kernel_oom import KernelOomDetector
from rayguard_node.reporting.ledger import FlushPolicy, Ledger
from rayguard_node.reporting.live import LiveView
from rayguard_node.guard.loop import MonitorLoop, Pollers
from rayguard_node.sizing.plan import HEAD, MemoryPlan
from rayguard_node.guard.ray_monitor import RayMonitorReporter
from rayguard_node.profiling.index import ProfileIndex
from rayguard_node.reporting.redis_server import RedisServer, redis_client
from rayguard_node.reporting.sink import ReportSink
from rayguard_node.run.config import RunConfig

log = logging.getLogger(__name__)

REPORT_FLUSH_PERIOD_S = 0.5
RAY_LOG_PERIOD_S = 0.25
LEDGER_PERIOD_S = 5.0
STAT_PERIOD_S = 0.25  # the inactive-file figure below the threshold is at most this old
PROFILE_PERIOD_S = 0.5  # the scan period: each scan's names reach the profile index


@dataclass
class RuntimeParts:
    health: HealthServer
    redis_server: RedisServer | None
    sink: ReportSink
    monitor: MonitorLoop
    actors: ActorDirectory | None = None
    live: LiveView | None = None

    def close(self) -> None:
        if self.actors is not None:
            self.actors.stop()
        if self.live is not None:
            self.live.remove()
        self.sink.flush_pending()
        if self.sink.pending_count:
            log.warning("%d reports could not reach Redis before exit (they are on stdout)",
                        self.sink.pending_count)
        if self.redis_server is not None:
            self.redis_server.stop()
        self.health.stop()


def _descendant_pids() -> set[int]:
    try:
        return {p.pid for p in psutil.Process().children(recursive=True)} | {os.getpid()}
    except psutil.Error:
        return {os.getpid()}


def _memory_sources(plan: MemoryPlan, procfs_root: Path, sysfs_root: Path
                    ) -> tuple[Callable[[], tuple[int, int]], Callable[[], set[int]], Callable[[], int | None]]:
    """(read usage, live pids, read oom_kill count) for this node's cgroup, or the host."""
    detection = detect(sysfs_root, procfs_root)
    if detection.measured_directory is None or detection.cgroup_version is None:
        log.warning("no memory cgroup: watching host memory and this process's descendants")

        def host_usage() -> tuple[int, int]:
            info = parse_meminfo((procfs_root / "meminfo").read_text(), "meminfo")
            used = info["MemTotal"] - info.get("MemAvailable", 0)
            return used, used

        return host_usage, _descendant_pids, lambda: None
    reader = UsageReader(Path(detection.measured_directory), detection.cgroup_version)
    threshold = plan.guard_threshold if plan.guard_mode != "disabled" else plan.usage_threshold
    # Usage bounds the working set from above: below the threshold no decision needs more.
    sampler = WorkingSetSampler(reader, int(threshold * plan.limit_bytes), stat_period_s=STAT_PERIOD_S)
    leaf = Path(str(detection.leaf_directory))
    version = detection.cgroup_version
    counted = oom_counted_in(version, leaf, Path(detection.measured_directory))

    cgroup_usage = sampler.read

    if detection.limited_by == "host":
        return cgroup_usage, _descendant_pids, lambda: read_oom_kill_count(counted, version)
    return (cgroup_usage, lambda: set(pids_in_cgroup(leaf)),
            lambda: read_oom_kill_count(counted, version))


def build_parts(config: RunConfig, plan: MemoryPlan, redis_password: str | None,
                procfs_root: Path, sysfs_root: Path, ray_running: Callable[[], bool],
                ray_started: Callable[[], bool] = lambda: True) -> RuntimeParts:
    redis_server = None
    if config.role == HEAD and not config.redis_url and config.gcs is None:
        workdir = config.effective_temp_dir / "rayguard-redis"
        workdir.mkdir(parents=True, exist_ok=True)
        if not redis_password:
            raise ValueError("the head's own Redis needs a password")
        redis_server = RedisServer(config.redis_port, redis_password, plan.redis_max_bytes, workdir)

    gcs, prefix = config.gcs, config.gcs.key_prefix if config.gcs else ""

    def client_factory():  # type: ignore[no-untyped-def]
        if gcs is not None:  # GCS fault tolerance: the external Redis, keys under the namespace
            return redis_client(gcs.host, gcs.port, gcs.password, gcs.username)
        if config.redis_url:
            return redis_client(config.redis_url, password=redis_password)
        host = "127.0.0.1" if config.role == HEAD else config.head_host
        return redis_client(host, config.redis_port, redis_password)

    sink = ReportSink(client_factory, key_prefix=prefix)
    read_usage, live_pids, read_oom = _memory_sources(plan, procfs_root, sysfs_root)
    runtime_pid = os.getpid()

    def scan_now():  # type: ignore[no-untyped-def]
        return scan(procfs_root, sorted(live_pids()), runtime_pid=runtime_pid)

    tracker = TaskTracker()
    guard = None
    if plan.guard_mode != "disabled":
        guard = Guard(plan.guard_threshold, plan.limit_bytes, tracker, scan_now, procfs_root)
    kernel = KernelOomDetector(read_oom, lambda pid: process_gone(procfs_root, pid))
    pollers = Pollers()
    actors, quota_check = _quota_parts(config, procfs_root, lambda: monitor.last_scan)
    profiles = (ProfileIndex(config.effective_temp_dir, config.profile, lambda: monitor.last_scan, procfs_root)
                if config.profile.enabled else None)
    monitor = MonitorLoop(identity=config.identity, limit_bytes=plan.limit_bytes,
                          threshold=plan.guard_threshold if guard else plan.usage_threshold,
                          read_usage=read_usage, scan=scan_now, emitter=sink, guard=guard,
                          kernel=kernel if kernel.supported else None, pollers=pollers,
                          period_ms=plan.guard_refresh_ms, min_period_ms=plan.guard_min_refresh_ms,
                          quota_check=quota_check, profile_of=profiles.profile_of if profiles else None)
    if profiles is not None:
        pollers.add(PROFILE_PERIOD_S, profiles.poll)
    ray_reporter = RayMonitorReporter(config.effective_temp_dir, config.identity, plan, monitor.report,
                                      live_pids)
    pollers.add(RAY_LOG_PERIOD_S, ray_reporter.poll)
    pollers.add(REPORT_FLUSH_PERIOD_S, sink.flush_pending)
    ledger = Ledger(client_factory, config.identity.pod or config.identity.role, key_prefix=prefix)
    pollers.add(LEDGER_PERIOD_S, lambda: ledger.record(monitor.last_scan, int(time.time() * 1000)))
    # The live view (`rayguard top`) reads the head's own Redis: not kept with fault tolerance.
    live = None if gcs is not None else LiveView(client_factory, config.identity.pod or config.identity.role, config.identity.group,
                    config.identity.role, monitor.state, lambda: monitor.last_scan, procfs_root,
                    quota_of=_quota_of(actors), forget_stale=config.role == HEAD)
    if live is not None:
        pollers.add(WRITE_PERIOD_S, live.write)
    if redis_server is not None:
        policy, flush_client = FlushPolicy(**config.flush_policy), client_factory()  # type: ignore[arg-type]
        pollers.add(policy.flush_period_secs, lambda: policy.maybe_flush(flush_client, time.monotonic()))

    registry = CollectorRegistry()
    registry.register(RuntimeCollector(monitor.state, lambda: sink.pending_count,
                                       lambda: sink.dropped_total, ray_running))

    def alive() -> bool:
        last = monitor.state.last_tick_monotonic
        return last == 0.0 or time.monotonic() - last < 10 * max(monitor.period_s, 0.25)

    health_client = client_factory()

    def ready() -> tuple[bool, str]:
        if not ray_running():
            return False, "ray is not running"
        if not ray_started():
            return False, "ray is starting"
        if not any(p.process_class == "raylet" for p in monitor.last_scan):
            return False, "raylet not up yet"
        if config.role == HEAD:  # the head's Redis, its own or external, holds the reports
            try:
                health_client.ping()
            except Exception as error:  # noqa: BLE001 (any failure means not ready)
                return False, f"redis not answering: {error}"
        return True, "ready"

    health = HealthServer(config.health_port, alive, ready, registry)
    if actors is not None:
        actors.start()
    return RuntimeParts(health, redis_server, sink, monitor, actors, live=live)


def _quota_of(actors: ActorDirectory | None) -> Callable[[ProcessMemory], int | None] | None:
    """An actor's `memory=` quota, for the live view; None for other processes, and when quota
    enforcement is off (no actor directory)."""
    if actors is None:
        return None

    def quota_of(process: ProcessMemory) -> int | None:
        actor = actors.actors().get(process.pid)  # the listing may name a pid reused since
        return actor.quota_bytes if actor is not None and title_matches(process, actor) else None

    return quota_of


def _quota_parts(config: RunConfig, procfs_root: Path, last_scan: Callable[[], list]
                 ) -> tuple[ActorDirectory | None, Callable | None]:  # type: ignore[type-arg]
    """The actor directory (Ray's state API on the head's dashboard) and the quota check."""
    if not config.quota.enabled:
        return None, None
    known: dict[int, str | None] = {}

    def node_id() -> str | None:  # from the raylet's command line, found in the latest scan
        for process in last_scan():
            if process.process_class == RAYLET:
                if process.pid not in known:
                    try:
                        cmdline = read_bytes(procfs_root / str(process.pid) / "cmdline", 1 << 16)
                    except OSError:
                        return None
                    known.clear()
                    known[process.pid] = node_id_of_raylet(cmdline.replace(b"\0", b" ").decode(errors="replace"))
                return known[process.pid]
        return None

    host = "127.0.0.1" if config.role == HEAD else config.head_host
    token_file = config.ray_auth_token_file or config.effective_temp_dir / "rayguard_auth_token"
    directory = ActorDirectory(f"http://{host}:{config.dashboard_port}", node_id, token_file)
    enforcer = QuotaEnforcer(config.quota)
    return directory, lambda processes, now: enforcer.check(processes, directory.actors(), now)

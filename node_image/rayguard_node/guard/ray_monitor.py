"""Ray's own memory-monitor kills, from raylet.out, as `ray_monitor_kill` reports."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

from rayguard_node.sizing.plan import MemoryPlan
from rayguard_node.guard.raylet_log import RayMonitorKill, RayMonitorKillDetector
from rayguard_node.contract.reports import RAY_MONITOR_KILL, Identity, NodeUsage, Report, TopEntry, Victim, new_report

log = logging.getLogger(__name__)


def ray_kill_report(kill: RayMonitorKill, identity: Identity, threshold: float,
                    pod_pids: set[int] | None = None) -> Report:
    """`pod_pids`: where Ray's top-10 list names processes outside this pod (it reads
    the whole /proc, which outside a pid namespace is the host's), keep only ours."""
    name = kill.process_name or ("ray::IDLE" if kill.worker_kind == "idle_worker" else "a Ray worker")
    victim = Victim(kill.pid, name, kill.memory_used_bytes, 0)
    applied = kill.threshold if kill.threshold is not None else threshold  # what Ray really used
    node = NodeUsage(kill.node_used_bytes, kill.node_limit_bytes, kill.fraction, applied)
    top = [TopEntry(pid, command, memory) for pid, memory, command in kill.top
           if pod_pids is None or pid in pod_pids or pid == kill.pid]
    return new_report(RAY_MONITOR_KILL, identity, victim, node, top)


class RayMonitorReporter:
    """Polled by the monitor loop; follows the raylet log across rotation and sessions."""

    def __init__(self, temp_dir: Path, identity: Identity, plan: MemoryPlan,
                 report: Callable[[Report], None],
                 pod_pids: Callable[[], set[int]] | None = None) -> None:
        # A temp dir that outlived a restart holds the old session's kills: skip them.
        self.detector = RayMonitorKillDetector(temp_dir, start_at_end=True)
        self.identity = identity
        self.threshold = plan.usage_threshold
        self.report = report
        self.pod_pids = pod_pids

    def poll(self) -> None:
        kills = self.detector.poll()
        pids = self.pod_pids() if kills and self.pod_pids is not None else None
        for kill in kills:
            log.warning("Ray's memory monitor killed %s (pid %s)", kill.task_name, kill.pid)
            self.report(ray_kill_report(kill, self.identity, self.threshold, pids))

"""`bench.autoscale`'s figures from its cluster runs (autoscale_cluster.py), and its tables.

Pure: a `ClusterRun` in, numbers and text out.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from bench.harness.autoscale_cluster import ClusterRun
from bench.harness.output import column_table, percentile

MiB = 1 << 20
# The Event reasons of kill reports (rayguard_operator.manifests.events), by who killed.
KILLERS = {"MemoryMonitorKill": "rayguard guard", "RayMemoryMonitorKill": "Ray's monitor",
           "KernelOOMKill": "kernel", "OOMKilled": "kernel (container)"}

# (key, label) of each latency step, in order; "demand" is the task's submission, "idle" its end.
LATENCY_STEPS = (
    ("up_event", "demand -> ScaledUp event (the autoscaler decides)"),
    ("up_pod_ready", "demand -> worker pod ready (rayguard-node /readyz)"),
    ("up_alive", "demand -> Ray node alive with its CPUs"),
    ("up_task", "demand -> the task runs"),
    ("node_start", "  of which ScaledUp -> Ray node alive (pod start)"),
    ("down_event", "idle -> ScaledDown event (the autoscaler decides)"),
    ("down_gone", "idle -> Ray node gone"),
    ("down_removed", "idle -> pod stopped, cgroup removed"),
)


def victims(kills: list[tuple[float, str, str, str]]) -> Counter[str]:
    """Killed processes by who reported killing them: one process two killers reported (both
    monitors can act on the same process at once) counts once, as "A + B"."""
    by_victim: dict[tuple[str, str], set[str]] = {}
    for index, (_, reason, pod, message) in enumerate(kills):
        pid = re.search(r"\(pid (\d+)", message)
        by_victim.setdefault((pod, pid.group(1) if pid else f"event {index}"), set()).add(KILLERS.get(reason, reason))
    return Counter(" + ".join(sorted(killers)) for killers in by_victim.values())


def _first_after(events: list[tuple[float, str, str]], reason: str, after: float) -> float | None:
    return next((t for t, r, _ in sorted(events) if r == reason and t >= after), None)


def _minus(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def latency_steps(run: ClusterRun) -> list[dict[str, float | None]]:
    """Per repetition, seconds of each step in LATENCY_STEPS (None: not seen)."""
    line, reps = run.timeline, []
    for rec in (r for r in run.records if r["kind"] == "latency"):
        up = _first_after(line.normal, "ScaledUp", rec["submit"])
        down = _first_after(line.normal, "ScaledDown", rec["task_end"])
        pods = sorted((t, name) for name, t in line.started.items() if t >= rec["submit"] and t <= rec["alive"])
        pod = pods[0][1] if pods else None
        reps.append({
            "up_event": _minus(up, rec["submit"]),
            "up_pod_ready": _minus(line.ready.get(pod) if pod else None, rec["submit"]),
            "up_alive": rec["alive"] - rec["submit"],
            "up_task": rec["task_start"] - rec["submit"],
            "node_start": _minus(rec["alive"], up),
            "down_event": _minus(down, rec["task_end"]),
            "down_gone": _minus(rec["gone"], rec["task_end"]),
            "down_removed": _minus(line.removed.get(pod) if pod else None, rec["task_end"]),
        })
    return reps


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def latency_table(reps: list[dict[str, float | None]], idle_timeout_s: int, interval_s: int) -> str:
    bounds = {
        "up_event": f"about one update interval ({interval_s} s) at most",
        "down_event": f"ideal: idleTimeoutSeconds = {idle_timeout_s} s; bound {idle_timeout_s} + {interval_s} s",
    }
    rows = []
    for key, label in LATENCY_STEPS:
        values = [r[key] for r in reps if r[key] is not None]
        rows.append([label, _s(percentile(values, 50)), _s(max(values) if values else None),
                     " ".join(_s(r[key]) for r in reps), bounds.get(key, "")])
    down = [r["down_event"] for r in reps if r["down_event"] is not None]
    over = (f"\nscale-down decided {_s(percentile(down, 50) - idle_timeout_s)} s (p50) and"
            f" {_s(max(down) - idle_timeout_s)} s (max) after the ideal of {idle_timeout_s} s") if down else ""
    return column_table(["step", "p50 s", "max s", "each rep s", "ideal / bound"], rows) + over


@dataclass
class Packing:
    """One side's batch of memory= tasks."""

    advertise: str
    advertised_memory_bytes: int
    advertised_cpus: int
    ray_memory_bytes: list[int]  # the `memory` resource of each worker node, as Ray had it
    nodes_launched: int
    scaled_up: list[str]  # the ScaledUp events' messages
    outcomes: Counter[str] = field(default_factory=Counter)  # per task: ok, or the error's type
    killers: Counter[str] = field(default_factory=Counter)  # killed processes by who reported the kill
    kernel_oom_kills: int = 0
    tasks_per_node: list[int] = field(default_factory=list)  # tasks that finished, per node
    peak_fraction: list[float] = field(default_factory=list)  # each node's peak working set / limit
    batch_s: float | None = None  # from submission to the last task's end
    pending: int = 0

    def tasks_fit(self, memory_bytes: int) -> int:
        return min(self.advertised_cpus, self.advertised_memory_bytes // memory_bytes)

    @property
    def died(self) -> int:
        return sum(n for outcome, n in self.outcomes.items() if outcome not in ("ok", "pending"))


def packing(run: ClusterRun) -> Packing:
    line = run.timeline
    tasks = [r for r in run.records if r["kind"] == "task"]
    submitted = next((r["at"] for r in run.records if r["kind"] == "submitted"), None)
    ends = [r.get("end", r.get("at")) for r in tasks]
    by_ip = Counter(r["ip"] for r in tasks if r["outcome"] == "ok")
    result = Packing(
        advertise=run.advertise, advertised_memory_bytes=int(run.advertised["memory"]),
        advertised_cpus=int(run.advertised.get("CPU", 0)),
        ray_memory_bytes=[int(r["memory_bytes"] or 0) for r in run.records if r["kind"] == "node"],
        nodes_launched=len(line.started), scaled_up=[m for _, r, m in line.normal if r == "ScaledUp"],
        outcomes=Counter(r["outcome"] for r in tasks),
        killers=victims(line.kills),
        kernel_oom_kills=sum(run.kernel_oom_kills.values()),
        tasks_per_node=[by_ip.get(line.ip[pod], 0) for pod in sorted(line.started)],
        peak_fraction=[line.peak_working_set_bytes.get(pod, 0) / line.limit_bytes[pod] for pod in sorted(line.started)],
        batch_s=(max(ends) - submitted) if ends and submitted is not None else None,
        pending=sum(1 for r in tasks if r["outcome"] == "pending"),
    )
    return result


def _mib(values: list[int]) -> str:
    distinct = sorted(set(values))
    return ", ".join(f"{v / MiB:.0f}" for v in distinct) if distinct else "-"


def packing_table(sides: list[Packing], memory_bytes: int, tasks: int) -> str:
    def row(label: str, cell: Any) -> list[str]:
        return [label] + [str(cell(p)) for p in sides]

    killers = sorted({k for p in sides for k in p.killers})
    rows = [
        row("autoscaler told: memory per node, MiB", lambda p: f"{p.advertised_memory_bytes / MiB:.0f}"),
        row("Ray's memory resource per node, MiB", lambda p: _mib(p.ray_memory_bytes)),
        row(f"tasks of memory={memory_bytes / MiB:.0f} MiB a node holds, as told",
            lambda p: p.tasks_fit(memory_bytes)),
        row("worker nodes launched", lambda p: p.nodes_launched),
        row("ScaledUp events", lambda p: "; ".join(p.scaled_up) or "-"),
        row("tasks that finished", lambda p: f"{p.outcomes.get('ok', 0)} / {tasks}"),
        row("tasks that died (OOM)", lambda p: p.died),
        row("  driver saw", lambda p: ", ".join(f"{k} x{n}" for k, n in sorted(p.outcomes.items())
                                               if k not in ("ok", "pending")) or "-"),
    ]
    rows += [row(f"  processes killed, by who reported it: {k}", lambda p, k=k: p.killers.get(k, 0)) for k in killers]
    rows += [
        row("kernel OOM kills (cgroup counters)", lambda p: p.kernel_oom_kills),
        row("tasks still pending at the end", lambda p: p.pending),
        row("finished tasks per node", lambda p: " ".join(map(str, p.tasks_per_node)) or "-"),
        row("peak working set / limit per node (0.25 s samples)", lambda p: " ".join(f"{f:.2f}" for f in p.peak_fraction) or "-"),
        row("batch: submit -> last task ended, s", lambda p: _s(p.batch_s)),
    ]
    header = ["", *(f"memory = {'planned heap (rayguard)' if p.advertise == 'heap' else 'limit (KubeRay)'}"
                    for p in sides)]
    return column_table(header, rows)

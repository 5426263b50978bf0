"""Short tables for people: `detect` and `plan` without --json."""

from __future__ import annotations

from rayguard_node.cgroup.detect import MemoryDetection
from rayguard_node.sizing.plan import MemoryPlan
from rayguard_node.sizing.quantity import format_bytes


def _rows(rows: list[tuple[str, str]]) -> str:
    width = max(len(label) for label, _ in rows)
    return "\n".join(f"  {label:<{width}}  {value}" for label, value in rows)


def _warnings(warnings: tuple[str, ...]) -> str:
    return "".join(f"\n  ! {w}" for w in warnings)


def detection_table(d: MemoryDetection) -> str:
    where = "the host's MemTotal" if d.limited_by == "host" else f"set by {d.limited_by}"
    fraction = d.working_set_bytes / d.limit_bytes if d.limit_bytes else 0.0
    ray_note = "the same" if d.ray_sees_limit else "WRONG: Ray reads only the root cgroup file"
    rows = [
        ("memory limit", f"{format_bytes(d.limit_bytes)}  ({d.source}, {where})"),
        ("Ray 2.60 sees", f"{format_bytes(d.ray_limit_bytes)}  ({ray_note})"),
        ("usage", format_bytes(d.usage_bytes)),
        ("working set", f"{format_bytes(d.working_set_bytes)}  ({fraction:.1%} of the limit)"),
        ("kernel OOM kills", "not counted here" if d.oom_kill_count is None else str(d.oom_kill_count)),
        ("CPU limit", "none" if d.cpu_limit is None else f"{d.cpu_limit:g} cores"),
        ("/dev/shm", "not mounted" if d.shm_bytes is None
         else f"{format_bytes(d.shm_free_bytes or 0)} free of {format_bytes(d.shm_bytes)}"),
        ("cgroup", d.cgroup_path or "-"),
    ]
    return "Memory seen from this container\n" + _rows(rows) + _warnings(d.warnings)


def plan_table(p: MemoryPlan) -> str:
    def share(value: int) -> str:
        return f"{format_bytes(value):>11}  {value / p.limit_bytes:6.1%}"

    other = p.limit_bytes - p.object_store_bytes - p.redis_max_bytes - p.heap_bytes
    guard = ("off" if p.guard_mode == "disabled"
             else f"{p.guard_mode} at {p.guard_threshold:g}, every {p.guard_refresh_ms} ms"
             + (f" ({p.guard_min_refresh_ms} ms when growing fast)"
                if p.guard_min_refresh_ms < p.guard_refresh_ms else ""))
    rows = [
        ("memory limit", f"{format_bytes(p.limit_bytes):>11}  ({p.limit_source})"),
        ("object store", share(p.object_store_bytes)),
        ("redis (head)", share(p.redis_max_bytes)),
        ("heap (--memory)", share(p.heap_bytes)),
        ("unreserved", share(other) + "  (Ray's own processes, page cache, headroom)"),
        ("num-cpus", str(p.num_cpus) + ("  (the head runs no tasks)" if p.role == "head" and p.num_cpus == 0 else "")),
        ("Ray monitor", f"threshold {p.usage_threshold:g}, every {p.monitor_refresh_ms} ms"),
        ("rayguard guard", guard),
        ("ray start", " ".join(p.ray_start_args)),
    ]
    return f"Memory plan for a {p.role}\n" + _rows(rows) + _warnings(p.warnings)

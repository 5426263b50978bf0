"""bench/reconcile.py's results (`ScaleResult`, one per cluster count and cache mode) and how
they are printed: the side-by-side table and the details under it."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from bench.harness.output import column_table, fmt

MiB = 1024**2
READ_PARTS = ("reconcile", "resync", "oom", "other")


@dataclass
class ScaleResult:
    clusters: int
    workers: int
    cached: bool
    pods_s: float | None = None
    ready_s: float | None = None
    mark_ready_s: float = 0.0
    create_writes: Counter[str] = field(default_factory=Counter)
    ready_writes: Counter[str] = field(default_factory=Counter)
    reads: Counter[str] = field(default_factory=Counter)  # from the first create until the Ready passes are done
    noop_writes: Counter[str] = field(default_factory=Counter)
    noop_passes: int = 0
    noop_window_s: float = 0.0
    noop_first_pass_s: float = 0.0  # the longest any cluster waited for its first pass
    noop_longest_gap_s: float = 0.0  # the longest time between two passes over one cluster
    peak_rss: int | None = None
    create_passes: int = 0  # event-driven passes (the syncer's log)
    ready_passes: int = 0
    drain_s: float = 0.0
    operator_cpu_s: float = 0.0
    bench_cpu_s: float = 0.0
    wall_s: float = 0.0
    reached: str = ""
    problems: list[str] = field(default_factory=list)

    @property
    def mode(self) -> str:
        return "on" if self.cached else "off"


def per_cluster(counts: Counter[str], clusters: int, key: str) -> float:
    return counts.get(key, 0) / clusters


def others(counts: Counter[str]) -> int:
    return sum(v for k, v in counts.items() if k not in ("children", "status", "events"))


def table(results: list[ScaleResult]) -> str:
    header = ["clusters", "cache", "converge s (children / Ready)",
              "reads/cluster to Ready: events | resync | oom | other | all", "event passes/cluster",
              "writes/cluster: children | status | events | other", "no-op resync writes (passes)", "peak RSS MiB"]
    rows = []
    for r in results:
        total, n = r.create_writes + r.ready_writes, r.clusters
        converge = (f"{r.pods_s:.1f} / {r.ready_s:.1f}" if r.ready_s is not None
                    else f"{r.pods_s:.1f} / -" if r.pods_s is not None else "-")
        reads = " | ".join(fmt(r.reads.get(part, 0) / n) for part in READ_PARTS)
        reads += f" | {fmt(sum(r.reads.get(p, 0) for p in READ_PARTS) / n)}"
        writes = " | ".join(fmt(per_cluster(total, n, k)) for k in ("children", "status", "events"))
        noop = f"{sum(r.noop_writes.values())} ({r.noop_passes})" if r.ready_s is not None else "-"
        rows.append([str(n), r.mode, converge, reads if r.ready_s is not None else "-",
                     fmt((r.create_passes + r.ready_passes) / n), f"{writes} | {fmt(others(total) / n)}", noop,
                     f"{r.peak_rss / MiB:.0f}" if r.peak_rss else "-"])
    return column_table(header, rows)


def details(results: list[ScaleResult], workers: int, resync_s: float) -> str:
    children = 3 + workers
    out = []
    for r in results:
        n, label = r.clusters, f"{r.clusters} clusters, cache {r.mode}"
        if r.reached:
            out.append(f"{label}: did not converge: {r.reached}")
        if r.ready_s is None:
            continue
        total = r.create_writes + r.ready_writes
        other = {k: v for k, v in total.items() if k not in ("children", "status", "events")}
        out.append(
            f"{label}: status writes/cluster {fmt(r.create_writes['status'] / n)} while creating +"
            f" {fmt(r.ready_writes['status'] / n)} while pods became Ready; other: "
            + (", ".join(f"{k} {fmt(v / n)}/cluster" for k, v in sorted(other.items())) or "none")
            + f"; marking {n * (1 + workers)} pods Ready took the bench {r.mark_ready_s:.1f} s of the Ready time;"
            + f" kopf's own reads {fmt(r.reads.get('kopf', 0) / n)}/cluster")
        if sum(r.noop_writes.values()):
            out.append(f"{label}: no-op resync wrote: " + ", ".join(
                f"{k} {v}" for k, v in sorted(r.noop_writes.items())))
        out.append(f"{label}: event-driven passes/cluster: {r.create_passes / n:.1f} while creating,"
                   f" {r.ready_passes / n:.1f} while pods became Ready (the last ran"
                   f" {r.drain_s:.0f} s after the status writes stopped); no-op window {r.noop_window_s:.1f} s,"
                   f" {r.noop_passes} resync passes ({r.noop_passes / n:.1f} per cluster); every cluster had one"
                   f" within {r.noop_first_pass_s:.1f} s; longest gap between two over one cluster"
                   f" {r.noop_longest_gap_s:.1f} s")
        out.append(f"{label}: CPU over {r.wall_s:.0f} s: operator {r.operator_cpu_s:.0f} s,"
                   f" emulator + bench {r.bench_cpu_s:.0f} s")
        for line in r.problems[:5]:
            out.append(f"{label}: operator log: {line[:200]}")
    out.append("")
    out.append(f"naive reconcile (computed, not run): PUT all {children} children + the status on every pass")
    for r in results:
        n = r.clusters
        out.append(f"  {n:>4} clusters: {children + 1} x {n} = {(children + 1) * n} writes per no-op resync pass"
                   f" (rayguard, cache {r.mode}: {sum(r.noop_writes.values()) if r.ready_s is not None else '-'});"
                   f" at the default 60 s resync {(children + 1) * n * 60} writes/hour")
    return "\n".join(out)

"""OOM reports to Kubernetes Events: latency, and what a burst costs, rayguard against naive.

The operator (`rayguard operator --standalone`, its own process) runs against the Kubernetes
API emulator, with its OOM daemon following each cluster's `rayguard:reports` stream. Each
cluster's head Redis is a real `redis-server`, reachable where the operator looks for it:
the head Service's clusterIP (the emulator assigns each a loopback address, 127.1.x.y)
on port 6380, with the password from the cluster Secret. Reports are written as the
runtimes write them: `ReportSink(...).emit(report)` and `flush_pending()`.

Measured in one run, one design after another: rayguard once for each `--oom-threads` value
(RAYGUARD_OPERATOR_OOM_THREADS, the threads its OOM path's API calls run on; by default the
size of asyncio's default pool here, which that path used before the setting, and the
setting's default), each against a fresh emulator and fresh heads; then a naive consumer
(one Event created and one status update per report, no aggregation, its own process too)
on the last design's heads:

- report -> Event latency, p50 and p99: from the XADD until the emulator has stored the
  Event on the RayCluster (created, or its count raised). With 1 cluster (reports 3 s
  apart), and with 50 clusters (one report to each, all written at the same moment, 5
  rounds).
- a burst of 1,000 reports to one cluster (100 each from its 10 workers, one task name):
  the time until `status.oom` counts all of them, the time until the Events' counts add up
  to 1,000, the Event objects written and the writes it took.

Before each latency case the bench process's heap is frozen out of Python's garbage collector
(`freeze_heap`): the emulator in it stands in for an API server, which does not pause for that.
`--api-latency-ms` delays every API request, as a real API server's round trip would; without
it the emulator answers at once and the bound is CPU (the operator's, and the emulator's).

Run, from the repository root:
  .venv/bin/python -m bench.oom_events [--samples 40] [--clusters 50] [--rounds 5] [--burst 1000]
                                       [--oom-threads 6,16] [--no-naive] [--api-latency-ms 0]
It needs `redis-server` on PATH; it stops every redis-server and process it started.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.harness.oom_events_clusters import REDIS_PORT, Bench
from bench.harness.oom_events_naive import NAIVE_AGENT, NaiveConsumer, naive_consumer
from bench.harness.output import load_line, ms, seconds
from bench.harness.waiting import wait_until
from rayguard_node.contract.reports import STREAM_KEY, Report
from rayguard_node.reporting.redis_server import redis_client
from rayguard_operator.settings import DEFAULT_OOM_THREADS, MAX_OOM_THREADS

SAMPLE_GAP_S = 3.0
# Before RAYGUARD_OPERATOR_OOM_THREADS the OOM path ran on asyncio's default pool: this many threads.
OLD_POOL = min(32, (os.cpu_count() or 1) + 4)
DEFAULT_THREADS = f"{OLD_POOL},{DEFAULT_OOM_THREADS}"


def thread_counts(text: str) -> list[int]:
    try:
        counts = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected whole numbers separated by commas") from None
    if not counts or not all(1 <= n <= MAX_OOM_THREADS for n in counts):
        raise argparse.ArgumentTypeError(f"{text!r}: each from 1 to {MAX_OOM_THREADS}")
    return counts


@dataclass
class DesignResult:
    design: str
    one: list[float] = field(default_factory=list)          # latency s, RayCluster Event
    one_pod: list[float] = field(default_factory=list)      # latency s, Pod Event (rayguard)
    many: list[float] = field(default_factory=list)
    many_pod: list[float] = field(default_factory=list)
    burst_status_s: float | None = None
    burst_events_s: float | None = None
    burst_objects: int = 0
    burst_event_writes: int = 0
    burst_status_writes: int = 0
    burst_flush_s: float = 0.0
    notes: list[str] = field(default_factory=list)



def event_names(report: Report, design: str) -> tuple[str, str | None]:
    """(Event on the RayCluster, Event on the Pod or None) that a report leads to."""
    from rayguard_operator.oom.messages import report_key

    if design == "naive":
        return f"{report.identity.cluster}.{report.id}", None
    digest = report_key(report).digest()
    return f"{report.identity.cluster}.oom-{digest}", f"{report.identity.pod}.oom-{digest}"


def operator_agent(design: str) -> str:
    return NAIVE_AGENT if design == "naive" else "OpenAPI-Generator"


def freeze_heap() -> None:
    """Keep what exists now out of this process's garbage collections. The emulator, in this
    process, stands in for an API server, which does not stop for Python's collector; with 50
    clusters' objects in its heap a full collection stopped it for 150 to 400 ms, in the middle
    of a round. What is made from here on is still collected."""
    gc.collect()
    gc.freeze()


def latency_one(bench: Bench, design: str, result: DesignResult) -> None:
    head = bench.heads["c00"]
    agent = operator_agent(design)
    for k in range(bench.args.samples):
        tick = time.monotonic()
        report = bench.report("c00", head.workers[k % len(head.workers)], "ray::allocate_memory", 4000 + k)
        on_cluster, on_pod = event_names(report, design)
        start = len(bench.emulator.event_writes)
        sent = bench.send(head, report)
        done = bench.wait_event(on_cluster, start, agent)
        if done is None:
            result.notes.append(f"1 cluster: no Event for report {k} within 60 s")
        else:
            result.one.append(done - sent)
        if on_pod is not None:
            done_pod = bench.wait_event(on_pod, start, agent)
            if done_pod is not None:
                result.one_pod.append(done_pod - sent)
        time.sleep(max(0.0, SAMPLE_GAP_S - (time.monotonic() - tick)))


def latency_many(bench: Bench, design: str, result: DesignResult, names: list[str]) -> None:
    agent = operator_agent(design)
    for round_ in range(bench.args.rounds):
        tick = time.monotonic()
        batch = []
        for i, name in enumerate(names):
            head = bench.heads[name]
            report = bench.report(name, head.workers[(i + round_) % len(head.workers)], "ray::simultaneous",
                                  5000 + round_)
            head.sink.emit(report)
            batch.append((head, report))
        sent = {}
        start = len(bench.emulator.event_writes)
        for head, report in batch:  # one XADD after another, each timed: about 1 ms apart
            sent[report.id] = time.monotonic()
            head.sink.flush_pending()
        for head, report in batch:
            on_cluster, on_pod = event_names(report, design)
            done = bench.wait_event(on_cluster, start, agent)
            if done is None:
                result.notes.append(f"{len(names)} clusters: no Event for {head.cluster} in round {round_}")
            else:
                result.many.append(done - sent[report.id])
            if on_pod is not None:
                done_pod = bench.wait_event(on_pod, start, agent)
                if done_pod is not None:
                    result.many_pod.append(done_pod - sent[report.id])
        time.sleep(max(0.0, SAMPLE_GAP_S - (time.monotonic() - tick)))


def burst(bench: Bench, design: str, result: DesignResult, task: str) -> None:
    head = bench.heads["c00"]
    agent = operator_agent(design)
    base = int((bench.cluster_status("c00").get("oom") or {}).get("total") or 0)
    reports = [bench.report("c00", head.workers[k % len(head.workers)], task, 10_000 + k)
               for k in range(bench.args.burst)]
    names_cluster = {event_names(r, design)[0] for r in reports}
    names_pod = {event_names(r, design)[1] for r in reports} - {None}
    writes_before = len(bench.emulator.event_writes)
    status_mark = bench.emulator.mark()
    for report in reports:
        head.sink.emit(report)
    started = time.monotonic()
    head.sink.flush_pending()
    result.burst_flush_s = time.monotonic() - started
    target = base + len(reports)
    exact = wait_until(lambda: int((bench.cluster_status("c00").get("oom") or {}).get("total") or 0) >= target,
                       600, 0.02)
    if exact:
        result.burst_status_s = time.monotonic() - started
    else:
        result.notes.append(f"burst: status.oom.total did not reach {target} in 600 s")

    def counts(names: set[str]) -> int:
        latest: dict[str, int] = {}
        for write in bench.emulator.event_writes[writes_before:]:
            if write.name in names and write.agent.startswith(agent):
                latest[write.name] = write.count
        return sum(latest.values())

    def events_exact() -> bool:
        return counts(names_cluster) >= len(reports) and (not names_pod or counts(names_pod) >= len(reports))
    if wait_until(events_exact, 600, 0.05):
        # the emulator's write time of the last Event write that was needed
        last = max(w.time for w in bench.emulator.event_writes[writes_before:]
                   if w.agent.startswith(agent) and (w.name in names_cluster or w.name in names_pod))
        result.burst_events_s = last - started
    else:
        result.notes.append(f"burst: Event counts did not add up to {len(reports)} in 600 s"
                            f" (RayCluster side {counts(names_cluster)}, Pod side {counts(names_pod)})")
    time.sleep(2.0)  # late writes, if any, are counted too
    ours = [w for w in bench.emulator.event_writes[writes_before:]
            if w.agent.startswith(agent) and (w.name in names_cluster or w.name in names_pod)]
    result.burst_objects = len({w.name for w in ours})
    result.burst_event_writes = len(ours)
    result.burst_status_writes = bench.emulator.count_writes(since=status_mark, resource="rayclusters/status")


def last_ids(bench: Bench) -> dict[str, str]:
    out = {}
    for name, head in bench.heads.items():
        client = redis_client(head.ip, REDIS_PORT, head.password)
        try:
            entries = client.xrevrange(STREAM_KEY, count=1)
            out[name] = entries[0][0].decode() if entries else "0-0"
        finally:
            client.close()
    return out


def rayguard_design(bench: Bench, threads: int, names: list[str]) -> DesignResult:
    """The operator with RAYGUARD_OPERATOR_OOM_THREADS=`threads`: 1 cluster, then all, then the
    burst; it is stopped at the end."""
    design = f"rayguard, {threads} OOM threads"
    ours = DesignResult(design)
    bench.start_operator(threads, f"operator-{threads}.log")
    bench.add_clusters(names[:1])
    bench.wait_followed(names[:1], "the operator's OOM daemon")
    progress(f"{design}: 1 cluster")
    freeze_heap()
    latency_one(bench, "rayguard", ours)
    bench.add_clusters(names[1:])
    bench.wait_followed(names, "the operator's OOM daemon")
    progress(f"{design}: {len(names)} clusters")
    freeze_heap()
    latency_many(bench, "rayguard", ours, names)
    if bench.args.burst:
        progress(f"{design}: burst")
        burst(bench, "rayguard", ours, "ray::burst_task")
    bench.stop_operator()
    if bench.operator is not None:
        ours.notes += [f"operator log: {line[:200]}" for line in bench.operator.problems()[:5]]
    return ours


def naive_design(bench: Bench, names: list[str], workdir: Path) -> DesignResult:
    """The naive consumer, on the same emulator and heads, reading from where the streams are."""
    naive = DesignResult("naive")
    ids = last_ids(bench)
    consumer = NaiveConsumer(bench.server.url, [
        {"name": n, "host": h.ip, "password": h.password, "last_id": ids[n]} for n, h in bench.heads.items()],
        workdir)
    try:
        bench.wait_followed(names, "the naive consumer")
        progress("naive: 1 cluster")
        freeze_heap()
        latency_one(bench, "naive", naive)
        progress(f"naive: {len(names)} clusters")
        latency_many(bench, "naive", naive, names)
        if bench.args.burst:
            progress("naive: burst")
            burst(bench, "naive", naive, "ray::burst_task_naive")
    finally:
        consumer.stop()
    return naive


def run(args: argparse.Namespace, workdir: Path) -> list[DesignResult]:
    """Each rayguard design against a fresh emulator and fresh heads (its 1-cluster case has only
    that cluster), one after another; the naive consumer after the last, on its heads."""
    results = []
    names = [f"c{i:02d}" for i in range(args.clusters)]
    for index, threads in enumerate(args.oom_threads):
        run_dir = workdir / f"run-{index}"
        run_dir.mkdir()
        bench = Bench(args, run_dir)
        try:
            bench.start()
            results.append(rayguard_design(bench, threads, names))
            if index == len(args.oom_threads) - 1 and not args.no_naive:
                results.append(naive_design(bench, names, workdir))
        finally:
            bench.close()
            gc.unfreeze()  # this design's emulator and heads may go now
    return results


STARTED = time.monotonic()


def progress(what: str) -> None:
    print(f"[{time.monotonic() - STARTED:5.0f}s] {what}", file=sys.stderr, flush=True)



def table(results: list[DesignResult], args: argparse.Namespace) -> str:
    header = ["design", "1 cluster p50 ms", "p99 ms", f"{args.clusters} clusters p50 ms", "p99 ms",
              "burst: status exact s", "Event counts exact s", "Event objects", "event writes", "status writes"]
    rows = [[r.design, ms(r.one, 50), ms(r.one, 99), ms(r.many, 50), ms(r.many, 99), seconds(r.burst_status_s),
             seconds(r.burst_events_s), str(r.burst_objects), str(r.burst_event_writes), str(r.burst_status_writes)]
            for r in results]
    widths = [max(len(row[i]) for row in rows + [header]) for i in range(len(header))]
    lines = [" | ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(header, widths)))]
    lines.append("-" * len(lines[0]))
    lines += [" | ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(row, widths)))
              for row in rows]
    return "\n".join(lines)


def details(results: list[DesignResult], args: argparse.Namespace) -> str:
    out = []
    for r in results:
        out.append(f"{r.design}: samples {len(r.one)} (1 cluster), {len(r.many)} ({args.clusters} clusters);"
                   f" mean {statistics.mean(r.one) * 1000:.0f} / {statistics.mean(r.many) * 1000:.0f} ms"
                   if r.one and r.many else f"{r.design}: too few samples")
        if r.one_pod:
            out.append(f"{r.design}: the Event on the Pod: p50 {ms(r.one_pod, 50)} ms, p99 {ms(r.one_pod, 99)} ms"
                       f" (1 cluster); p50 {ms(r.many_pod, 50)} ms, p99 {ms(r.many_pod, 99)} ms ({args.clusters} clusters)")
        out.append(f"{r.design}: the burst's {args.burst} XADDs took {r.burst_flush_s:.2f} s")
        out += [f"{r.design}: {note}" for note in r.notes]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=40, help="reports for the 1-cluster latency, 3 s apart")
    parser.add_argument("--clusters", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=5, help="rounds of one report per cluster")
    parser.add_argument("--burst", type=int, default=1000, help="reports in the burst to one cluster; 0: no burst")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument("--keep-logs", type=Path, help="copy the operator's and naive consumer's logs here")
    parser.add_argument("--oom-threads", type=thread_counts, default=DEFAULT_THREADS, metavar="N[,N...]",
                        help="RAYGUARD_OPERATOR_OOM_THREADS of each rayguard design, one run each (default"
                             f" {DEFAULT_THREADS}: asyncio's default pool on this machine, as before the setting,"
                             " and the setting's default)")
    parser.add_argument("--no-naive", action="store_true", help="leave out the naive consumer")
    parser.add_argument("--api-latency-ms", type=float, default=0.0,
                        help="delay every API request by this much, a real API server's round trip (default 0:"
                             " the emulator answers at once, and the operator's CPU is what is measured)")
    parser.add_argument("--naive-consumer", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.naive_consumer:
        return naive_consumer(args.naive_consumer)
    if shutil.which("redis-server") is None:
        print("oom_events needs redis-server on PATH", file=sys.stderr)
        return 2
    if args.clusters > 254:
        parser.error("--clusters: at most 254 (one loopback address each)")
    load_before = os.getloadavg()
    workdir = Path(tempfile.mkdtemp(prefix="rayguard-bench-oom-"))
    try:
        results = run(args, workdir)
        if args.keep_logs:
            args.keep_logs.mkdir(parents=True, exist_ok=True)
            for log in [*workdir.glob("run-*/operator-*.log"), workdir / "naive.log"]:
                if log.exists():
                    shutil.copy(log, args.keep_logs / log.name)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    load_after = os.getloadavg()
    print()
    print(f"OOM reports -> Events: operator against the API emulator, a real redis-server per head;"
          f" 1 cluster ({args.samples} reports, {SAMPLE_GAP_S:g} s apart), {args.clusters} clusters"
          f" ({args.rounds} rounds of one report each, at once), a burst of {args.burst} reports to one cluster;"
          f" API latency {args.api_latency_ms:g} ms; {os.cpu_count()} CPUs, where asyncio's default pool has"
          f" {OLD_POOL} threads")
    print(table(results, args))
    print(details(results, args))
    print(load_line(load_before, load_after))
    if args.json:
        args.json.write_text(json.dumps([r.__dict__ for r in results], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

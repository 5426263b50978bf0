"""What one `rayguard top` refresh costs, against reading the ledger's samples, in one run.

A real `redis-server` holds what a cluster of `--nodes` worker nodes with `--processes` task
workers each would write: every node's live view (`rayguard_node.reporting.live.LiveView`, the
runtime's own writer: 1,000 live rows by default) and the memory ledger's samples
(`rayguard_node.reporting.ledger.Ledger`, the runtime's own writer: `--samples` snapshots per
node, 5 s apart as the runtime records them; 60 = the last five minutes).

Measured, side by side:

- rayguard top: one refresh as `rayguard top --rows N` does it (`LiveReader.read`, then the
  table text): `TIME` + `HGETALL rayguard:live:nodes`, then one `ZREVRANGE ... 0 N-1` per node.
- naive: what a view without the live keys would do: `SCAN MATCH rayguard:sample:*` over the
  keyspace, `HGETALL` of every sample (pipelined per SCAN page), keep each process's latest
  sample, sort, and take the same N per node.

For each: wall time per refresh (p50, p95), Redis commands per refresh (from `INFO
commandstats`), round trips. Also what the writer costs a node (one `LiveView.write` of
`--processes` rows, on the runtime's monitor loop once a second) and what the live keys hold.

Run, from the repository root:
  .venv/bin/python -m bench.top [--nodes 10] [--processes 100] [--samples 60] [--rows 20]
                                [--repeat 30] [--naive-repeat 3]
It needs `redis-server` on PATH; it stops the redis-server it started.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import redis

from bench.harness.output import column_table, fmt, load_line, percentile
from rayguard_node.cgroup.processes import WORKER, ProcessMemory
from rayguard_node.contract.live import NODES_KEY, rows_key
from rayguard_node.reporting.ledger import SAMPLE_PREFIX, Ledger
from rayguard_node.reporting.live import LiveView
from rayguard_node.reporting.redis_server import RedisServer, redis_client
from rayguard_operator.local.ports import free_port
from rayguard_operator.top.reader import LiveReader
from rayguard_operator.top.view import render_table

MiB, GiB = 1 << 20, 1 << 30
T0_MS = 1_700_000_000_000
LEDGER_PERIOD_MS = 5000


class Numbers:
    def __init__(self, working_set_bytes: int) -> None:
        self.limit_bytes, self.working_set_bytes, self.threshold = 8 * GiB, working_set_bytes, 0.95


def node_processes(node: int, count: int) -> list[ProcessMemory]:
    return [ProcessMemory(100_000 + node * 1000 + i, f"ray::task_{i % 7}" if i % 3 else f"ray::Actor{i}",
                          WORKER, (50 + (i * 37 + node * 11) % 700) * MiB, 20 * MiB, 1000 + i)
            for i in range(count)]


def populate(server: RedisServer, nodes: int, processes: int, samples: int) -> list[LiveView]:
    """The ledger first (slow to fill), then the live views (their rows live 30 s)."""
    node_procs = [node_processes(node, processes) for node in range(nodes)]
    for node, procs in enumerate(node_procs):
        ledger = Ledger(server.client, f"bench-worker-cpu-{node}")
        for sample in range(samples):
            ledger.record(procs, T0_MS + sample * LEDGER_PERIOD_MS)
    views = []
    for node, procs in enumerate(node_procs):
        view = LiveView(server.client, f"bench-worker-cpu-{node}", "cpu", "worker",
                        Numbers((2 + node % 5) * GiB), lambda p=procs: p, Path("/proc"),
                        quota_of=lambda p: 1 * GiB if "Actor" in p.name else None)
        if not view.write():
            raise RuntimeError("the live view could not be written")
        views.append(view)
    return views


def commands(client: redis.Redis) -> int:
    stats = client.info("commandstats")
    return sum(int(s["calls"]) for name, s in stats.items() if name != "cmdstat_info")


def measure(run: Callable[[], Any], client: redis.Redis, repeat: int) -> tuple[list[float], float]:
    """(wall seconds of each run, Redis commands per run)."""
    run()  # connected, warm
    before = commands(client)
    walls = []
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        walls.append(time.perf_counter() - started)
    return walls, (commands(client) - before) / repeat


def rayguard_refresh(client: redis.Redis, rows: int, shown: list[int]) -> Callable[[], str]:
    reader = LiveReader(client, rows)

    def refresh() -> str:
        snapshot = reader.read()
        shown[:] = [len(snapshot.nodes), len(snapshot.rows)]
        return render_table(snapshot, "bench", "00:00:00", rows_per_node=rows)

    return refresh


def naive_refresh(client: redis.Redis, rows: int, round_trips: list[int]) -> Callable[[], list[Any]]:
    def refresh() -> list[Any]:
        latest: dict[tuple[bytes, bytes], dict[bytes, bytes]] = {}
        cursor, trips = 0, 0
        while True:
            cursor, keys = client.scan(cursor, match=SAMPLE_PREFIX + "*", count=1000)
            trips += 1
            if keys:
                pipe = client.pipeline(transaction=False)
                for key in keys:
                    pipe.hgetall(key)
                trips += 1
                for key, fields in zip(keys, pipe.execute()):
                    pod, time_ms, pid = key[len(SAMPLE_PREFIX):].rsplit(b":", 2)
                    if fields.get(b"class") != WORKER.encode():
                        continue
                    seen = latest.get((pod, pid))
                    if seen is None or int(time_ms) > int(seen[b"time"]):
                        latest[(pod, pid)] = fields
            if cursor == 0:
                break
        round_trips.append(trips)
        by_pod: dict[bytes, list[dict[bytes, bytes]]] = {}
        for (pod, _pid), fields in latest.items():
            by_pod.setdefault(pod, []).append(fields)
        return [sorted(found, key=lambda f: -int(f[b"rss_minus_shr"]))[:rows] for found in by_pod.values()]

    return refresh


def live_bytes(client: redis.Redis, pods: list[str]) -> int:
    return sum(int(client.memory_usage(key) or 0) for key in [NODES_KEY] + [rows_key(p) for p in pods])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.top", description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=10)
    parser.add_argument("--processes", type=int, default=100, help="task workers per node")
    parser.add_argument("--samples", type=int, default=60, help="ledger snapshots per node (5 s apart)")
    parser.add_argument("--rows", type=int, default=20, help="rows shown per node (rayguard top --rows)")
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--naive-repeat", type=int, default=3)
    args = parser.parse_args(argv)
    if shutil.which("redis-server") is None:
        print("bench.top needs redis-server on PATH", file=sys.stderr)
        return 2
    load_before = os.getloadavg()
    workdir = Path(tempfile.mkdtemp(prefix="rayguard-bench-top-"))
    server = RedisServer(free_port(), secrets.token_hex(16), 4 * GiB, workdir, bind="127.0.0.1")
    server.start()
    try:
        started = time.perf_counter()
        views = populate(server, args.nodes, args.processes, args.samples)
        client = redis_client("127.0.0.1", server.port, server.password)
        keys = int(client.dbsize())
        print(f"rayguard top: one refresh, {args.nodes} nodes x {args.processes} task workers ="
              f" {args.nodes * args.processes} live rows, {args.nodes * args.processes * args.samples}"
              f" ledger samples ({keys} keys; filled in {time.perf_counter() - started:.0f}s); --rows {args.rows}")
        shown: list[int] = []
        top_walls, top_commands = measure(rayguard_refresh(client, args.rows, shown), client, args.repeat)
        if shown[0] != args.nodes:
            raise RuntimeError(f"the reader saw {shown[0]} of {args.nodes} nodes")
        trips: list[int] = []
        naive = naive_refresh(client, args.rows, trips)
        naive_walls, naive_commands = measure(naive, client, args.naive_repeat)
        naive_shown = sum(len(found) for found in naive())
        write_walls, _ = measure(views[0].write, client, args.repeat)
        rows = [
            ["rayguard top (live keys)", f"{percentile(top_walls, 50) * 1000:.2f}",
             f"{percentile(top_walls, 95) * 1000:.2f}", fmt(top_commands), "2", str(shown[1])],
            ["naive (SCAN + HGETALL samples)", f"{percentile(naive_walls, 50) * 1000:.0f}",
             f"{percentile(naive_walls, 95) * 1000:.0f}", fmt(naive_commands), str(trips[-1]), str(naive_shown)],
        ]
        print(column_table(["refresh", "p50 ms", "p95 ms", "Redis commands", "round trips", "rows shown"], rows))
        print(f"speed-up at p50: {percentile(naive_walls, 50) / percentile(top_walls, 50):.0f}x;"
              f" commands: {naive_commands / top_commands:.0f}x fewer")
        print(f"writer (one node, {args.processes} rows, once a second on the monitor loop):"
              f" p50 {percentile(write_walls, 50) * 1000:.2f} ms, p95 {percentile(write_walls, 95) * 1000:.2f} ms;"
              f" live keys hold {live_bytes(client, [v.pod for v in views]) / MiB:.2f} MiB in Redis")
        print(load_line(load_before, os.getloadavg()))
        client.close()
    finally:
        server.stop(timeout_s=5)
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

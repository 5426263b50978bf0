"""What `bench.oom_events` measures against: the API emulator with Secrets stored as the API
server stores them and a log of Event writes, the operator, and clusters whose head Redis is
a real `redis-server`, reachable where the operator looks for it (the head Service's clusterIP,
127.0.1.N, port 6380); and the reports, written as the runtimes write them."""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import aiohttp.web
import attrs
import kmock
import kubernetes.client

from bench.harness import REPO
from bench.harness.emulator import NS, RecordingEmulator, bench_client, new_emulator
from bench.harness.operator_process import Operator, cluster_body
from bench.harness.waiting import wait_until
from rayguard_node.contract.reports import GUARD_KILL, Identity, NodeUsage, Report, TopEntry, Victim, \
    new_report
from rayguard_node.reporting.redis_server import RedisServer, redis_client
from rayguard_node.reporting.sink import ReportSink
from testkit.kube import EmulatorServer, write_kubeconfig

REDIS_PORT = 6380
REDIS_MAXMEMORY = 32 * 1024**2
WORKERS = 10
GiB = 1024**3


# --- the emulator: Secrets as the API server stores them, and a log of Event writes -------

class EventWrite(NamedTuple):
    time: float
    method: str
    name: str
    count: int
    agent: str


@attrs.define(kw_only=True)
class OomEmulator(RecordingEmulator):
    event_writes: list[EventWrite] = attrs.field(factory=list, init=False)
    # Notified on every Event write, so the bench waits for one without polling (a polling
    # thread would take the GIL from the emulator's own thread, in the same process).
    event_written: threading.Condition = attrs.field(factory=threading.Condition, init=False)
    # How long each request (not a watch) waits before it is served: a real API server's round
    # trip (network, etcd), which the emulator, answering from memory, does not have.
    api_latency_s: float = 0.0

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        if self.api_latency_s and raw_request.query.get("watch") not in ("true", "1"):
            await asyncio.sleep(self.api_latency_s)
        return await super().__call__(raw_request)

    async def _write(self, request: Any) -> Any:
        written = await super()._write(request)
        if request.resource is not None and request.resource.plural == "events" and request.method != "DELETE":
            obj = self._live((request.resource, written.namespace, written.name)) or {}
            with self.event_written:
                self.event_writes.append(EventWrite(time.monotonic(), request.method, written.name,
                                                    int(obj.get("count") or 1),
                                                    request.headers.get("User-Agent", "")))
                self.event_written.notify_all()
        return written


# --- the operator, with its OOM pool sized by RAYGUARD_OPERATOR_OOM_THREADS ---------------

class OomOperator(Operator):
    """`rayguard operator --standalone` as `Operator` starts it, and with
    RAYGUARD_OPERATOR_OOM_THREADS set: the one thing the designs compared here differ in."""

    def __init__(self, kubeconfig: Path, log_path: Path, resync_s: float, oom_threads: int) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAYGUARD_")}
        env.update(KUBECONFIG=str(kubeconfig), RAYGUARD_OPERATOR_NAMESPACES=NS,
                   RAYGUARD_OPERATOR_LOG_FORMAT="plain", RAYGUARD_OPERATOR_RESYNC_SECONDS=str(resync_s),
                   RAYGUARD_OPERATOR_NODE_IMAGE="rayguard/node:bench",
                   RAYGUARD_OPERATOR_OOM_THREADS=str(oom_threads))
        self.log_path = log_path
        self._log = log_path.open("w")
        self.process = subprocess.Popen([sys.executable, "-m", "rayguard_operator.cli", "operator", "--standalone"],
                                        stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=REPO)


# --- the bench's side: clusters, heads, reports --------------------------------------------

@dataclass
class Head:
    cluster: str
    ip: str
    password: str
    workers: list[str]
    server: RedisServer
    sink: ReportSink
    uid: str


class Bench:
    """The emulator, the operator and the clusters' heads of one `bench.oom_events` run."""

    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args, self.workdir = args, workdir
        self.emulator = new_emulator(OomEmulator)
        self.emulator.api_latency_s = getattr(args, "api_latency_ms", 0) / 1000
        self.server = EmulatorServer(self.emulator)
        self.heads: dict[str, Head] = {}
        self.servers: list[RedisServer] = []
        self.operator: Operator | None = None
        self.devnull = open(os.devnull, "w")

    # setup
    def start(self) -> None:
        self.server.__enter__()
        self.kubeconfig = write_kubeconfig(self.workdir / "kubeconfig", self.server.url)
        self.client = bench_client(self.server.url)
        self.core = kubernetes.client.CoreV1Api(self.client)
        self.custom = kubernetes.client.CustomObjectsApi(self.client)

    def start_operator(self, oom_threads: int, log_name: str = "operator.log") -> None:
        self.operator = OomOperator(self.kubeconfig, self.workdir / log_name, 60.0, oom_threads)

    def stop_operator(self) -> None:
        if self.operator is not None:
            self.operator.stop()

    def close(self) -> None:
        """Stop the operator, every redis-server (each by its PID) and the emulator."""
        try:
            self.stop_operator()
            for server in self.servers:
                server.stop(timeout_s=5)
            try:
                self.client.close()
            except AttributeError:  # never started
                pass
            self.server.__exit__(None, None, None)
        finally:
            self.devnull.close()

    def objects(self, plural: str, label: str | None = None) -> list[dict[str, Any]]:
        def read() -> list[dict[str, Any]]:
            out = []
            for (resource, _ns, _name), obj in self.emulator._objects.items():
                if resource.plural == plural and not obj.deleted:
                    raw = obj.raw
                    if label is None or (raw["metadata"].get("labels") or {}).get("rayguard.dev/cluster") == label:
                        out.append(raw)
            return out
        return self.server.call(read, timeout=30)

    def cluster_status(self, name: str) -> dict[str, Any]:
        key = (kmock.resource(group="rayguard.dev", version="v1", plural="rayclusters"), NS, name)
        cluster = self.server.call(lambda: self.emulator._live(key), timeout=30) or {}
        return cluster.get("status") or {}

    def add_clusters(self, names: list[str]) -> None:
        """Create the clusters, start a real Redis at each head Service's clusterIP (the emulator
        gives each a loopback address), and wait until the operator's daemon reads each stream."""
        for name in names:
            self.custom.create_namespaced_custom_object("rayguard.dev", "v1", NS, "rayclusters",
                                                        cluster_body(name, WORKERS))

        def children_exist() -> bool:
            pods, services = self.objects("pods"), self.objects("services")
            secrets = {s["metadata"]["name"] for s in self.objects("secrets")}
            for name in names:
                if sum(1 for p in pods if p["metadata"]["labels"].get("rayguard.dev/cluster") == name) != 1 + WORKERS:
                    return False
                if f"{name}-secret" not in secrets or not any(s["metadata"]["name"] == f"{name}-head" for s in services):
                    return False
            return True
        if not wait_until(children_exist, 300, 0.25):
            raise RuntimeError("the operator did not create every cluster's children in 300 s")
        for name in names:
            index = len(self.heads) + 1
            service = json.loads(self.core.read_namespaced_service(f"{name}-head", NS, _preload_content=False).data)
            ip = service["spec"]["clusterIP"]
            secret = json.loads(self.core.read_namespaced_secret(f"{name}-secret", NS, _preload_content=False).data)
            password = base64.b64decode(secret["data"]["redis-password"]).decode()
            server = RedisServer(REDIS_PORT, password, REDIS_MAXMEMORY, workdir=self.workdir / f"redis-{index}", bind=ip)
            self.servers.append(server)
            (self.workdir / f"redis-{index}").mkdir(parents=True, exist_ok=True)
            server.start()
            workers = sorted(p["metadata"]["name"] for p in self.objects("pods", name)
                             if p["metadata"]["labels"].get("rayguard.dev/node-type") == "worker")
            uid = next(c["metadata"]["uid"] for c in self.objects("rayclusters") if c["metadata"]["name"] == name)
            sink = ReportSink(lambda ip=ip, password=password: redis_client(ip, REDIS_PORT, password),
                              stdout=self.devnull, buffer_max=max(1000, self.args.burst))
            self.heads[name] = Head(name, ip, password, workers, server, sink, uid)

    def wait_followed(self, names: list[str], agent_hint: str, timeout: float = 90) -> None:
        """Until some client of each head Redis (the operator's daemon, or the naive consumer)
        is blocked in XREAD."""
        def followed(name: str) -> bool:
            client = redis_client(self.heads[name].ip, REDIS_PORT, self.heads[name].password)
            try:
                return any(c.get("cmd") == "xread" for c in client.client_list())
            finally:
                client.close()
        if not wait_until(lambda: all(followed(n) for n in names), timeout, 0.5):
            raise RuntimeError(f"{agent_hint} does not read every head's stream after {timeout:.0f} s")

    # reports
    def report(self, cluster: str, pod: str, task: str, pid: int) -> Report:
        identity = Identity(cluster=cluster, namespace=NS, pod=pod, group="cpu", role="worker")
        victim = Victim(pid=pid, name=task, rss_bytes=int(1.7 * GiB), shared_bytes=40 * 1024**2)
        node = NodeUsage(used_bytes=int(1.95 * GiB), limit_bytes=2 * GiB, fraction=0.975, threshold=0.95)
        top = [TopEntry(pid, task, int(1.66 * GiB)), TopEntry(pid + 1, "raylet", 60 * 1024**2)]
        return new_report(GUARD_KILL, identity, victim, node, top)

    def send(self, head: Head, report: Report) -> float:
        """Emit and flush as the runtime does; the time just before the XADD."""
        head.sink.emit(report)
        started = time.monotonic()
        head.sink.flush_pending()
        return started

    def wait_event(self, name: str, start: int, agent: str, timeout: float = 60) -> float | None:
        """The time the emulator stored a write of Event `name` by `agent`, looking at the
        writes from index `start` of its log on."""
        deadline = time.monotonic() + timeout
        with self.emulator.event_written:
            while True:
                writes = self.emulator.event_writes
                end = len(writes)
                for write in writes[start:end]:
                    if write.name == name and write.agent.startswith(agent):
                        return write.time
                start = end
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.emulator.event_written.wait(left)

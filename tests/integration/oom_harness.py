"""What the OOM-surfacing tests share: the operator under kopf that a test can stop and start
again, a kubelet's view of OOMKilled containers, and each cluster's head Redis.

The emulator assigns no clusterIP and runs no pods, so a test plays both parts: it sets the
head Service's `spec.clusterIP` to a loopback address of its own (Linux routes all of
127.0.0.0/8 to loopback, so each cluster gets its own `127.x.y.z:6380`) and runs a real
`redis-server` there with the password from the cluster's Secret. Runtimes write reports
with `ReportSink`, exactly as `rayguard-node` does.

Test modules import the fixture they use:
`from .oom_harness import oom_operator  # noqa: F401`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kmock
import pytest
import redis
import yaml

from rayguard_node.reporting.redis_server import RedisServer
from rayguard_node.reporting.sink import ReportSink
from rayguard_node.contract.reports import STREAM_KEY, Identity, NodeUsage, Report, TopEntry, Victim, new_report
from tests.integration.cluster_objects import GROUP, PLURAL, VERSION
from tests.integration.conftest import OperatorHarness, assert_rbac_was_enough, operator_under_chart_rbac
from testkit.kube import ChartMode, KubeApi, run_kopf

from .redis_fixtures import RedisServers

REPO = Path(__file__).resolve().parents[2]
MiB, GiB = 1024**2, 1024**3
REDIS_PORT = 6380  # the head Service's port named `redis`
MERGE = 'application/merge-patch+json'

OOM_REASONS = ('OOMKilled', 'MemoryMonitorKill', 'KernelOOMKill', 'RayMemoryMonitorKill',
               'MemoryQuotaExceeded')


def cluster_body(name: str, workers: int = 1) -> dict[str, Any]:
    body = yaml.safe_load((REPO / 'examples' / 'raycluster-minimal.yaml').read_text())
    body['metadata']['name'] = name
    body['spec']['workerGroups'][0]['replicas'] = workers
    return body


class BlackHole:
    """A head Redis that hangs: it accepts connections and never answers a byte."""

    def __init__(self, host: str, port: int = REDIS_PORT) -> None:
        self.host, self.port = host, port
        self._listener = socket.create_server((host, port))
        self._listener.settimeout(0.2)
        self._held: list[socket.socket] = []
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._accept, name='black-hole', daemon=True)
        self._thread.start()

    @property
    def accepted(self) -> int:
        return len(self._held)

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._listener.accept()
            except (TimeoutError, OSError):
                continue
            self._held.append(conn)

    def close(self) -> None:
        self._closed.set()
        self._thread.join(timeout=5)
        self._listener.close()
        for conn in self._held:
            conn.close()


def report(kind: str, cluster: str, pod: str, group: str = 'cpu', victim: str = 'ray::allocate_memory',
           pid: int = 4242, role: str = 'worker') -> Report:
    return new_report(
        kind, Identity(cluster, 'default', pod, group, role),
        Victim(pid, victim, rss_bytes=1536 * MiB, shared_bytes=512 * MiB),
        NodeUsage(used_bytes=1962 * MiB, limit_bytes=2 * GiB, fraction=0.958, threshold=0.95),
        [TopEntry(pid, victim, 1024 * MiB), TopEntry(pid + 1, 'ray::IDLE', 200 * MiB)])


class OomWriteGate:
    """Holds the OOM path's first status write to each of `clusters` in the emulator until
    `parties` of them are held at once, then lets them all go. Counting a report writes its
    RayCluster's status.oom (the operator tags those requests `rayguard-operator/oom` in its
    User-Agent, kube/caller.py; a reconcile pass's status writes go through untouched). So
    `parties` clusters held here at once were having reports counted at the same time.

    A hold gives up after `timeout_s` (the request then goes on), so too few at once is a test
    that waits for `most_at_once` and fails, not an operator that hangs. It stays under the
    operator's request timeout (30 s, kube/api.py), after which the held call would be given up
    and its thread freed."""

    def __init__(self, api: KubeApi, namespace: str, clusters: list[str], parties: int,
                 timeout_s: float = 25) -> None:
        self.parties, self.timeout_s = parties, timeout_s
        self.held = self.most_at_once = 0
        self._seen: set[str] = set()
        self._all_in: asyncio.Event | None = None

        def install() -> None:  # on the emulator's loop: its Event and reactions live there
            self._all_in = asyncio.Event()
            for name in clusters:  # a reaction that answers nothing only delays
                path = f'/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}/{name}/status'
                api.emulator[f'patch {path}'] << self._hold
        api.server.call(install)

    async def _hold(self, request: kmock.Request) -> None:
        assert self._all_in is not None
        if 'rayguard-operator/oom' not in request.headers.get('User-Agent', '').split():
            return
        if request.name in self._seen:
            return
        self._seen.add(str(request.name))
        self.held += 1
        self.most_at_once = max(self.most_at_once, self.held)
        if self.held >= self.parties:
            self._all_in.set()
        try:
            await asyncio.wait_for(self._all_in.wait(), self.timeout_s)
        except asyncio.TimeoutError:
            pass
        finally:
            self.held -= 1


class HeadRedis:
    """One cluster's head Redis and a runtime's ReportSink writing to it."""

    def __init__(self, server: RedisServer) -> None:
        self.server = server
        self.client = server.client()
        self.sink = ReportSink(server.client, stdout=io.StringIO())

    def write(self, *reports: Report) -> list[str]:
        """Emit and send reports as a runtime does; returns their stream ids, in order."""
        for item in reports:
            self.sink.emit(item)
        sent = self.sink.flush_pending()
        assert sent == len(reports) and self.sink.pending_count == 0, 'the sink could not send'
        return self.stream_ids(reports)

    def stream_ids(self, reports: tuple[Report, ...] | list[Report]) -> list[str]:
        by_report = {fields[b'id'].decode(): entry.decode()
                     for entry, fields in self.client.xrange(STREAM_KEY)}
        return [by_report[item.id] for item in reports]

    def last_id(self) -> str:
        [(entry, _fields)] = self.client.xrevrange(STREAM_KEY, count=1)
        return entry.decode()

    def followers(self) -> int:
        """Connections blocked in XREAD: the operator's daemon, waiting for reports."""
        try:
            return sum(1 for c in self.client.client_list() if c.get('cmd') == 'xread')
        except (redis.RedisError, OSError):
            return 0

    def close(self) -> None:
        self.client.close()
        self.sink._drop_client()


class OomOperator(OperatorHarness):
    """The operator under kopf, which a test can stop and start again, and the head Redis
    servers it follows. `args` are its `kopf run` arguments."""

    def __init__(self, api: KubeApi, redis_dir: Path, args: list[str]) -> None:
        super().__init__(api)
        self.args = args
        self._run: contextlib.AbstractContextManager[Any] | None = None
        self._servers = RedisServers(redis_dir)
        self._heads: list[HeadRedis] = []
        self._holes: list[BlackHole] = []
        self.outputs: list[str] = []

    # --- the operator's life
    def start(self) -> None:
        assert self._run is None, 'already running'
        self._run = run_kopf(self.args, timeout=30)
        self.runner = self._run.__enter__()

    def stop(self) -> None:
        assert self._run is not None, 'not running'
        run, self._run = self._run, None
        run.__exit__(None, None, None)
        self.outputs.append(self.runner.output)
        assert self.runner.exception is None, self.runner.exception
        assert self.runner.exit_code == 0, self.runner.output

    @property
    def running(self) -> bool:
        return self._run is not None

    def close(self) -> None:
        try:
            if self._run is not None:
                self.stop()
        finally:
            for head in self._heads:
                head.close()
            for hole in self._holes:
                hole.close()
            self._servers.stop_all()  # each by its PID

    # --- reading
    def oom(self, cluster: str) -> dict[str, Any]:
        return self.status(cluster).get('oom') or {}

    def oom_total(self, cluster: str) -> int:
        return int(self.oom(cluster).get('total') or 0)

    def oom_events(self, reason: str | None = None) -> list[dict[str, Any]]:
        return [e for e in self.events() if e.get('reason') in OOM_REASONS
                and (reason is None or e['reason'] == reason)]

    def pod(self, name: str) -> dict[str, Any]:
        return self._raw(self.api.core.read_namespaced_pod, name, self.ns)

    # --- a kubelet's view of the container
    def set_container(self, pod: str, phase: str, *, restarts: int = 0, ready: bool = True,
                      state: dict[str, Any] | None = None,
                      last_state: dict[str, Any] | None = None) -> None:
        container = {'name': 'ray-node', 'ready': ready and phase == 'Running', 'restartCount': restarts,
                     'image': 'rayguard/node:test', 'imageID': 'rayguard/node@sha256:0', 'state': state or {'running': {'startedAt': '2025-01-01T00:00:00Z'}},
                     'lastState': last_state or {}}
        status = {'phase': phase, 'podIP': '10.0.0.1', 'containerStatuses': [container],
                  'conditions': [{'type': 'Ready', 'status': 'True' if container['ready'] else 'False'}]}
        self._write(self.api.core.patch_namespaced_pod_status, pod, self.ns, {'status': status},
                    _content_type=MERGE, _preload_content=False)

    # --- the head Redis
    def _prepare_head(self, cluster: str) -> tuple[str, str]:
        """(the head Service's clusterIP, the Redis password in the cluster Secret), once the
        operator has made both. The emulator gives each Service a loopback clusterIP, as an API
        server gives one from its service range."""
        service, secret_name = f'{cluster}-head', f'{cluster}-secret'
        self.wait(lambda: service in {s['metadata']['name'] for s in self._raw(
            self.api.core.list_namespaced_service, self.ns)['items']}, f'the Service {service}')
        host = self.service(service)['spec']['clusterIP']
        self.wait(lambda: secret_name in self.secret_names(), f'the Secret {secret_name}')
        return host, base64.b64decode(self.secret(secret_name)['data']['redis-password']).decode()

    def head_redis(self, cluster: str, start: bool = True) -> HeadRedis:
        """A real redis-server at the cluster's head Service address, with its password."""
        host, password = self._prepare_head(cluster)
        server = RedisServer(REDIS_PORT, password, 64 * MiB,
                             workdir=self._servers.directory / f'{cluster}-{len(self._servers.made)}',
                             bind=host)
        self._servers.made.append(server)
        if start:
            server.start()
        head = HeadRedis(server)
        self._heads.append(head)
        return head

    def dead_head(self, cluster: str, how: str) -> BlackHole | None:
        """A head Redis that is not there (`refused`) or that hangs, at the cluster's head Service."""
        host, _password = self._prepare_head(cluster)
        if how == 'refused':
            return None
        hole = BlackHole(host)
        self._holes.append(hole)
        return hole


@pytest.fixture
def oom_operator(kube_api: KubeApi, chart_mode: ChartMode, monkeypatch: pytest.MonkeyPatch,
                 tmp_path: Path) -> Iterator[OomOperator]:
    """The operator (`kopf run -m rayguard_operator.handlers`, 0.5 s resync), started as the
    chart's ServiceAccount under the chart's RBAC, in each of the chart's modes (`chart_mode`,
    tests/integration/conftest.py); `stop()` and `start()` restart it. Every redis-server it
    made is stopped afterwards, by PID."""
    monkeypatch.setenv('RAYGUARD_OPERATOR_RESYNC_SECONDS', '0.5')
    monkeypatch.setenv('RAYGUARD_OPERATOR_NODE_IMAGE', 'rayguard/node:test')
    args = operator_under_chart_rbac(kube_api, chart_mode, tmp_path, monkeypatch)
    harness = OomOperator(kube_api, tmp_path / 'head-redis', args)
    harness.start()
    try:
        yield harness
    finally:
        harness.close()
    assert_rbac_was_enough(kube_api, chart_mode)

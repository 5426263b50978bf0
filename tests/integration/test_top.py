"""The live view on a real redis-server: the runtime's writer, `rayguard top`'s reader and its
command, what a refresh costs in Redis commands, and the Kubernetes path against the API
emulator (up to the port-forward, which the emulator does not serve)."""

from __future__ import annotations

import base64
import fcntl
import json
import logging
import os
import pty
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from rayguard_node.cgroup.processes import IDLE_WORKER, RAYLET, WORKER, ProcessMemory
from rayguard_node.contract.live import NODES_KEY, LiveNode, rows_key
from rayguard_node.reporting.ledger import Ledger
from rayguard_node.reporting.live import LiveView, forget_stale_nodes
from rayguard_node.reporting.redis_server import RedisServer, redis_client
from rayguard_operator.kube.api import KubeApi as OperatorKubeApi
from rayguard_operator.top.kube import find_head_pod, redis_password
from rayguard_operator.top.reader import LiveReader, TopError
from rayguard_operator.top.screen import ENTER_FULL_SCREEN, HOME_AND_CLEAR, LEAVE_FULL_SCREEN
from testkit.kube import ADMIN_TOKEN, KubeApi, api_client

from .redis_fixtures import free_port, make_redis_server, redis_server  # noqa: F401

MiB, GiB = 1 << 20, 1 << 30
PROCFS = Path("/proc")
ROOT = Path(__file__).resolve().parents[2]


class Numbers:
    def __init__(self, working_set: int, limit: int = 4 * GiB, threshold: float = 0.95) -> None:
        self.limit_bytes, self.working_set_bytes, self.threshold = limit, working_set, threshold


def workers(count: int, base_pid: int = 1000, mib: int = 10) -> list[ProcessMemory]:
    return [ProcessMemory(base_pid + i, f"ray::task{i}", WORKER, (mib + i) * MiB, MiB, 100 + i)
            for i in range(count)]


def view(server: RedisServer, pod: str, processes: list[ProcessMemory], **kwargs: Any) -> LiveView:
    return LiveView(server.client, pod, "cpu", "worker", kwargs.pop("numbers", Numbers(GiB)),
                    lambda: processes, PROCFS, **kwargs)


def command_counts(client: Any) -> dict[str, int]:
    return {name: int(stats["calls"]) for name, stats in client.info("commandstats").items()}


def test_the_writer_replaces_its_rows_at_once_and_the_reader_reads_them(redis_server: RedisServer) -> None:
    processes = [ProcessMemory(11, "ray::Holder", WORKER, 400 * MiB, 100 * MiB, 5),
                 ProcessMemory(12, "ray::f", WORKER, 50 * MiB, 10 * MiB, 6),
                 ProcessMemory(13, "ray::IDLE", IDLE_WORKER, 90 * MiB, 10 * MiB, 7),
                 ProcessMemory(14, "/ray/raylet", RAYLET, 90 * MiB, 10 * MiB, 8)]
    writer = view(redis_server, "demo-worker-cpu-0", processes,
                  quota_of=lambda p: 300 * MiB if p.pid == 11 else None)
    assert writer.write()
    client = redis_server.client()
    assert 0 < client.ttl(rows_key("demo-worker-cpu-0")) <= 30
    assert LiveNode.from_json(client.hget(NODES_KEY, "demo-worker-cpu-0")).rows == 2
    snapshot = LiveReader(client, rows_per_node=20).read()
    assert [(r.pod, r.row.pid, r.row.rss_minus_shr_bytes, r.row.quota_bytes, r.row.peak_bytes)
            for r in snapshot.rows] == [("demo-worker-cpu-0", 11, 300 * MiB, 300 * MiB, 300 * MiB),
                                        ("demo-worker-cpu-0", 12, 40 * MiB, None, 40 * MiB)]
    assert [(n.node.pod, n.node.working_set_bytes, n.stale) for n in snapshot.nodes] == [
        ("demo-worker-cpu-0", GiB, False)]
    processes[:] = [ProcessMemory(11, "ray::Holder", WORKER, 200 * MiB, 100 * MiB, 5)]  # pid 12 ended
    assert writer.write()
    rows = LiveReader(client, rows_per_node=20).read().rows
    assert [(r.row.pid, r.row.rss_minus_shr_bytes, r.row.peak_bytes) for r in rows] == [(11, 100 * MiB, 300 * MiB)]
    writer.remove()  # a clean stop takes the node out of the view
    assert not client.exists(rows_key("demo-worker-cpu-0")) and not client.hexists(NODES_KEY, "demo-worker-cpu-0")


def test_a_refresh_costs_two_plus_one_command_per_node_however_many_rows_and_samples(
        redis_server: RedisServer) -> None:
    """1,000 live rows (10 nodes x 100 workers) and 5,000 ledger samples; --rows 20."""
    for node in range(10):
        processes = workers(100, base_pid=10_000 * (node + 1), mib=node)
        assert view(redis_server, f"c-worker-cpu-{node}", processes, numbers=Numbers(node * GiB // 4)).write()
        ledger = Ledger(redis_server.client, f"c-worker-cpu-{node}")
        for sample in range(5):
            assert ledger.record(processes, 1_700_000_000_000 + sample * 5000) == 100
    client = redis_server.client()
    reader = LiveReader(client, rows_per_node=20)
    reader.read()  # connected, scripts loaded: what follows is one refresh only
    before = command_counts(client)
    snapshot = reader.read()
    after = command_counts(client)
    delta = {name: after[name] - before.get(name, 0) for name in after
             if name != "cmdstat_info" and after[name] != before.get(name, 0)}
    assert delta == {"cmdstat_time": 1, "cmdstat_hgetall": 1, "cmdstat_zrevrange": 10}
    assert len(snapshot.nodes) == 10 and len(snapshot.rows) == 200 and snapshot.rows_total == 1000
    assert snapshot.nodes[0].node.pod == "c-worker-cpu-9"
    by_node = [r.row.pid for r in snapshot.rows if r.pod == "c-worker-cpu-3"]
    assert by_node == list(range(40_099, 40_079, -1))  # that node's 20 largest
    used = [r.row.rss_minus_shr_bytes for r in snapshot.rows]
    assert used == sorted(used, reverse=True)


def test_redis_failures_are_contained_logged_once_and_backed_off(
        make_redis_server: Any, caplog: pytest.LogCaptureFixture) -> None:
    port, now = free_port(), [0.0]
    server = make_redis_server(port=port, start=False)
    writer = view(server, "p", workers(3), clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="rayguard_node.reporting.live"):
        assert not writer.write()  # nobody listens
        now[0] += 0.5
        assert not writer.write()  # backing off: not even tried
        assert writer.errors_total == 1
        now[0] += 1
        assert not writer.write()
        assert writer.errors_total == 2
        server.start()
        now[0] += 1.5
        assert not writer.write()  # still backing off (2 s after the second failure)
        now[0] += 1
        assert writer.write()
    messages = [r.getMessage() for r in caplog.records]
    assert len([m for m in messages if "cannot write to Redis" in m]) == 1
    assert messages[-1] == "live view: Redis accepts writes again"
    assert LiveReader(server.client(), 5).read().rows_total == 3


def test_the_head_forgets_nodes_that_stopped_writing(redis_server: RedisServer) -> None:
    client = redis_server.client()
    old = LiveNode("gone-0", "cpu", "worker", GiB, 0, 0.95, 1_000)
    client.hset(NODES_KEY, mapping={"gone-0": old.to_json(), "junk": "{"})
    head = LiveView(redis_server.client, "h-head-0", "head", "head", Numbers(GiB), lambda: [], PROCFS,
                    forget_stale=True)
    assert head.write() and head.forgotten_total == 2
    assert set(client.hkeys(NODES_KEY)) == {b"h-head-0"}
    assert forget_stale_nodes(client, now_ms=10**13) == 1  # a later clock: the head too


def top(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rayguard_operator.cli", "top", *args], capture_output=True,
                          text=True, timeout=60, cwd=ROOT, env=env)


def test_the_command_prints_json_and_plain_lines(redis_server: RedisServer, tmp_path: Path) -> None:
    processes = [ProcessMemory(os.getpid(), "ray::Holder.grow", WORKER, 300 * MiB, 50 * MiB, 0)]
    assert view(redis_server, "w-0", processes, quota_of=lambda p: 300 * MiB).write()
    (tmp_path / "pw").write_text(redis_server.password + "\n")
    url = ["--redis-url", f"redis://127.0.0.1:{redis_server.port}", "--redis-password-file", str(tmp_path / "pw")]
    result = top(*url, "--once", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["rows"] == [{"pod": "w-0", "pid": os.getpid(), "name": "ray::Holder.grow", "class": "worker",
                             "rss_minus_shr_bytes": 250 * MiB, "quota_bytes": 300 * MiB,
                             "peak_bytes": 250 * MiB, "age_s": data["rows"][0]["age_s"]}]
    result = top(*url, "--once", "--rows", "1")
    assert result.returncode == 0, result.stderr
    assert "\x1b" not in result.stdout
    assert any(line.split()[:3] == ["w-0", str(os.getpid()), "250"] and "300 MiB" in line
               for line in result.stdout.splitlines()), result.stdout
    (tmp_path / "wrong").write_text("not-it\n")
    result = top("--redis-url", f"redis://127.0.0.1:{redis_server.port}", "--redis-password-file",
                 str(tmp_path / "wrong"), "--once")
    assert (result.returncode, result.stderr) == (2, f"rayguard top: Redis at 127.0.0.1:{redis_server.port}"
                                                     " refused the password\n")


# --- Kubernetes: the head pod, the Secret, and the command up to the port-forward --------------

def make_cluster_objects(kube_api: KubeApi, phase: str = "Running") -> str:
    labels = {"rayguard.dev/cluster": "demo", "rayguard.dev/node-type": "head", "rayguard.dev/group": "head"}
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "demo-head-bcdfg", "labels": labels},
           "spec": {"containers": [{"name": "ray-node", "image": "x"}]}}
    kube_api.core.create_namespaced_pod("default", pod)
    kube_api.core.patch_namespaced_pod_status("demo-head-bcdfg", "default", {"status": {"phase": phase}})
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "demo-secret"},
              "data": {"redis-password": base64.b64encode(b"s3cret").decode()}}
    kube_api.core.create_namespaced_secret("default", secret)
    return "demo-head-bcdfg"


def test_the_head_pod_and_the_password_come_from_the_api(kube_api: KubeApi) -> None:
    api = OperatorKubeApi(api_client(kube_api.url, token=ADMIN_TOKEN))
    with pytest.raises(TopError, match="no RayCluster 'demo' in namespace 'default'"):
        find_head_pod(api, "default", "demo")
    with pytest.raises(TopError, match="no Secret default/demo-secret"):
        redis_password(api, "default", "demo")
    make_cluster_objects(kube_api, phase="Pending")
    with pytest.raises(TopError, match=r"is not running \(demo-head-bcdfg Pending\)"):
        find_head_pod(api, "default", "demo")
    kube_api.core.patch_namespaced_pod_status("demo-head-bcdfg", "default", {"status": {"phase": "Running"}})
    assert find_head_pod(api, "default", "demo") == "demo-head-bcdfg"
    assert redis_password(api, "default", "demo") == "s3cret"
    with pytest.raises(TopError, match="no RayCluster 'demo' in namespace 'other'"):
        find_head_pod(api, "other", "demo")
    api.close()


def test_the_command_reaches_the_port_forward_and_says_why_it_failed(kube_api: KubeApi) -> None:
    env = {**os.environ, "KUBECONFIG": str(kube_api.kubeconfig_path)}
    env.pop("KUBERNETES_SERVICE_HOST", None)
    result = top("demo", "--once", env=env)
    assert (result.returncode, result.stderr) == (
        2, "rayguard top: no RayCluster 'demo' in namespace 'default' (another namespace? use -n NAMESPACE)\n")
    make_cluster_objects(kube_api)
    result = top("demo", "-n", "default", "--once", env=env)
    # The emulator serves no port-forward: the bridge's connection fails, and the error says so.
    assert result.returncode == 2, result.stdout
    assert result.stderr.startswith("rayguard top: cannot reach Redis at pod default/demo-head-bcdfg"
                                    " port 6380 (port-forward): "), result.stderr
    assert "(port-forward: " in result.stderr and result.stderr.count("\n") == 1


def test_in_a_terminal_the_view_is_full_screen_and_ctrl_c_leaves_it(redis_server: RedisServer,
                                                                     tmp_path: Path) -> None:
    """A real pseudo-terminal, 100 x 12: redrawn every interval, cut to the screen, restored on exit."""
    assert view(redis_server, "w-0", workers(30, mib=5)).write()
    (tmp_path / "pw").write_text(redis_server.password)
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 12, 100, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    process = subprocess.Popen(
        [sys.executable, "-m", "rayguard_operator.cli", "top", "--redis-url",
         f"redis://127.0.0.1:{redis_server.port}", "--redis-password-file", str(tmp_path / "pw"),
         "--interval", "0.2"], stdin=slave, stdout=slave, stderr=slave, env=env, cwd=ROOT)
    os.close(slave)
    output = b""

    def read_for(seconds: float, until: Callable[[bytes], bool] = lambda _out: False) -> None:
        nonlocal output
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not until(output):
            if select.select([master], [], [], 0.1)[0]:
                try:
                    output += os.read(master, 65536)
                except OSError:  # the child closed the terminal
                    return

    try:
        read_for(30, lambda out: out.count(HOME_AND_CLEAR.encode()) >= 3)
        process.send_signal(signal.SIGINT)
        assert process.wait(10) == 0, output[-2000:]
        read_for(1)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(master)
    text = output.decode(errors="replace")
    assert text.startswith(ENTER_FULL_SCREEN) and text.rstrip().endswith(LEAVE_FULL_SCREEN), text[-500:]
    frames = text.split(HOME_AND_CLEAR)[1:]
    assert len(frames) >= 3
    frame = frames[1].replace("\r\n", "\n")
    lines = frame.splitlines()
    assert lines[0].startswith(f"rayguard top  127.0.0.1:{redis_server.port}  ")
    assert len(lines) <= 12 and all(len(line) <= 100 for line in lines)
    assert lines[-1].startswith("... ") and "more line(s)" in lines[-1]  # 30 rows do not fit in 12 lines

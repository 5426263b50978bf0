"""GCS fault tolerance on an external Redis, with real Ray and a real `redis-server` as the
external Redis: the head is SIGKILLed with its whole process tree and started again; a
detached actor made before lives on (on its worker, which reconnects within Ray's timeout);
a report written just before the head died is still in the namespace's stream, and the
operator's follower reads it; the deletion cleanup removes that namespace's keys and nothing
else."""

from __future__ import annotations

import asyncio
import json
import signal
import time
import uuid

import psutil
import pytest
import redis

from rayguard_node.contract.gcs import key_prefix
from rayguard_node.contract.reports import GUARD_KILL, STREAM_KEY, Identity, NodeUsage, Victim, new_report
from rayguard_node.reporting.sink import ReportSink
from rayguard_operator.gcs_redis import connect, delete_namespace
from rayguard_operator.oom.stream import RedisTarget, follow
from testkit.nodes import cleanup, free_port, run_driver, short_temp_dir, start_node

from .redis_fixtures import make_redis_server  # noqa: F401  (fixture)

pytestmark = pytest.mark.ray
MiB = 1024**2

MAKE_ACTOR = """
import os, ray
ray.init(address={address!r}, logging_level="ERROR", log_to_driver=False)

@ray.remote(num_cpus=1, lifetime="detached", name="keeper", namespace="ft")
class Keeper:
    def __init__(self):
        self.count = 0
    def incr(self):
        self.count += 1
        return self.count, os.getpid()

keeper = Keeper.remote()
print("ACTOR", json.dumps(ray.get(keeper.incr.remote(), timeout=120)), flush=True)
""".replace("import os, ray", "import json, os, ray")

REACH_ACTOR = """
import json, ray
ray.init(address={address!r}, logging_level="ERROR", log_to_driver=False, namespace="ft")
keeper = ray.get_actor("keeper", namespace="ft")
print("ACTOR", json.dumps(ray.get(keeper.incr.remote(), timeout=120)), flush=True)
"""


def _head_params(gcs_port: int) -> str:
    return json.dumps({"node-ip-address": "127.0.0.1", "port": gcs_port, "include-dashboard": False,
                       "dashboard-agent-listen-port": free_port(), "metrics-export-port": free_port()})


def _kill_tree(pid: int, temp_dir: str | None = None) -> None:
    """SIGKILL a process and every descendant, and every process that names the node's temp dir
    (Ray's own daemons): the node dies as its pod would, all at once."""
    try:
        root = psutil.Process(pid)
        victims = root.children(recursive=True) + [root]
    except psutil.Error:
        victims = []
    if temp_dir is not None:
        for process in psutil.process_iter(["cmdline"]):
            if process not in victims and any(temp_dir in part for part in process.info["cmdline"] or ()):
                victims.append(process)
    for process in victims:
        try:
            process.send_signal(signal.SIGKILL)
        except psutil.Error:
            pass
    psutil.wait_procs(victims, timeout=15)


def _actor(output: str) -> tuple[int, int]:
    line = next((line for line in output.splitlines() if line.startswith("ACTOR ")), None)
    assert line is not None, output[-3000:]
    count, pid = json.loads(line.split(" ", 1)[1])
    return count, pid


def _descendant_names(pid: int) -> set[str]:
    try:
        return {p.name() for p in psutil.Process(pid).children(recursive=True)}
    except psutil.Error:
        return set()


def _follow_once(target: RedisTarget, timeout_s: float = 20) -> list[str]:
    """The ids of the reports the operator's follower hands over, from the stream's start."""
    seen: list[str] = []

    async def handle(entries, _last_id) -> bool:  # type: ignore[no-untyped-def]
        seen.extend(report.id for _entry, report in entries)
        return True

    async def run() -> None:
        started = asyncio.get_running_loop().time()

        async def where() -> RedisTarget:
            return target

        await follow(where, "0-0", handle, lambda: bool(seen) or
                     asyncio.get_running_loop().time() - started > timeout_s, "test")

    asyncio.run(run())
    return seen


def say(started: float, line: str) -> None:
    """A step of the run, for `pytest -s` (README, "GCS fault tolerance", shows one)."""
    print(f"[{time.monotonic() - started:6.1f}s] {line}", flush=True)


def test_a_fault_tolerant_head_is_killed_and_restarted_and_the_cluster_carries_on(make_redis_server):
    started = time.monotonic()
    external = make_redis_server(maxmemory_bytes=256 * MiB)
    namespace = str(uuid.uuid4())
    prefix = key_prefix(namespace)
    client = connect("127.0.0.1", external.port, external.password)
    # Another cluster's keys, and one of nobody's: the cleanup must leave them alone.
    other = key_prefix("other-cluster")
    client.hset(other + "KV", "x", "1")
    client.xadd(other + STREAM_KEY, {"report": "{}"})
    client.set("unrelated", "1")
    ft_env = {"RAYGUARD_GCS_REDIS_ADDRESS": f"127.0.0.1:{external.port}",
              "RAYGUARD_GCS_REDIS_PASSWORD": external.password,
              "RAYGUARD_GCS_STORAGE_NAMESPACE": namespace}
    head_dir, gcs_port = short_temp_dir(), free_port()
    head_env = {**ft_env, "RAYGUARD_RAY_START_PARAMS": _head_params(gcs_port)}
    say(started, f"external Redis 127.0.0.1:{external.port}; storage namespace {namespace}")
    head = start_node("head", None, temp_dir=head_dir, env=head_env)
    head.gcs_port = gcs_port
    nodes = [head]
    try:
        head.wait_ready()
        say(started, f"head ready (pid {head.process.pid}), GCS on port {gcs_port}, no redis-server of its own")
        # The head started no redis-server: its reports and ledger are in the external Redis.
        assert "redis-server" not in _descendant_names(head.process.pid)
        assert "starting redis" not in head.log().lower()
        assert "--redis-password=<hidden>" in head.log() and external.password not in head.log()
        worker = start_node("worker", None, head=head,
                            env={**ft_env, "RAYGUARD_NUM_CPUS": "1", "RAYGUARD_REDIS_PASSWORD_FILE": ""})
        nodes.append(worker)
        worker.wait_ready()
        say(started, f"worker ready (pid {worker.process.pid})")
        made = run_driver(head, MAKE_ACTOR.format(address=head.address), timeout_s=180)
        assert _actor(made.stdout)[0] == 1, made.stdout + made.stderr
        say(started, f"detached actor 'keeper': incr() -> count {_actor(made.stdout)[0]}, actor pid {_actor(made.stdout)[1]}")
        say(started, f"keys under {prefix}: {sum(1 for _ in client.scan_iter(match=prefix + '*'))}")
        # Ray's GCS tables are in the external Redis under the namespace.
        assert any(k.startswith(prefix.encode()) and b"rayguard" not in k
                   for k in client.scan_iter(match=prefix + "*"))

        # A report written just before the head dies, as the runtime writes it.
        report = new_report(GUARD_KILL, Identity("test", "default", "test-head", "", role="head"),
                            Victim(1, "ray::hog", 1 << 30), NodeUsage(1 << 30, 2 << 30, 0.5, 0.95))
        sink = ReportSink(lambda: connect("127.0.0.1", external.port, external.password), key_prefix=prefix)
        sink.emit(report)
        sink.flush_pending()
        assert sink.pending_count == 0

        say(started, f"report {report.id} written to {prefix}{STREAM_KEY}")
        _kill_tree(head.process.pid, str(head_dir))
        assert head.process.poll() is not None
        say(started, "SIGKILL to the head's whole process tree (runtime, raylet, gcs_server, ...)")
        gone = [p.info["cmdline"][0] for p in psutil.process_iter(["cmdline"])
                if any(str(head_dir) in part for part in p.info["cmdline"] or ())]
        assert gone == [], gone
        # A new head pod: a fresh temp dir (Ray's session, no local state), the cluster's token.
        restarted = start_node("head", None, env={**head_env, "RAYGUARD_RAY_START_PARAMS": _head_params(gcs_port),
                                                  "RAYGUARD_RAY_AUTH_TOKEN_FILE": str(head.token_file)})
        restarted.gcs_port = gcs_port
        nodes.append(restarted)
        restarted.wait_ready()
        say(started, f"new head ready (pid {restarted.process.pid}), fresh temp dir, same GCS port")
        reached = run_driver(head, REACH_ACTOR.format(address=restarted.address), timeout_s=180)
        count, _pid = _actor(reached.stdout)
        say(started, f"ray.get_actor('keeper').incr() -> count {count}, actor pid {_pid}; worker pid"
                     f" {worker.process.pid} still running")
        assert count == 2, "the detached actor kept its state: the same actor, not a new one"
        assert worker.process.poll() is None, "the worker reconnected to the restarted head"

        # The report survived the head and the operator's follower reads it from the namespace.
        target = RedisTarget("127.0.0.1", external.port, external.password, stream_key=prefix + STREAM_KEY)
        assert _follow_once(target) == [report.id]
        say(started, f"the operator's follower read report {report.id} from the external stream")
        time.sleep(6)  # one ledger period: the nodes' samples are under the prefix too
        assert client.zcard(prefix + "rayguard:samples") > 0
    finally:
        for node in reversed(nodes):
            cleanup(node)
            if node.process is not None:
                _kill_tree(node.process.pid, str(node.temp_dir))

    # Deletion: exactly this namespace's keys go, in batches; the others stay.
    removed = delete_namespace(client, namespace, batch=3)
    say(started, f"cleanup: {removed} keys under {prefix} unlinked; other namespaces' keys left")
    assert removed > 3
    assert list(client.scan_iter(match=prefix + "*")) == []
    assert client.hget(other + "KV", "x") == b"1" and client.xlen(other + STREAM_KEY) == 1
    assert client.get("unrelated") == b"1"
    client.close()

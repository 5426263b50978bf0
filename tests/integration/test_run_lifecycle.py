"""`rayguard-node run` lifecycle: SIGTERM, Redis faults, health endpoints, bad settings."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest
import redis

from rayguard_node.contract.reports import STREAM_KEY
from rayguard_node.reporting.redis_server import RedisServer
from testkit.nodes import cleanup, hog_script, run_driver, start_node

from .cgroups import make_cgroup, scratch_parent  # noqa: F401  (fixtures)
from .redis_fixtures import make_redis_server  # noqa: F401  (fixture)

pytestmark = pytest.mark.ray
GiB = 1024**3

SLEEPER_DRIVER = """
import time, ray
ray.init(address={address!r}, logging_level="ERROR", log_to_driver=False)

@ray.remote
def sleeper():
    time.sleep(600)

ref = sleeper.remote()
time.sleep(600)
"""


def _wait_for_process(cgroup, prefix: str, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for pid in cgroup.pids():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as handle:
                    if handle.read().startswith(prefix.encode()):
                        return
            except OSError:
                continue
        time.sleep(0.3)
    raise AssertionError(f"no process {prefix!r} appeared")


def test_sigterm_during_a_task_stops_cleanly_within_grace(make_cgroup):
    cgroup = make_cgroup(2 * GiB)
    head = start_node("head", cgroup, env={"RAYGUARD_NUM_CPUS": "1", "RAYGUARD_GRACE_SECONDS": "15"})
    driver = None
    try:
        head.wait_ready()
        driver = subprocess.Popen([sys.executable, "-c", SLEEPER_DRIVER.format(address=head.address)],
                                  env=head.driver_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_for_process(cgroup, "ray::sleeper")
        started = time.monotonic()
        head.process.send_signal(signal.SIGTERM)
        status = head.process.wait(timeout=40)
        took_s = time.monotonic() - started
        assert took_s < 15 + 2, f"took {took_s:.1f}s, grace is 15s"
        assert "stopping Ray" in head.log()
        assert "rayguard-node exits with status" in head.log()
        assert status is not None
        time.sleep(1)
        assert cgroup.pids() == [], f"processes left behind: {cgroup.pids()}"
    finally:
        if driver is not None:
            driver.kill()
            driver.wait()
        cleanup(head)


def test_sigterm_mid_start_leaves_nothing_behind(make_cgroup):
    cgroup = make_cgroup(2 * GiB)
    head = start_node("head", cgroup)
    try:
        time.sleep(2.5)  # redis-server up, Ray still starting
        head.process.send_signal(signal.SIGTERM)
        head.process.wait(timeout=40)
        time.sleep(1)
        assert cgroup.pids() == [], f"processes left behind: {cgroup.pids()}"
        assert "received SIGTERM" in head.log()
    finally:
        cleanup(head)


def test_report_waits_for_redis_and_arrives_once(make_cgroup, make_redis_server):
    external: RedisServer = make_redis_server(maxmemory_bytes=64 << 20)
    password_file = external.workdir / "password"
    password_file.write_text(external.password)
    cgroup = make_cgroup(2 * GiB)
    head = start_node("head", cgroup, env={
        "RAYGUARD_NUM_CPUS": "1", "RAYGUARD_REDIS_URL": f"redis://127.0.0.1:{external.port}/0",
        "RAYGUARD_REDIS_PASSWORD_FILE": str(password_file)})
    try:
        head.wait_ready()
        external.stop()
        run_driver(head, hog_script(head.address))
        report = head.wait_for_report("monitor_kill")
        deadline = time.monotonic() + 10
        while "rayguard_reports_pending 1.0" not in head.http("/metrics")[1]:
            assert time.monotonic() < deadline, head.http("/metrics")[1]
            time.sleep(0.2)
        assert head.process.poll() is None, "a Redis outage must not stop the runtime"
        assert head.http("/readyz")[0] == 503  # the head's Redis is down: not ready

        external.start()
        client = redis.Redis(host="127.0.0.1", port=external.port, password=external.password)
        deadline = time.monotonic() + 20
        while not client.exists(STREAM_KEY):
            assert time.monotonic() < deadline, "the report never reached Redis"
            time.sleep(0.2)
        time.sleep(2)  # several more flush periods: a duplicate would show up now
        ids = [json.loads(fields[b"report"])["id"] for _id, fields in client.xrange(STREAM_KEY)]
        assert ids == [report["id"]]
        assert "rayguard_reports_pending 0.0" in head.http("/metrics")[1]
    finally:
        cleanup(head)


def test_health_endpoints(make_cgroup):
    head = start_node("head", make_cgroup(2 * GiB))
    try:
        head.wait_ready()
        assert head.http("/healthz") == (200, "ok\n")
        assert head.http("/readyz") == (200, "ready\n")
        status, metrics = head.http("/metrics")
        assert status == 200
        assert "rayguard_memory_limit_bytes 2.147483648e+09" in metrics
        assert "rayguard_guard_threshold_ratio 0.95" in metrics
        assert "rayguard_ray_up 1.0" in metrics
        assert "rayguard_monitor_tick_seconds_count" in metrics
        assert head.http("/nope")[0] == 404
    finally:
        cleanup(head)


@pytest.mark.parametrize("params, message", [
    ('{"num-cpus": 4}', "rayStartParams"),
    ("[1, 2]", "expected a JSON object"),
])
def test_bad_ray_start_params_are_refused_before_anything_starts(tmp_path, params, message):
    result = subprocess.run(
        [sys.executable, "-m", "rayguard_node", "run", "--role", "head", "--limit-bytes", "2Gi",
         "--ray-temp-dir", str(tmp_path), "--ray-start-params", params],
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("rayguard-node: error:") and message in last
    assert "Traceback" not in result.stderr

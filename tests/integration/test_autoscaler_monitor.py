"""Ray 2.60's own autoscaler loop (`Monitor`), run in-process by `run_autoscaler` against a real
single-node Ray head (started by `rayguard-node run` as an autoscaled head: `--no-monitor`) and
the API emulator: tasks that need more CPUs than the cluster has make it patch the RayCluster's
replicas up, with the reason, through the per-cluster Role alone. Local mode's end-to-end test
builds on the same runner with its own target (provider.target)."""
from __future__ import annotations

import json
import os
import signal
import time
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from rayguard_node.autoscaler.monitor import AutoscalerOptions, AutoscalerThread
from rayguard_node.contract import autoscaler as contract
from rayguard_node.contract.settings import EXTERNAL_AUTOSCALER
from tests.integration.autoscaler_setup import (autoscaled_cluster, autoscaling_config, grant_autoscaler, make_pod,
                                                provider_config)
from tests.integration.cluster_objects import get_cluster
from testkit.kube import KubeApi, wait_for
from testkit.kube.rbac import Authorizer, Policy
from testkit.nodes import Node, cleanup, start_node

PENDING_DRIVER = """
import time, ray
ray.init(address={address!r}, logging_level="ERROR", log_to_driver=False)

@ray.remote(num_cpus=1)
def work():
    return 1

refs = [work.remote() for _ in range(2)]  # the head has no CPU for tasks: both wait for workers
print("SUBMITTED", flush=True)
time.sleep(300)
"""


@pytest.fixture
def head() -> Iterator[Node]:
    node = start_node("head", None, env={EXTERNAL_AUTOSCALER.env: "true"})
    try:
        node.wait_ready()
        yield node
    finally:
        cleanup(node)


@pytest.fixture
def restore_ray_auth(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """run_autoscaler points this process's Ray client at the cluster's token: undone after."""
    for name in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_TOKEN"):
        monkeypatch.setenv(name, "x")
        monkeypatch.delenv(name)
    yield
    monkeypatch.undo()
    from ray._raylet import AuthenticationTokenLoader, Config

    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


@pytest.mark.timeout(240)
def test_pending_tasks_make_the_autoscaler_patch_replicas_up(head: Node, kube_api: KubeApi, tmp_path: Path,
                                                             restore_ray_auth: None) -> None:
    assert "--no-monitor" in head.log(), "an autoscaled head starts Ray without its own monitor"
    kube_api.server.call(lambda: setattr(kube_api.emulator, "authorizer", Authorizer(Policy(()), {})))
    autoscaled_cluster(kube_api, "demo", {"cpu": (0, 0, 2)})
    make_pod(kube_api, "demo", "demo-head", None, ip="127.0.0.1")  # the head's Ray node IP
    provider = provider_config(kube_api, grant_autoscaler(kube_api, "demo"), tmp_path)
    config_path = tmp_path / "autoscaling-config.json"
    config_path.write_text(json.dumps(autoscaling_config("demo", provider, {"cpu": (0, 2, {"CPU": 1})})))

    driver = subprocess.Popen([sys.executable, "-c", PENDING_DRIVER.format(address=head.address)],
                              env=head.driver_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    autoscaler = AutoscalerThread(AutoscalerOptions(gcs_address=head.address, config_path=config_path,
                                                    token_file=head.token_file)).start()
    try:
        def replicas() -> int:
            return int(get_cluster(kube_api, "demo")["spec"]["workerGroups"][0]["replicas"])

        wait_for(lambda: replicas() == 2, timeout=120, interval=0.5, what="replicas 0 -> 2")
        annotations = get_cluster(kube_api, "demo")["metadata"]["annotations"]
        assert json.loads(annotations[contract.ANNOTATION_SCALE_REASON]) == {"cpu": contract.REASON_PENDING}
        assert autoscaler.alive and autoscaler.error is None
    finally:
        assert autoscaler.stop(timeout_s=30), "the autoscaler thread did not stop"
        driver.kill()
        output = driver.communicate(timeout=30)[0]
    assert "SUBMITTED" in output, output
    assert kube_api.emulator.refused() == []  # the Role was enough
    assert os.environ.get("RAY_AUTH_TOKEN_PATH") == str(head.token_file)


@pytest.mark.timeout(240)
def test_the_sidecar_command_scales_and_stops_on_sigterm(head: Node, kube_api: KubeApi, tmp_path: Path) -> None:
    """`rayguard-node autoscaler` as the head pod runs it: configured by the environment, one
    log line per record, and a clean exit on SIGTERM."""
    autoscaled_cluster(kube_api, "demo", {"cpu": (0, 0, 2)})
    make_pod(kube_api, "demo", "demo-head", None, ip="127.0.0.1")
    provider = provider_config(kube_api, grant_autoscaler(kube_api, "demo"), tmp_path)
    config_path = tmp_path / "autoscaling-config.json"
    config_path.write_text(json.dumps(autoscaling_config("other-name", provider, {"cpu": (0, 2, {"CPU": 1})})))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "RAYGUARD_"))}
    env.update({contract.CLUSTER_ENV: "demo", contract.NAMESPACE_ENV: "default", contract.CONFIG_ENV: str(config_path),
                contract.GCS_ADDRESS_ENV: head.address, contract.RAY_AUTH_TOKEN_FILE_ENV: str(head.token_file)})
    driver = subprocess.Popen([sys.executable, "-c", PENDING_DRIVER.format(address=head.address)],
                              env=head.driver_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    sidecar = subprocess.Popen([sys.executable, "-m", "rayguard_node", *contract.COMMAND[1:]], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: get_cluster(kube_api, "demo")["spec"]["workerGroups"][0]["replicas"] == 2 or
                 sidecar.poll() is not None, timeout=120, interval=0.5, what="replicas 0 -> 2")
        assert sidecar.poll() is None, sidecar.communicate()
        sidecar.send_signal(signal.SIGTERM)
        out, err = sidecar.communicate(timeout=30)
    finally:
        driver.kill()
        driver.wait()
        if sidecar.poll() is None:
            sidecar.kill()
    assert sidecar.returncode == 0, err
    assert get_cluster(kube_api, "demo")["spec"]["workerGroups"][0]["replicas"] == 2
    lines = out.splitlines()
    assert any("group cpu: replicas 2" in line and "(pending demand)" in line for line in lines), out
    assert all(" rayguard-node autoscaler " in line for line in lines), out  # one record, one line
    assert "autoscaler stopped" in lines[-1], out


@pytest.mark.timeout(300)
def test_a_restarted_head_brings_the_autoscaler_back_without_a_second_launch(
        head: Node, kube_api: KubeApi, tmp_path: Path, restore_ray_auth: None, caplog: pytest.LogCaptureFixture) -> None:
    """The head restarts (its GCS goes away and comes back at the same address, as behind its
    Service) while the two workers the autoscaler asked for are still starting. The autoscaler
    starts again, reads the RayCluster and its pods, and counts the starting pods against the
    same demand: replicas stay 2 (of a max of 4) instead of a second launch."""
    caplog.set_level("INFO", logger="rayguard_node.autoscaler")
    autoscaled_cluster(kube_api, "demo", {"cpu": (0, 0, 4)})
    make_pod(kube_api, "demo", "demo-head", None, ip="127.0.0.1")
    provider = provider_config(kube_api, grant_autoscaler(kube_api, "demo"), tmp_path)
    config_path = tmp_path / "autoscaling-config.json"
    config_path.write_text(json.dumps(autoscaling_config("demo", provider, {"cpu": (0, 4, {"CPU": 1})})))
    token = tmp_path / "ray-token"  # the cluster Secret's token: the same for both heads
    token.write_bytes(head.token_file.read_bytes())
    token.chmod(0o600)
    driver = subprocess.Popen([sys.executable, "-c", PENDING_DRIVER.format(address=head.address)],
                              env=head.driver_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    autoscaler = AutoscalerThread(AutoscalerOptions(gcs_address=head.address, config_path=config_path,
                                                    token_file=token, backoff_max_s=2)).start()
    new_head, second_driver = None, None

    def replicas() -> int:
        return int(get_cluster(kube_api, "demo")["spec"]["workerGroups"][0]["replicas"])

    def starts() -> int:
        return sum(1 for r in caplog.records if r.getMessage().startswith("autoscaler started"))

    try:
        wait_for(lambda: replicas() == 2, timeout=120, interval=0.5, what="replicas 0 -> 2")
        for suffix, ip in (("a", "10.0.0.11"), ("b", "10.0.0.12")):  # the operator's pods, still starting
            make_pod(kube_api, "demo", f"demo-worker-cpu-{suffix}", "cpu", ready=False, ip=ip)
        driver.kill()
        driver.wait()
        assert head.stop(timeout_s=60) is not None
        new_head = start_node("head", None, env={EXTERNAL_AUTOSCALER.env: "true",
                                                 "RAYGUARD_RAY_AUTH_TOKEN_FILE": str(token)}, replaces=head)
        new_head.wait_ready()
        second_driver = subprocess.Popen(  # the job, submitted again to the new head: the same demand
            [sys.executable, "-c", PENDING_DRIVER.format(address=new_head.address)],
            env={**new_head.driver_env(), "RAY_AUTH_TOKEN_PATH": str(token)},
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert second_driver.stdout is not None
        assert second_driver.stdout.readline().strip() == "SUBMITTED"  # connected: the demand is there
        wait_for(lambda: starts() >= 2, timeout=120, interval=0.5, what="the autoscaler started again")
        time.sleep(20)  # four of Ray's 5 s updates with the demand pending on the new head
        assert replicas() == 2
        assert autoscaler.alive and autoscaler.error is None
    finally:
        assert autoscaler.stop(timeout_s=30), "the autoscaler thread did not stop"
        for process in (driver, second_driver):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()
        if new_head is not None:
            cleanup(new_head)
    assert kube_api.emulator.refused() == []

"""`rayguard operator` as a process, the way the chart runs it, against the API emulator."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from testkit.kube import KubeApi, wait_for

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(300)
def test_rayguard_operator_command_reconciles(kube_api: KubeApi, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAYGUARD_")}
    env.update(KUBECONFIG=str(kube_api.kubeconfig_path), RAYGUARD_OPERATOR_NAMESPACES="default",
               RAYGUARD_OPERATOR_LOG_FORMAT="plain", RAYGUARD_OPERATOR_NODE_IMAGE="rayguard/node:cli")
    log = (tmp_path / "operator.log").open("w")
    process = subprocess.Popen([sys.executable, "-m", "rayguard_operator.cli", "operator", "--standalone"],
                               stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    try:
        body = yaml.safe_load((REPO / "examples" / "raycluster-minimal.yaml").read_text())
        kube_api.custom.create_namespaced_custom_object("rayguard.dev", "v1", "default", "rayclusters", body)

        def pods() -> list[Any]:
            return kube_api.core.list_namespaced_pod("default", label_selector="rayguard.dev/cluster=minimal").items
        # The first start in a fresh virtualenv compiles kopf and the kubernetes client: on a busy
        # 2-core machine that alone has taken over a minute.
        wait_for(lambda: len(pods()) == 2, timeout=180, what="the operator process to create the pods")
        assert {p.spec.containers[0].image for p in pods()} == {"rayguard/node:cli"}
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
    output = (tmp_path / "operator.log").read_text()
    assert "Created Pod minimal-head-" in output, output[-3000:]
    assert "Traceback" not in output, output[-3000:]

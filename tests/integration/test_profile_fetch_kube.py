"""`rayguard profile fetch CLUSTER` against the API emulator, as a user runs it (a process, the
kubeconfig in $KUBECONFIG): the cluster's pods found by label, the ones not running skipped.
The emulator has no exec, so copying files out of a running pod is not exercised here: that
call fails, and the command says so in one line (tests/unit/operator/profile/test_fetch.py runs
the pod's own command and unpacks what it sends)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from testkit.kube import KubeApi

REPO = Path(__file__).resolve().parents[2]


def pod(name: str, cluster: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": {"rayguard.dev/cluster": cluster}},
            "spec": {"containers": [{"name": "ray-node", "image": "rayguard/node:test"}]}}


def fetch(kube_api: KubeApi, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KUBECONFIG": str(kube_api.kubeconfig_path)}
    return subprocess.run([sys.executable, "-m", "rayguard_operator.cli", "profile", "fetch", *args],
                          capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)


def test_pods_are_found_by_label_and_only_running_ones_are_asked(kube_api: KubeApi, tmp_path: Path) -> None:
    for name, cluster in (("demo-head-0", "demo"), ("demo-worker-cpu-0", "demo"), ("other-head-0", "other")):
        kube_api.core.create_namespaced_pod("default", pod(name, cluster))
    kube_api.core.patch_namespaced_pod_status("demo-worker-cpu-0", "default", {"status": {"phase": "Running"}})
    result = fetch(kube_api, tmp_path, "demo", "-n", "default")
    assert "pod demo-head-0: Pending, skipped (exec needs a running container)" in result.stdout, result
    assert "other-head-0" not in result.stdout + result.stderr
    # The running pod is asked through the exec API, which the emulator does not serve.
    assert result.returncode == 2, result
    assert result.stderr.startswith("rayguard profile: create exec in Pod default/demo-worker-cpu-0 failed")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr

    only = fetch(kube_api, tmp_path, "demo", "-n", "default", "--pod", "demo-head-0")
    assert only.returncode == 1 and "demo-worker-cpu-0" not in only.stdout + only.stderr, only
    assert "no memray profiles in RayCluster demo" in only.stderr


def test_a_cluster_without_pods_says_so(kube_api: KubeApi, tmp_path: Path) -> None:
    result = fetch(kube_api, tmp_path, "nosuch", "-n", "default")
    assert result.returncode == 1
    assert "no pods of RayCluster default/nosuch" in result.stderr

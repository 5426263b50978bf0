"""local_pods: the operator's rendered Pods turned into local rayguard-node processes (pure)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from rayguard_node.errors import RayguardError

from rayguard_operator.local.pods import LocalNode, LocalPorts, local_node, local_pod_names
from rayguard_operator.manifests.render import load_cluster, render_list
from rayguard_operator.settings import OperatorSettings
from tests.paths import REPO_ROOT

EXAMPLE = REPO_ROOT / "examples" / "raycluster.yaml"
HEAD_PORTS = LocalPorts(gcs=41001, redis=41002, health=41003, dashboard_agent=41004, metrics=41005,
                        dashboard=41006, client=41007)
WORKER_PORTS = LocalPorts(gcs=42001, redis=42002, health=42003, dashboard_agent=42004, metrics=42005)
GiB = 1 << 30
# What local_node replaces; every other variable keeps the pod's value.
REPLACED = {"POD_NAME", "POD_NAMESPACE", "NODE_NAME", "RAYGUARD_LIMIT_BYTES", "RAYGUARD_RAY_START_PARAMS",
            "RAYGUARD_RAY_AUTH_TOKEN_FILE", "RAYGUARD_REDIS_PASSWORD_FILE", "RAYGUARD_RAY_TEMP_DIR",
            "RAYGUARD_HEALTH_PORT", "RAYGUARD_REDIS_PORT", "RAYGUARD_HEAD_ADDRESS"}


def render(replicas: tuple[int, int] = (2, 1), namespace: str | None = None) -> list[dict[str, Any]]:
    body = load_cluster(EXAMPLE)
    if namespace:
        body["metadata"]["namespace"] = namespace
    body["spec"]["head"]["rayStartParams"] = {"object-manager-port": 8076, "log-style": "record"}
    cpu, highmem = body["spec"]["workerGroups"]
    cpu["replicas"], highmem["replicas"] = replicas
    cpu["rayStartParams"] = {"resources": '{"disk": 1}', "node-ip-address": "10.0.0.1"}
    items = render_list(body, OperatorSettings.from_env({}))["items"]
    return [item for item in items if item["kind"] == "Pod"]


def by_group(pods: list[dict[str, Any]], group: str) -> dict[str, Any]:
    return next(p for p in pods if p["metadata"]["labels"]["rayguard.dev/group"] == group)


def pod_env(pod: dict[str, Any]) -> list[dict[str, Any]]:
    [container] = [c for c in pod["spec"]["containers"] if c["name"] == "ray-node"]
    return container["env"]


def node_for(pod: dict[str, Any], name: str, tmp_path: Path, head: bool = False) -> LocalNode:
    return local_node(pod, name, HEAD_PORTS if head else WORKER_PORTS, HEAD_PORTS,
                      tmp_path / "secrets", tmp_path / f"temp-{name}")


def test_head_node(tmp_path: Path) -> None:
    pod = by_group(render(), "head")
    before = copy.deepcopy(pod)
    node = node_for(pod, "demo-head-0", tmp_path, head=True)
    assert pod == before  # the manifest is not modified
    assert (node.name, node.role, node.group, node.limit_bytes) == ("demo-head-0", "head", "head", 2 * GiB)
    env = dict(node.env)
    assert {k: env[k] for k in REPLACED - {"RAYGUARD_RAY_START_PARAMS", "RAYGUARD_HEAD_ADDRESS"}} == {
        "POD_NAME": "demo-head-0",
        "POD_NAMESPACE": "default",
        "NODE_NAME": "localhost",
        "RAYGUARD_LIMIT_BYTES": "2147483648",
        "RAYGUARD_RAY_AUTH_TOKEN_FILE": str(tmp_path / "secrets" / "ray-auth-token"),
        "RAYGUARD_REDIS_PASSWORD_FILE": str(tmp_path / "secrets" / "redis-password"),
        "RAYGUARD_RAY_TEMP_DIR": str(tmp_path / "temp-demo-head-0"),
        "RAYGUARD_HEALTH_PORT": "41003",
        "RAYGUARD_REDIS_PORT": "41002",
    }
    assert "RAYGUARD_HEAD_ADDRESS" not in env
    assert json.loads(env["RAYGUARD_RAY_START_PARAMS"]) == {
        "object-manager-port": 8076, "log-style": "record",
        "node-ip-address": "127.0.0.1", "metrics-export-port": 41005, "dashboard-agent-listen-port": 41004,
        "port": 41001, "dashboard-port": 41006, "ray-client-server-port": 41007,
    }


@pytest.mark.parametrize("group", ["head", "cpu", "highmem"])
def test_other_variables_keep_the_pods_values(group: str, tmp_path: Path) -> None:
    pod = by_group(render(), group)
    env = dict(node_for(pod, "p0", tmp_path, head=group == "head").env)
    declared = pod_env(pod)
    assert set(env) == {e["name"] for e in declared} | {"RAYGUARD_DASHBOARD_PORT"}
    kept = {e["name"]: e["value"] for e in declared if e["name"] not in REPLACED}
    assert {k: env[k] for k in kept} == kept
    assert env["RAYGUARD_ROLE"] == ("head" if group == "head" else "worker")
    assert env["RAYGUARD_GROUP"] == group and env["RAYGUARD_CLUSTER"] == "demo"
    assert all(isinstance(v, str) for v in env.values())


def test_head_keeps_num_cpus_zero(tmp_path: Path) -> None:
    env = node_for(by_group(render(), "head"), "demo-head-0", tmp_path, head=True).env
    assert env["RAYGUARD_NUM_CPUS"] == "0"


def test_worker_node(tmp_path: Path) -> None:
    pod = by_group(render(), "cpu")
    node = node_for(pod, "demo-worker-cpu-1", tmp_path)
    assert (node.name, node.role, node.group, node.limit_bytes) == ("demo-worker-cpu-1", "worker", "cpu", 3 * GiB)
    env = node.env
    assert env["RAYGUARD_HEAD_ADDRESS"] == "127.0.0.1:41001"
    assert (env["POD_NAME"], env["NODE_NAME"], env["RAYGUARD_LIMIT_BYTES"]) == (
        "demo-worker-cpu-1", "localhost", "3221225472")
    assert (env["RAYGUARD_HEALTH_PORT"], env["RAYGUARD_REDIS_PORT"]) == ("42003", "41002")
    assert env["RAYGUARD_RAY_TEMP_DIR"] == str(tmp_path / "temp-demo-worker-cpu-1")
    assert env["RAYGUARD_RAY_AUTH_TOKEN_FILE"] == str(tmp_path / "secrets" / "ray-auth-token")
    assert json.loads(env["RAYGUARD_RAY_START_PARAMS"]) == {
        "node-ip-address": "127.0.0.1", "metrics-export-port": 42005, "dashboard-agent-listen-port": 42004,
    }
    # rayStartParams' resources are said once, through the contract's own setting.
    assert json.loads(env["RAYGUARD_RAY_RESOURCES"]) == {"disk": 1}


def test_highmem_worker_limit_and_group(tmp_path: Path) -> None:
    node = node_for(by_group(render(), "highmem"), "demo-worker-highmem-0", tmp_path)
    assert (node.role, node.group, node.limit_bytes) == ("worker", "highmem", 8 * GiB)
    assert node.env["RAYGUARD_LIMIT_BYTES"] == "8589934592"
    assert json.loads(node.env["RAYGUARD_RAY_START_PARAMS"]) == {
        "node-ip-address": "127.0.0.1", "metrics-export-port": 42005, "dashboard-agent-listen-port": 42004}


def test_namespace_comes_from_the_pod(tmp_path: Path) -> None:
    node = node_for(by_group(render(namespace="ml"), "cpu"), "demo-worker-cpu-0", tmp_path)
    assert node.env["POD_NAMESPACE"] == "ml"
    pod = copy.deepcopy(by_group(render(), "cpu"))
    del pod["metadata"]["namespace"]
    assert node_for(pod, "w", tmp_path).env["POD_NAMESPACE"] == "default"


def test_limit_from_the_container_and_unknown_sources_dropped(tmp_path: Path) -> None:
    pod = copy.deepcopy(by_group(render(), "cpu"))
    containers = pod["spec"]["containers"]
    containers.insert(0, {"name": "sidecar", "resources": {"limits": {"memory": "64Mi"}}, "env": []})
    containers[1]["resources"]["limits"]["memory"] = "1536Mi"
    containers[1]["env"] += [{"name": "FROM_SECRET", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
                             {"name": "PLAIN", "value": "x"}]
    node = node_for(pod, "w", tmp_path)
    assert node.limit_bytes == 1536 << 20 and node.env["RAYGUARD_LIMIT_BYTES"] == "1610612736"
    assert "FROM_SECRET" not in node.env and node.env["PLAIN"] == "x"


def test_pod_without_the_ray_node_container(tmp_path: Path) -> None:
    pod = copy.deepcopy(by_group(render(), "cpu"))
    pod["spec"]["containers"][0]["name"] = "other"
    with pytest.raises(RayguardError, match="has no ray-node container"):
        node_for(pod, "w", tmp_path)


def test_local_pod_names() -> None:
    pods = render()
    assert [p["metadata"]["name"] for p in pods] == [
        "demo-head-<random>", "demo-worker-cpu-<random>", "demo-worker-cpu-<random>", "demo-worker-highmem-<random>"]
    assert local_pod_names(pods) == ["demo-head-0", "demo-worker-cpu-0", "demo-worker-cpu-1", "demo-worker-highmem-0"]
    assert local_pod_names(render((3, 0))) == ["demo-head-0", "demo-worker-cpu-0", "demo-worker-cpu-1",
                                               "demo-worker-cpu-2"]
    assert local_pod_names([]) == []


def test_local_pod_names_interleaved_prefixes() -> None:
    pods = [{"metadata": {"name": n}} for n in ("a-<random>", "b-<random>", "a-<random>", "b-<random>", "a-<x>")]
    assert local_pod_names(pods) == ["a-0", "b-0", "a-1", "b-1", "a-2"]

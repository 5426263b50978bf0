"""Pods rendered by the operator's builders, turned into local `rayguard-node` processes.

Pure: a Pod manifest in, a `LocalNode` out. Everything Kubernetes would fill in (the
downward API, the Secret's files, the Service's address) is filled in here from local
values; ports become free loopback ports so several pods fit on one machine.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from rayguard_node.contract import settings as S
from rayguard_node.errors import RayguardError
from rayguard_node.sizing.quantity import parse_bytes

from rayguard_operator import names


@dataclass(frozen=True)
class LocalPorts:
    gcs: int
    redis: int
    health: int
    dashboard_agent: int
    metrics: int
    dashboard: int = 0
    client: int = 0


@dataclass(frozen=True)
class LocalNode:
    name: str
    role: str
    group: str
    limit_bytes: int
    env: Mapping[str, str] = field(default_factory=dict)


def _container(pod: Mapping[str, Any]) -> Mapping[str, Any]:
    for container in pod["spec"]["containers"]:
        if container["name"] == names.CONTAINER:
            return container
    raise RayguardError(f"pod {pod['metadata']['name']} has no {names.CONTAINER} container")


def _resolve(entry: Mapping[str, Any], pod_name: str, namespace: str, limit_bytes: int) -> str | None:
    if "value" in entry:
        return str(entry["value"])
    source = entry.get("valueFrom", {})
    field_path = source.get("fieldRef", {}).get("fieldPath")
    if field_path == "metadata.name":
        return pod_name
    if field_path == "metadata.namespace":
        return namespace
    if field_path == "spec.nodeName":
        return "localhost"
    if source.get("resourceFieldRef", {}).get("resource") == "limits.memory":
        return str(limit_bytes)
    return None


def local_node(pod: Mapping[str, Any], pod_name: str, ports: LocalPorts, head_ports: LocalPorts,
               secrets_dir: Path, temp_dir: Path, ip: str = "127.0.0.1") -> LocalNode:
    """The process that would run in `pod`, wired to loopback and local files. `ip` is the
    node's own loopback address (the head's GCS stays on 127.0.0.1)."""
    container = _container(pod)
    labels = pod["metadata"]["labels"]
    role, group = labels[names.LABEL_NODE_TYPE], labels[names.LABEL_GROUP]
    namespace = pod["metadata"].get("namespace", "default")
    limit_bytes = parse_bytes(container["resources"]["limits"]["memory"],
                              f"{pod_name}.resources.limits.memory")
    env: dict[str, str] = {}
    for entry in container.get("env", []):
        value = _resolve(entry, pod_name, namespace, limit_bytes)
        if value is not None:
            env[entry["name"]] = value
    params = json.loads(env.get(S.RAY_START_PARAMS.env, "{}"))
    params.update({"node-ip-address": ip, "metrics-export-port": ports.metrics,
                   "dashboard-agent-listen-port": ports.dashboard_agent})
    if role == names.HEAD:
        # The dashboard serves Ray's state API, which the quota path reads.
        params.update({"port": ports.gcs, "dashboard-port": ports.dashboard,
                       "ray-client-server-port": ports.client})
    env.update({
        S.RAY_START_PARAMS.env: json.dumps(params),
        S.RAY_AUTH_TOKEN_FILE.env: str(secrets_dir / names.SECRET_KEY_RAY_TOKEN),
        S.REDIS_PASSWORD_FILE.env: str(secrets_dir / names.SECRET_KEY_REDIS_PASSWORD),
        S.RAY_TEMP_DIR.env: str(temp_dir),
        S.HEALTH_PORT.env: str(ports.health),
        S.REDIS_PORT.env: str(head_ports.redis),
        S.DASHBOARD_PORT.env: str(head_ports.dashboard),
    })
    if role != names.HEAD:
        env[S.HEAD_ADDRESS.env] = f"127.0.0.1:{head_ports.gcs}"
    # Inside a real pod the kubelet sets the limit; locally the cgroup does, and detection
    # then finds it. Without cgroup rights the declared limit stays as an override.
    return LocalNode(pod_name, role, group, limit_bytes, env)


def next_local_name(pod: Mapping[str, Any], counters: dict[str, int]) -> str:
    """A readable, stable name in place of the API server's random suffix: the pod's prefix
    and the next index `counters` (per prefix, updated) gives it."""
    prefix = str(pod["metadata"]["name"]).split("<", 1)[0]
    counters[prefix] = counters.get(prefix, 0) + 1
    return f"{prefix}{counters[prefix] - 1}"


def local_pod_names(pods: list[Mapping[str, Any]]) -> list[str]:
    """The local names of pods rendered together."""
    counters: dict[str, int] = {}
    return [next_local_name(pod, counters) for pod in pods]

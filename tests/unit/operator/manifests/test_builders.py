"""Pure builders: expected manifests as YAML fixtures, Kubernetes schema validity, and the
properties each pod must have by DESIGN.

The fixtures in tests/data/operator/*.rendered.yaml are the builders' whole output for one
input each (their first line names the command that produces them). When a builder change
is intended, regenerate them with that command and review the diff.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from rayguard_node.sizing.plan import BudgetSettings, NodeFacts, make_plan
from rayguard_operator import names
from rayguard_operator.manifests.children import build_children, build_pod, pod_template
from rayguard_operator.spec.model import ClusterModel, parse_cluster
from rayguard_operator.manifests.pod import template_hash
from rayguard_operator.manifests.render import render_list
from rayguard_operator.settings import OperatorSettings
from tests.paths import REPO_ROOT

REPO = REPO_ROOT
DATA = REPO / "tests" / "data" / "operator"
FIXTURES = {
    "demo": REPO / "examples" / "raycluster.yaml",
    "minimal": REPO / "examples" / "raycluster-minimal.yaml",
    "sidecars": DATA / "sidecars.raycluster.yaml",
}
SETTINGS = OperatorSettings()
K8S_VERSION = "1.30"
GiB = 1024**3


def load(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def cluster_of(name: str, uid: str = "1234") -> ClusterModel:
    body = load(FIXTURES[name])
    body["metadata"]["uid"] = uid
    return parse_cluster(body, SETTINGS)


def env_of(pod: dict[str, Any]) -> dict[str, Any]:
    [container] = [c for c in pod["spec"]["containers"] if c["name"] == names.CONTAINER]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def volume(pod: dict[str, Any], name: str) -> dict[str, Any]:
    return next(v for v in pod["spec"]["volumes"] if v["name"] == name)


def all_children() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for name in FIXTURES:
        for child in build_children(cluster_of(name), lambda g, i: f"{name}-{g.name}-{i}", "t0ken", "passw0rd"):
            out.append((f"{name}:{child['kind']}:{child['metadata']['name']}", child))
    # The highmem group of the demo has 0 replicas; build one pod so its overlay is covered.
    demo = cluster_of("demo")
    out.append(("demo:Pod:highmem", build_pod(demo, demo.group("highmem"), "demo-worker-highmem-x")))  # type: ignore[arg-type]
    return out


@pytest.mark.parametrize("name", FIXTURES)
def test_render_matches_the_expected_manifests(name: str) -> None:
    assert render_list(load(FIXTURES[name]), SETTINGS) == load(DATA / f"{name}.rendered.yaml")


@pytest.mark.parametrize("label,obj", all_children(), ids=[label for label, _ in all_children()])
def test_every_child_validates_against_the_kubernetes_schema(label: str, obj: dict[str, Any]) -> None:
    kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def test_the_schema_check_can_fail() -> None:
    demo = cluster_of("demo")
    pod = build_pod(demo, demo.head, "demo-head-x")
    pod["spec"]["containers"][0]["resources"]["limitz"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(pod, K8S_VERSION, strict=True)


@pytest.mark.parametrize("name", FIXTURES)
def test_shm_is_exactly_the_planned_object_store(name: str) -> None:
    cluster = cluster_of(name)
    for group in cluster.groups:
        pod = build_pod(cluster, group, "p")
        limit = group.resources.memory_limit_bytes
        # Planned independently, as the runtime in that pod will plan it.
        expected = make_plan(group.role, NodeFacts(limit, "pod-spec", group.resources.cpu_limit, None, True),
                             BudgetSettings(object_store_fraction=group.memory.object_store_fraction,
                                            object_store_bytes=group.memory.object_store_bytes,
                                            object_store_max_bytes=group.memory.object_store_max_bytes,
                                            redis_fraction=group.memory.redis_fraction))
        shm = volume(pod, names.VOLUME_SHM)["emptyDir"]
        assert shm == {"medium": "Memory", "sizeLimit": str(expected.object_store_bytes)}
        assert env_of(pod)["RAYGUARD_OBJECT_STORE_BYTES"] == str(expected.object_store_bytes)
        [mount] = [m for m in pod["spec"]["containers"][0]["volumeMounts"] if m["name"] == names.VOLUME_SHM]
        assert mount["mountPath"] == "/dev/shm"


def test_head_takes_no_tasks_unless_told() -> None:
    demo = cluster_of("demo")
    assert env_of(build_pod(demo, demo.head, "h"))["RAYGUARD_NUM_CPUS"] == "0"
    side = cluster_of("sidecars")  # head.numCpus: 1
    assert env_of(build_pod(side, side.head, "h"))["RAYGUARD_NUM_CPUS"] == "1"


def test_pod_contract_env_labels_owner_and_command() -> None:
    demo = cluster_of("demo", uid="u-1")
    pod = build_pod(demo, demo.group("cpu"), "demo-worker-cpu-abcde")  # type: ignore[arg-type]
    env = env_of(pod)
    assert env["RAYGUARD_ROLE"] == "worker" and env["RAYGUARD_GROUP"] == "cpu" and env["RAYGUARD_CLUSTER"] == "demo"
    assert env["RAYGUARD_HEAD_ADDRESS"] == "demo-head.default.svc:6379"
    assert env["RAYGUARD_NUM_CPUS"] == "2"
    assert env["RAYGUARD_LIMIT_BYTES"] == {"resourceFieldRef": {
        "containerName": "ray-node", "resource": "limits.memory", "divisor": "1"}}
    assert env["POD_NAME"] == {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}}
    assert env["RAYGUARD_RAY_AUTH_TOKEN_FILE"] == "/etc/rayguard/secrets/ray-auth-token"
    assert env["RAYGUARD_REDIS_PASSWORD_FILE"] == "/etc/rayguard/secrets/redis-password"
    assert json.loads(env["RAYGUARD_RAY_START_PARAMS"]) == {"metrics-export-port": 8080}
    assert int(env["RAYGUARD_GRACE_SECONDS"]) + 5 <= pod["spec"]["terminationGracePeriodSeconds"]
    assert pod["metadata"]["labels"] == {"rayguard.dev/cluster": "demo", "rayguard.dev/node-type": "worker",
                                         "rayguard.dev/group": "cpu", "app.kubernetes.io/managed-by": "rayguard"}
    assert pod["metadata"]["ownerReferences"] == [{"apiVersion": "rayguard.dev/v1", "kind": "RayCluster",
                                                   "name": "demo", "uid": "u-1", "controller": True,
                                                   "blockOwnerDeletion": True}]
    container = pod["spec"]["containers"][0]
    assert container["name"] == "ray-node" and container["command"][:2] == ["sh", "-c"]
    assert container["command"][3:] == ["rayguard", "rayguard/node:0.1.0", "worker"]  # $0, $1 (image), $2 (role)
    assert container["command"][2].endswith('exec rayguard-node run --role "$2"')
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
    assert {"name": "health", "containerPort": 8079, "protocol": "TCP"} in container["ports"]
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert volume(pod, names.VOLUME_SECRETS)["secret"]["secretName"] == "demo-secret"


def test_every_env_name_the_builder_sets_is_reserved_from_overlays() -> None:
    for name in FIXTURES:
        cluster = cluster_of(name)
        for group in cluster.groups:
            built = {e["name"] for e in pod_template(cluster, group)["spec"]["containers"][0]["env"]}
            overlay = {e["name"] for c in group.template.get("spec", {}).get("containers", [])
                       if c["name"] == names.CONTAINER for e in c.get("env", [])}
            assert built - overlay <= names.RESERVED_ENV


def test_overlay_is_merged() -> None:
    demo = cluster_of("demo")
    pod = build_pod(demo, demo.group("highmem"), "x")  # type: ignore[arg-type]
    assert pod["metadata"]["labels"]["team"] == "analytics"
    assert pod["metadata"]["labels"]["rayguard.dev/group"] == "highmem"
    assert pod["metadata"]["annotations"]["example.com/cost-center"] == "ml-research"
    assert pod["spec"]["nodeSelector"] == {"example.com/memory-class": "high"}
    assert pod["spec"]["tolerations"] == [{"key": "example.com/highmem", "operator": "Exists", "effect": "NoSchedule"}]
    assert [v["name"] for v in pod["spec"]["volumes"]] == ["dshm", "rayguard-secrets", "ray-temp", "scratch"]
    [container] = pod["spec"]["containers"]  # merged by name, not appended
    assert container["volumeMounts"][-1] == {"name": "scratch", "mountPath": "/scratch"}
    assert container["image"] == "rayguard/node:0.1.0"


def test_sidecar_is_appended_with_the_restricted_context() -> None:
    side = cluster_of("sidecars")
    pod = build_pod(side, side.group("gpu"), "x")  # type: ignore[arg-type]
    assert [c["name"] for c in pod["spec"]["containers"]] == ["ray-node", "log-shipper"]
    shipper = pod["spec"]["containers"][1]
    assert shipper["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert env_of(pod)["RAYGUARD_GUARD_REFRESH_MS"] == "20"  # an env the overlay may add


def test_service_exposes_the_head_ports() -> None:
    demo = cluster_of("demo")
    service = next(c for c in build_children(demo, lambda g, i: "p", "a", "b") if c["kind"] == "Service")
    assert service["metadata"]["name"] == "demo-head"
    assert service["spec"]["selector"] == {"rayguard.dev/cluster": "demo", "rayguard.dev/node-type": "head"}
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == {
        "gcs": 6379, "client": 10001, "dashboard": 8265, "redis": 6380, "metrics": 8080}


def test_secret_holds_the_values_given() -> None:
    demo = cluster_of("demo")
    secret = build_children(demo, lambda g, i: "p", "tok", "pw")[0]
    assert secret["kind"] == "Secret" and secret["metadata"]["name"] == "demo-secret"
    assert secret["stringData"] == {"ray-auth-token": "tok", "redis-password": "pw"}


def test_template_hash_changes_with_the_pod_and_only_with_it() -> None:
    body = load(FIXTURES["demo"])
    base = parse_cluster(body, SETTINGS)
    hashes = {g.name: template_hash(base, g) for g in base.groups}
    body["spec"]["workerGroups"][0]["replicas"] = 3  # not part of a pod
    body["spec"]["workerGroups"][1]["memory"]["objectStoreFraction"] = 0.35  # highmem's plan only
    changed = parse_cluster(body, SETTINGS)
    assert {g.name: template_hash(changed, g) for g in changed.groups} == {**hashes, "highmem": template_hash(
        changed, changed.group("highmem"))}  # type: ignore[arg-type]
    assert template_hash(changed, changed.group("highmem")) != hashes["highmem"]  # type: ignore[arg-type]
    body["spec"]["image"] = "rayguard/node:0.2.0"
    bumped = parse_cluster(body, SETTINGS)
    assert all(template_hash(bumped, g) != hashes[g.name] for g in bumped.groups)

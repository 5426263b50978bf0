"""What a group's template overlay may not do: remove rayguard's securityContexts, reach its
mounts or env, replace its command, or make the pod break the operator's Pod Security Standard.
Each refusal is a SpecError naming the overlay's exact field."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from rayguard_operator import names
from rayguard_operator.errors import SpecError
from rayguard_operator.manifests.pod import build_env, build_pod, container_security
from rayguard_operator.settings import OperatorSettings
from rayguard_operator.spec.model import ClusterModel, parse_cluster
from rayguard_operator.spec.overlay import VOLUME_AT
from tests.paths import REPO_ROOT

T = "spec.workerGroups[0].template"
RESTRICTED, BASELINE, PRIVILEGED = (OperatorSettings(pod_security=level)
                                    for level in ("restricted", "baseline", "privileged"))
POD_DEFAULTS = {"runAsNonRoot": True, "runAsUser": names.RUN_AS_ID, "runAsGroup": names.RUN_AS_ID,
                "fsGroup": names.RUN_AS_ID, "seccompProfile": {"type": "RuntimeDefault"}}


def body(template: Any, cpu_limit: bool = True) -> dict[str, Any]:
    data = yaml.safe_load((REPO_ROOT / "examples" / "raycluster-minimal.yaml").read_text())
    data["spec"]["workerGroups"][0]["template"] = copy.deepcopy(template)
    if not cpu_limit:
        del data["spec"]["workerGroups"][0]["resources"]["limits"]["cpu"]
    return data


def ray_node(**fields: Any) -> dict[str, Any]:
    return {"spec": {"containers": [{"name": "ray-node", **fields}]}}


def sidecar(**fields: Any) -> dict[str, Any]:
    return {"spec": {"containers": [{"name": "ray-node"}, {"name": "side", "image": "s", **fields}]}}


def worker_pod(template: Any, settings: OperatorSettings = PRIVILEGED) -> dict[str, Any]:
    cluster = parse_cluster(body(template), settings)
    return build_pod(cluster, cluster.worker_groups[0], "pod")


def refused(template: Any, settings: OperatorSettings = RESTRICTED) -> SpecError:
    with pytest.raises(SpecError) as caught:
        parse_cluster(body(template), settings)
    assert str(caught.value).startswith(f"{caught.value.path}: ") and "\n" not in str(caught.value)
    return caught.value


# --- securityContext: null or {} removes nothing ------------------------------------------

@pytest.mark.parametrize("value", [None, {}, {"runAsNonRoot": None, "seccompProfile": None}])
def test_a_null_pod_security_context_keeps_rayguards(value: Any) -> None:
    # Even under `privileged`, where no level check would catch it: the merge itself keeps them.
    pod = worker_pod({"spec": {"securityContext": value}})
    assert pod["spec"]["securityContext"] == POD_DEFAULTS


@pytest.mark.parametrize("value", [None, {}, {"capabilities": None, "allowPrivilegeEscalation": None},
                                   {"capabilities": {"drop": None}}])
def test_a_null_ray_node_security_context_keeps_rayguards(value: Any) -> None:
    [container] = worker_pod(ray_node(securityContext=value))["spec"]["containers"]
    assert container["securityContext"] == container_security()


@pytest.mark.parametrize("fields", [{}, {"securityContext": None}, {"securityContext": {}},
                                    {"securityContext": {"runAsNonRoot": None}}])
def test_an_added_container_gets_the_restricted_defaults(fields: dict[str, Any]) -> None:
    template = sidecar(**fields)
    template["spec"]["initContainers"] = [{"name": "init", "image": "i", **fields}]
    pod = worker_pod(template)
    assert pod["spec"]["containers"][1]["securityContext"] == container_security()
    assert pod["spec"]["initContainers"][0]["securityContext"] == container_security()


# --- reserved mount paths, normalised, in every container ---------------------------------

@pytest.mark.parametrize("mount", [
    {"name": "x", "mountPath": "/dev//shm"},
    {"name": "x", "mountPath": "/dev/shm/."},
    {"name": "x", "mountPath": "/dev/shm/"},
    {"name": "x", "mountPath": "dev/shm"},
    {"name": "x", "mountPath": "/tmp/ray/../ray"},
    {"name": "x", "mountPath": "/tmp/ray/session_latest"},
    {"name": "x", "mountPath": "/etc/rayguard/secrets/ray-auth-token", "subPath": "token"},
    {"name": "x", "mountPath": "//etc/rayguard/secrets"},
])
def test_reserved_paths_are_compared_normalised(mount: dict[str, Any]) -> None:
    template = ray_node(volumeMounts=[{"name": "data", "mountPath": "/data"}, mount])
    error = refused(template, PRIVILEGED)
    assert error.path == f"{T}.spec.containers[0].volumeMounts[1].mountPath"
    assert "rayguard's" in str(error)


@pytest.mark.parametrize("key", ["containers", "initContainers"])
def test_other_containers_may_not_mount_over_reserved_paths(key: str) -> None:
    container = {"name": "other", "image": "o", "volumeMounts": [
        {"name": "ray-temp", "mountPath": "/tmp/ray", "readOnly": True},  # rayguard's own, read-only: allowed
        {"name": "mine", "mountPath": "/dev/shm"}]}
    error = refused({"spec": {key: [container]}}, PRIVILEGED)
    assert error.path == f"{T}.spec.{key}[0].volumeMounts[1].mountPath"
    container["volumeMounts"][1] = {"name": "rayguard-secrets", "mountPath": "/etc/rayguard/secrets"}  # writable
    assert refused({"spec": {key: [container]}}, PRIVILEGED).path == error.path
    container["volumeMounts"][1] = {"name": "mine", "mountPath": "/dev/shmem"}  # not under /dev/shm
    parse_cluster(body({"spec": {key: [container]}}), RESTRICTED)


def test_the_reserved_paths_are_the_builders_mounts() -> None:
    cluster = parse_cluster(body(None), RESTRICTED)
    mounts = build_pod(cluster, cluster.head, "pod")["spec"]["containers"][0]["volumeMounts"]
    assert VOLUME_AT == {m["mountPath"]: m["name"] for m in mounts}
    assert set(VOLUME_AT) == set(names.RESERVED_MOUNT_PATHS)


def test_ray_node_may_not_mount_even_rayguards_own_volume_again() -> None:
    error = refused(ray_node(volumeMounts=[{"name": "ray-temp", "mountPath": "/tmp/ray/", "readOnly": True}]))
    assert error.path == f"{T}.spec.containers[0].volumeMounts[0].mountPath"


# --- env, envFrom, command and args on ray-node -------------------------------------------

def _built_env_names() -> set[str]:
    names_seen: set[str] = set()
    for cpu in (True, False):
        cluster: ClusterModel = parse_cluster(body(None, cpu_limit=cpu), RESTRICTED)
        for group in cluster.groups:
            names_seen |= {e["name"] for e in build_env(cluster, group)}
    return names_seen


@pytest.mark.parametrize("env_name", sorted(_built_env_names()))
def test_every_env_the_builder_sets_is_reserved(env_name: str) -> None:
    template = ray_node(env=[{"name": "MINE", "value": "1"}, {"name": env_name, "value": "x"}])
    error = refused(template, PRIVILEGED)
    assert (error.path, str(error)) == (f"{T}.spec.containers[0].env[1].name",
                                        f"{T}.spec.containers[0].env[1].name: {env_name} is set by rayguard")


def test_env_from_is_refused_on_ray_node_only() -> None:
    error = refused(ray_node(envFrom=[{"configMapRef": {"name": "cfg"}}]), PRIVILEGED)
    assert error.path == f"{T}.spec.containers[0].envFrom" and "RAYGUARD_" in str(error)
    pod = worker_pod(sidecar(envFrom=[{"configMapRef": {"name": "cfg"}}]), RESTRICTED)
    assert pod["spec"]["containers"][1]["envFrom"] == [{"configMapRef": {"name": "cfg"}}]


@pytest.mark.parametrize("key, value", [("command", ["sleep", "infinity"]), ("args", ["--role", "head"]),
                                        ("command", [])])
def test_ray_nodes_command_is_rayguards(key: str, value: list[str]) -> None:
    error = refused(ray_node(**{key: value}), PRIVILEGED)
    assert error.path == f"{T}.spec.containers[0].{key}" and "rayguard-node run" in str(error)
    worker_pod(sidecar(**{key: value}), RESTRICTED)  # a sidecar's command is its own


def test_image_and_service_account_overrides_stay_allowed() -> None:
    template = ray_node(image="example.com/ray-gpu:2")
    template["spec"].update(serviceAccountName="ray-identity", automountServiceAccountToken=True)
    pod = worker_pod(template, RESTRICTED)
    assert pod["spec"]["containers"][0]["image"] == "example.com/ray-gpu:2"
    assert pod["spec"]["serviceAccountName"] == "ray-identity"
    # The runtime still runs, and its missing-runtime message names the overlay's image.
    command = pod["spec"]["containers"][0]["command"]
    assert command[:2] == ["sh", "-c"] and "exec rayguard-node run" in command[2]
    assert command[3:] == ["rayguard", "example.com/ray-gpu:2", "worker"]


# --- the operator's Pod Security Standard level -------------------------------------------

HARMFUL = [
    # (overlay, the field named, the rule, refused at baseline too)
    ({"spec": {"hostNetwork": True}}, f"{T}.spec.hostNetwork", "Host Namespaces", True),
    ({"spec": {"hostPID": True}}, f"{T}.spec.hostPID", "Host Namespaces", True),
    ({"spec": {"volumes": [{"name": "root", "hostPath": {"path": "/"}}]}},
     f"{T}.spec.volumes[0].hostPath", "HostPath Volumes", True),
    (sidecar(securityContext={"privileged": True}),
     f"{T}.spec.containers[1].securityContext.privileged", "Privileged Containers", True),
    ({"spec": {"initContainers": [{"name": "init", "image": "i", "securityContext": {"privileged": True}}]}},
     f"{T}.spec.initContainers[0].securityContext.privileged", "Privileged Containers", True),
    (ray_node(securityContext={"capabilities": {"add": ["SYS_ADMIN"]}}),
     f"{T}.spec.containers[0].securityContext.capabilities.add[0]", "Capabilities", True),
    (ray_node(ports=[{"containerPort": 9000, "hostPort": 9000}]),
     f"{T}.spec.containers[0].ports[0].hostPort", "Host Ports", True),
    ({"metadata": {"annotations": {"container.apparmor.security.beta.kubernetes.io/ray-node": "unconfined"}}},
     f"{T}.metadata.annotations.container.apparmor.security.beta.kubernetes.io/ray-node", "AppArmor", True),
    ({"spec": {"securityContext": {"seccompProfile": {"type": "Unconfined"}}}},
     f"{T}.spec.securityContext.seccompProfile.type", "Seccomp", True),
    ({"spec": {"securityContext": {"runAsUser": 0}}}, f"{T}.spec.securityContext.runAsUser",
     "Running as Non-root user", False),
    (sidecar(securityContext={"runAsUser": 0}), f"{T}.spec.containers[1].securityContext.runAsUser",
     "Running as Non-root user", False),
    (ray_node(securityContext={"runAsNonRoot": False}),
     f"{T}.spec.containers[0].securityContext.runAsNonRoot", "Running as Non-root", False),
    (ray_node(securityContext={"allowPrivilegeEscalation": True}),
     f"{T}.spec.containers[0].securityContext.allowPrivilegeEscalation", "Privilege Escalation", False),
    (sidecar(securityContext={"capabilities": {"drop": ["NET_RAW"]}}),
     f"{T}.spec.containers[1].securityContext.capabilities.drop", "Capabilities", False),
    ({"spec": {"volumes": [{"name": "share", "nfs": {"server": "nfs", "path": "/"}}]}},
     f"{T}.spec.volumes[0]", "Volume Types", False),
]


@pytest.mark.parametrize("overlay, path, rule, baseline", HARMFUL, ids=[h[1].removeprefix(T) for h in HARMFUL])
def test_an_overlay_that_breaks_the_level_is_an_invalid_spec(overlay: Any, path: str, rule: str,
                                                             baseline: bool) -> None:
    error = refused(overlay)
    assert error.path == path
    assert f"restricted Pod Security Standard ({rule}: " in str(error)
    assert "RAYGUARD_OPERATOR_POD_SECURITY" in str(error)
    if baseline:
        assert refused(overlay, BASELINE).path == path
    else:
        parse_cluster(body(overlay), BASELINE)
    parse_cluster(body(overlay), PRIVILEGED)  # the operator's admin allowed it


def test_the_head_group_is_checked_too() -> None:
    data = body(None)
    data["spec"]["head"]["template"] = {"spec": {"hostIPC": True}}
    with pytest.raises(SpecError, match=r"^spec\.head\.template\.spec\.hostIPC: "):
        parse_cluster(data, RESTRICTED)


def _render(tmp_path: Path, template: Any, level: str | None) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(body(template)))
    environ = {k: v for k, v in os.environ.items() if not k.startswith("RAYGUARD_")}
    if level is not None:
        environ["RAYGUARD_OPERATOR_POD_SECURITY"] = level
    return subprocess.run([sys.executable, "-m", "rayguard_operator.cli", "render", "-f", str(path)],
                          capture_output=True, text=True, timeout=60, env=environ)


def test_render_refuses_a_host_network_overlay_in_one_line(tmp_path: Path) -> None:
    result = _render(tmp_path, {"spec": {"hostNetwork": True}}, None)
    assert result.returncode == 2 and result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith("rayguard render: ") and f"{T}.spec.hostNetwork: " in line
    assert _render(tmp_path, {"spec": {"hostNetwork": True}}, "privileged").returncode == 0
    result = _render(tmp_path, None, "strict")
    assert result.returncode == 2 and "RAYGUARD_OPERATOR_POD_SECURITY" in result.stderr

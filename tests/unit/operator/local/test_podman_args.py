"""podman_args: a rendered Pod as `podman run` arguments, or a refusal naming the field (pure)."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest

from rayguard_operator.errors import SpecError
from rayguard_operator.local.podman_args import ContainerPlan, plan_container
from rayguard_operator.local.pods import LocalPorts, local_node
from rayguard_operator.manifests.render import load_cluster, render_list
from rayguard_operator.settings import OperatorSettings
from tests.paths import REPO_ROOT

PORTS = LocalPorts(gcs=41001, redis=41002, health=41003, dashboard_agent=41004, metrics=41005,
                   dashboard=41006, client=41007)
GiB = 1 << 30
SECRET = ("demo-secret", ("ray-auth-token", "redis-password"))


def pods() -> dict[str, dict[str, Any]]:
    body = load_cluster(REPO_ROOT / "examples" / "raycluster.yaml")
    items = render_list(body, OperatorSettings.from_env({}))["items"]
    return {p["metadata"]["labels"]["rayguard.dev/group"]: p for p in items if p["kind"] == "Pod"}


def plan(pod: dict[str, Any], tmp_path: Path, name: str = "demo-worker-cpu-0",
         secret: tuple[str, tuple[str, ...]] = SECRET) -> ContainerPlan:
    node = local_node(pod, name, PORTS, PORTS, tmp_path / "secrets", tmp_path / "rg-temp")
    return plan_container(pod, node, f"rayguard-run1-{name}", "run1", tmp_path / "volumes", secret, 4242)


def options(argv: list[str], flag: str) -> list[str]:
    return [a.split("=", 1)[1] for a in argv if a.startswith(flag + "=")]


def test_a_worker_pod_becomes_a_container_with_its_limits_user_and_security(tmp_path: Path) -> None:
    pod = pods()["cpu"]
    before = copy.deepcopy(pod)
    argv = plan(pod, tmp_path).argv
    assert pod == before
    assert argv[:2] == ["podman", "run"]
    assert "--network=host" in argv and "--pull=never" in argv
    assert options(argv, "--memory") == [str(3 * GiB)] and options(argv, "--memory-swap") == [str(3 * GiB)]
    assert options(argv, "--cpus") == ["2"] and options(argv, "--cpu-shares") == ["2048"]
    assert options(argv, "--user") == ["1000:1000"] and options(argv, "--group-add") == ["1000"]
    assert options(argv, "--cap-drop") == ["ALL"] and options(argv, "--cap-add") == []
    assert options(argv, "--security-opt") == ["no-new-privileges"]  # RuntimeDefault: podman's own profile
    assert options(argv, "--shm-size") == ["805306368"]  # the dshm emptyDir's sizeLimit
    assert "--label=rayguard.dev/group=cpu" in argv and "--label=rayguard.dev/local-run=run1" in argv
    assert "--label=rayguard.dev/local-pid=4242" in argv
    assert options(argv, "--stop-timeout") == ["30"]


def test_the_command_args_and_image_are_the_pods(tmp_path: Path) -> None:
    pod = pods()["cpu"]
    [container] = pod["spec"]["containers"]
    argv = plan(pod, tmp_path).argv
    entrypoint = json.loads(options(argv, "--entrypoint")[0])
    assert entrypoint == container["command"]
    image_at = argv.index("rayguard/node:0.1.0")
    assert argv[image_at + 1:] == container.get("args", [])  # the command carries the role
    assert all(not a.startswith("--") for a in argv[image_at:])


def test_env_is_the_pods_with_loopback_ports_and_the_secret_at_the_pods_mount(tmp_path: Path) -> None:
    env = dict(e.split("=", 1) for e in options(plan(pods()["cpu"], tmp_path).argv, "--env"))
    assert env["RAYGUARD_ROLE"] == "worker" and env["RAYGUARD_GROUP"] == "cpu"
    assert env["RAYGUARD_HEAD_ADDRESS"] == "127.0.0.1:41001"  # workers reach the head on loopback
    assert env["RAYGUARD_HEALTH_PORT"] == "41003"
    assert env["RAYGUARD_RAY_AUTH_TOKEN_FILE"] == "/etc/rayguard/secrets/ray-auth-token"
    assert env["RAYGUARD_REDIS_PASSWORD_FILE"] == "/etc/rayguard/secrets/redis-password"
    assert env["RAYGUARD_RAY_TEMP_DIR"] == str(tmp_path / "rg-temp")  # mounted at its host path too
    assert env["POD_NAME"] == "demo-worker-cpu-0" and env["RAYGUARD_LIMIT_BYTES"] == str(3 * GiB)


def test_volumes_secret_read_only_temp_dir_at_both_paths(tmp_path: Path) -> None:
    result = plan(pods()["cpu"], tmp_path)
    volumes = options(result.argv, "--volume")
    assert f"{tmp_path / 'volumes' / 'rayguard-secrets'}:/etc/rayguard/secrets:ro" in volumes
    assert f"{tmp_path / 'rg-temp'}:/tmp/ray" in volumes
    assert f"{tmp_path / 'rg-temp'}:{tmp_path / 'rg-temp'}" in volumes
    [secret] = [d for d in result.dirs if d.secret]
    assert secret.secret_keys == SECRET[1] and secret.mode == 0o440  # the volume's defaultMode 288
    assert (result.uid, result.gid) == (1000, 1000)


def test_a_memory_emptydir_elsewhere_is_a_sized_tmpfs_and_scheduling_is_a_note(tmp_path: Path) -> None:
    pod = pods()["cpu"]
    pod["spec"]["volumes"].append({"name": "fast", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}})
    pod["spec"]["containers"][0]["volumeMounts"].append({"name": "fast", "mountPath": "/fast"})
    pod["spec"]["nodeSelector"] = {"example.com/memory-class": "high"}
    result = plan(pod, tmp_path)
    assert "--mount=type=tmpfs,destination=/fast,tmpfs-size=67108864,tmpfs-mode=1777" in result.argv
    assert result.notes == ["spec.nodeSelector"]


def test_the_head_gets_its_ports_through_env_and_no_head_address(tmp_path: Path) -> None:
    argv = plan(pods()["head"], tmp_path, "demo-head-0").argv
    env = dict(e.split("=", 1) for e in options(argv, "--env"))
    assert "RAYGUARD_HEAD_ADDRESS" not in env
    assert json.loads(env["RAYGUARD_RAY_START_PARAMS"])["port"] == 41001
    assert options(argv, "--shm-size") == ["536870912"] and options(argv, "--cpus") == ["1"]


REFUSED = [
    # (where to put it, value, the field the one-line refusal names)
    (("containers", 0, "securityContext", "seLinuxOptions"), {"level": "s0:c1,c2"},
     "spec.containers[0].securityContext.seLinuxOptions"),
    (("containers", 0, "securityContext", "seccompProfile"), {"type": "Localhost", "localhostProfile": "x.json"},
     "spec.containers[0].securityContext.seccompProfile.type"),
    (("containers", 0, "securityContext", "appArmorProfile"), {"type": "RuntimeDefault"},
     "spec.containers[0].securityContext.appArmorProfile"),
    (("containers", 0, "securityContext", "privileged"), True, "spec.containers[0].securityContext.privileged"),
    (("securityContext", "sysctls"), [{"name": "net.core.somaxconn", "value": "1024"}],
     "spec.securityContext.sysctls"),
    (("hostPID",), True, "spec.hostPID"),
    (("initContainers",), [{"name": "init", "image": "busybox"}], "spec.initContainers"),
    (("containers", 0, "lifecycle"), {"preStop": {"exec": {"command": ["true"]}}}, "spec.containers[0].lifecycle"),
    (("containers", 0, "imagePullPolicy"), "Always", "spec.containers[0].imagePullPolicy"),
    (("containers", 0, "resources", "limits", "nvidia.com/gpu"), "1", "spec.containers[0].resources.limits.nvidia.com/gpu"),
]


@pytest.mark.parametrize("where,value,field", REFUSED, ids=[r[2] for r in REFUSED])
def test_what_cannot_be_honoured_is_refused_naming_the_field(tmp_path: Path, where: tuple[Any, ...],
                                                              value: Any, field: str) -> None:
    pod = pods()["cpu"]
    target = pod["spec"]
    for key in where[:-1]:
        target = target[key]
    target[where[-1]] = value
    with pytest.raises(SpecError) as refused:
        plan(pod, tmp_path)
    message = str(refused.value)
    assert message.startswith(f"pod demo-worker-cpu-0 {field}: --runtime podman cannot honour it"), message
    assert "\n" not in message


def test_a_sidecar_a_foreign_volume_and_an_unmovable_port_are_refused(tmp_path: Path) -> None:
    cases = []
    pod = pods()["cpu"]
    pod["spec"]["containers"].append({"name": "shipper", "image": "busybox"})
    cases.append((pod, "spec.containers[1]"))
    pod = pods()["cpu"]
    pod["spec"]["volumes"].append({"name": "data", "persistentVolumeClaim": {"claimName": "data"}})
    cases.append((pod, "spec.volumes[3].persistentVolumeClaim"))
    pod = pods()["cpu"]
    pod["spec"]["volumes"].append({"name": "scratch", "emptyDir": {"sizeLimit": "1Gi"}})
    cases.append((pod, "spec.volumes[3].emptyDir.sizeLimit"))
    pod = pods()["cpu"]
    pod["spec"]["containers"][0]["ports"].append({"name": "app", "containerPort": 9000})
    cases.append((pod, "spec.containers[0].ports[2]"))
    pod = pods()["cpu"]
    env = pod["spec"]["containers"][0]["env"]
    env.append({"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "other", "key": "k"}}})
    cases.append((pod, f"spec.containers[0].env[{len(env) - 1}] (TOKEN)"))
    for pod, field in cases:
        with pytest.raises(SpecError, match="^" + re.escape(f"pod demo-worker-cpu-0 {field}: ")):
            plan(pod, tmp_path)


def test_an_autoscaling_head_runs_without_its_autoscaler_sidecar(tmp_path: Path) -> None:
    """Local mode runs the autoscaler in its own process: the head's sidecar, its config and
    its token volume are left out, and nothing else of the pod is."""
    body = load_cluster(REPO_ROOT / "examples" / "raycluster-autoscaling.yaml")
    items = render_list(body, OperatorSettings.from_env({}))["items"]
    head = next(p for p in items if p["kind"] == "Pod")
    assert [c["name"] for c in head["spec"]["containers"]] == ["ray-node", "autoscaler"]
    secret = ("autoscaling-secret", SECRET[1])
    argv = plan(head, tmp_path, "autoscaling-head-0", secret).argv
    assert not any("autoscaler" in a for a in options(argv, "--volume")), argv
    env = dict(e.split("=", 1) for e in options(argv, "--env"))
    assert env["RAYGUARD_EXTERNAL_AUTOSCALER"] == "true"  # Ray's own monitor stays off
    head["spec"]["containers"].append({"name": "shipper", "image": "busybox"})
    with pytest.raises(SpecError, match=re.escape("spec.containers[1]")):
        plan(head, tmp_path, "autoscaling-head-0", secret)

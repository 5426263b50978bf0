"""The Pod Security Standards checker, rule by rule, and every pod rayguard builds passing
`restricted`: the examples, the builder fixtures and benign overlays, built by the real builders."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from rayguard_operator.manifests.children import build_children
from rayguard_operator.manifests.pod import build_pod
from rayguard_operator.settings import POD_SECURITY_LEVELS, OperatorSettings
from rayguard_operator.spec.model import ClusterModel, parse_cluster
from rayguard_operator.spec.overlay import check_overlay, container_security, merge_overlay, policy_base
from rayguard_operator.spec.pod_security import LEVELS, Violation, check_pod
from tests.paths import REPO_ROOT

# Every RayCluster body the operator tests use comes from these files (the reconcile, status,
# syncer, local-mode, lifecycle and OOM tests load the two examples).
BODIES = sorted((REPO_ROOT / "examples").glob("raycluster*.yaml")) + [
    REPO_ROOT / "tests" / "data" / "operator" / "sidecars.raycluster.yaml"]
BENIGN_OVERLAY: dict[str, Any] = {
    "metadata": {"labels": {"team": "ml"}, "annotations": {"example.com/owner": "ml"}},
    "spec": {
        "nodeSelector": {"example.com/pool": "ray"},
        "tolerations": [{"key": "example.com/ray", "operator": "Exists", "effect": "NoSchedule"}],
        "serviceAccountName": "ray-workload",
        "priorityClassName": "batch",
        "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}},
                    {"name": "config", "configMap": {"name": "cfg"}}],
        "initContainers": [{"name": "fetch", "image": "busybox:1", "command": ["true"]}],
        "containers": [
            {"name": "ray-node", "image": "example.com/ray-gpu:1",
             "volumeMounts": [{"name": "data", "mountPath": "/data"}],
             "env": [{"name": "EXTRA", "value": "1"}], "securityContext": None},
            {"name": "sidecar", "image": "example.com/side:1"},
            {"name": "sidecar-null", "image": "example.com/side:1", "securityContext": None},
        ],
        "securityContext": None,
    },
}


def load(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def with_overlay(template: dict[str, Any]) -> dict[str, Any]:
    body = load(REPO_ROOT / "examples" / "raycluster-minimal.yaml")
    body["spec"]["workerGroups"][0]["template"] = copy.deepcopy(template)
    return body


def pods(cluster: ClusterModel) -> list[dict[str, Any]]:
    children = build_children(cluster, lambda g, i: f"{g.name}-{i}", "token", "password")
    return [c for c in children if c["kind"] == "Pod"]


def bodies() -> list[tuple[str, dict[str, Any]]]:
    return [(p.name, load(p)) for p in BODIES] + [("benign overlay", with_overlay(BENIGN_OVERLAY))]


@pytest.mark.parametrize("name, body", bodies(), ids=[n for n, _ in bodies()])
def test_every_pod_the_operator_builds_passes_restricted(name: str, body: dict[str, Any]) -> None:
    cluster = parse_cluster(body, OperatorSettings())  # restricted: its own check passes too
    for group in cluster.groups:  # every group, replicas or not
        pod = build_pod(cluster, group, "pod")
        assert check_pod(pod, "restricted") == [], f"{name}/{group.name}"
    assert pods(cluster), name


def test_benign_overlay_keeps_rayguards_security_contexts() -> None:
    cluster = parse_cluster(with_overlay(BENIGN_OVERLAY), OperatorSettings())
    pod = build_pod(cluster, cluster.worker_groups[0], "pod")
    spec = pod["spec"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["serviceAccountName"] == "ray-workload"
    for container in spec["containers"] + spec["initContainers"]:
        assert container["securityContext"] == container_security(), container["name"]
    assert spec["containers"][0]["image"] == "example.com/ray-gpu:1"


# --- the policy base the spec check uses gives the builder's verdicts ----------------------

OVERLAYS: list[dict[str, Any]] = [
    {},
    BENIGN_OVERLAY,
    {"spec": {"hostNetwork": True, "hostPID": True}},
    {"spec": {"securityContext": {"runAsUser": 0, "runAsNonRoot": False, "seccompProfile": {"type": "Unconfined"}}}},
    {"spec": {"volumes": [{"name": "h", "hostPath": {"path": "/"}}, {"name": "n", "nfs": {"server": "s", "path": "/"}}]}},
    {"spec": {"containers": [{"name": "ray-node", "securityContext": {
        "privileged": True, "allowPrivilegeEscalation": True, "capabilities": {"add": ["SYS_ADMIN"], "drop": []}},
        "ports": [{"containerPort": 80, "hostPort": 80}]}]}},
    {"spec": {"containers": [{"name": "side", "image": "s", "securityContext": {"runAsUser": 0, "procMount": "Unmasked"},
                              "livenessProbe": {"tcpSocket": {"port": 1, "host": "10.0.0.1"}}}],
              "initContainers": [{"name": "init", "image": "i", "securityContext": {"seLinuxOptions": {"user": "root"}}}]}},
    {"metadata": {"annotations": {"container.apparmor.security.beta.kubernetes.io/ray-node": "unconfined"}},
     "spec": {"securityContext": {"sysctls": [{"name": "kernel.msgmax", "value": "1"}]}}},
]


def _verdict(violations: list[Violation]) -> set[tuple[str, str]]:
    # ray-node's own ports come first in the built pod; the policy base has none.
    return {(re.sub(r"ports\[\d+\]", "ports[*]", v.path), v.rule) for v in violations}


@pytest.mark.parametrize("overlay", OVERLAYS, ids=range(len(OVERLAYS)))
@pytest.mark.parametrize("level", ["baseline", "restricted"])
def test_the_spec_check_sees_what_the_built_pod_is(overlay: dict[str, Any], level: str) -> None:
    """parse_cluster checks the overlay merged into policy_base(); the builder merges it into
    the whole pod. Both must give the same verdict, or the spec check has drifted."""
    cluster = parse_cluster(with_overlay(overlay), OperatorSettings(pod_security="privileged"))
    for group in cluster.groups:
        built = build_pod(cluster, group, "pod")
        checked = merge_overlay(policy_base(), dict(group.template), container_security())
        assert _verdict(check_pod(built, level)) == _verdict(check_pod(checked, level))
    harmful = OVERLAYS.index(overlay) >= 2
    assert bool(check_pod(build_pod(cluster, cluster.worker_groups[0], "pod"), level)) == harmful


def test_levels_are_the_settings_levels() -> None:
    assert set(LEVELS) == set(POD_SECURITY_LEVELS)
    with pytest.raises(ValueError, match="unknown Pod Security Standard"):
        check_pod({}, "strict")


# --- the checker, rule by rule ------------------------------------------------------------

def good_pod() -> dict[str, Any]:
    """Passes restricted: everything set that restricted requires, on one container of each kind."""
    container = {"image": "x", "securityContext": container_security(),
                 "ports": [{"containerPort": 8080}],
                 "readinessProbe": {"httpGet": {"path": "/", "port": 8080}}}
    return {"metadata": {"annotations": {"container.apparmor.security.beta.kubernetes.io/app": "runtime/default"}},
            "spec": {"containers": [{"name": "app", **copy.deepcopy(container)}],
                     "initContainers": [{"name": "init", **copy.deepcopy(container)}],
                     "ephemeralContainers": [{"name": "debug", **copy.deepcopy(container)}],
                     "volumes": [{"name": "v", "emptyDir": {}}, {"name": "p", "projected": {"sources": []}}],
                     "securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "seccompProfile": {"type": "RuntimeDefault"},
                                         "sysctls": [{"name": "net.ipv4.tcp_syncookies", "value": "1"}]}}}


Edit = Callable[[dict[str, Any]], None]


def _set(path: str, value: Any) -> Edit:
    def edit(pod: dict[str, Any]) -> None:
        *parents, last = [int(p) if p.isdigit() else p for p in path.split("/")]
        node: Any = pod
        for key in parents:
            node = node[key] if isinstance(key, int) or key in node else node.setdefault(key, {})
        node[last] = value
    return edit


C0, I0, E0 = "spec/containers/0", "spec/initContainers/0", "spec/ephemeralContainers/0"
# (level the rule belongs to, edit, the violation's path, the rule's name on the Kubernetes page)
RULES: list[tuple[str, Edit, str, str]] = [
    ("baseline", _set("spec/securityContext/windowsOptions", {"hostProcess": True}),
     "spec.securityContext.windowsOptions.hostProcess", "HostProcess"),
    ("baseline", _set(f"{E0}/securityContext/windowsOptions", {"hostProcess": True}),
     "spec.ephemeralContainers[0].securityContext.windowsOptions.hostProcess", "HostProcess"),
    ("baseline", _set("spec/hostNetwork", True), "spec.hostNetwork", "Host Namespaces"),
    ("baseline", _set("spec/hostPID", True), "spec.hostPID", "Host Namespaces"),
    ("baseline", _set("spec/hostIPC", True), "spec.hostIPC", "Host Namespaces"),
    ("baseline", _set(f"{C0}/securityContext/privileged", True),
     "spec.containers[0].securityContext.privileged", "Privileged Containers"),
    ("baseline", _set(f"{I0}/securityContext/privileged", True),
     "spec.initContainers[0].securityContext.privileged", "Privileged Containers"),
    ("baseline", _set(f"{C0}/securityContext/capabilities/add", ["NET_BIND_SERVICE", "SYS_ADMIN"]),
     "spec.containers[0].securityContext.capabilities.add[1]", "Capabilities"),
    ("baseline", _set("spec/volumes/0", {"name": "h", "hostPath": {"path": "/etc"}}),
     "spec.volumes[0].hostPath", "HostPath Volumes"),
    ("baseline", _set(f"{I0}/ports/0/hostPort", 8080), "spec.initContainers[0].ports[0].hostPort", "Host Ports"),
    ("baseline", _set(f"{C0}/readinessProbe/httpGet/host", "169.254.169.254"),
     "spec.containers[0].readinessProbe.httpGet.host", "Host Probes / Lifecycle Hooks"),
    ("baseline", _set(f"{C0}/lifecycle", {"preStop": {"tcpSocket": {"port": 1, "host": "node"}}}),
     "spec.containers[0].lifecycle.preStop.tcpSocket.host", "Host Probes / Lifecycle Hooks"),
    ("baseline", lambda pod: pod["metadata"]["annotations"].update(
        {"container.apparmor.security.beta.kubernetes.io/app": "unconfined"}),
     "metadata.annotations.container.apparmor.security.beta.kubernetes.io/app", "AppArmor"),
    ("baseline", _set(f"{C0}/securityContext/appArmorProfile", {"type": "Unconfined"}),
     "spec.containers[0].securityContext.appArmorProfile.type", "AppArmor"),
    ("baseline", _set("spec/securityContext/seLinuxOptions", {"type": "spc_t"}),
     "spec.securityContext.seLinuxOptions.type", "SELinux"),
    ("baseline", _set(f"{C0}/securityContext/seLinuxOptions", {"role": "sysadm_r"}),
     "spec.containers[0].securityContext.seLinuxOptions.role", "SELinux"),
    ("baseline", _set(f"{C0}/securityContext/procMount", "Unmasked"),
     "spec.containers[0].securityContext.procMount", "/proc Mount Type"),
    ("baseline", _set(f"{C0}/securityContext/seccompProfile", {"type": "Unconfined"}),
     "spec.containers[0].securityContext.seccompProfile.type", "Seccomp"),
    ("baseline", _set("spec/securityContext/sysctls/0", {"name": "kernel.msgmax", "value": "1"}),
     "spec.securityContext.sysctls[0].name", "Sysctls"),
    ("restricted", _set("spec/volumes/1", {"name": "n", "nfs": {"server": "s", "path": "/"}}),
     "spec.volumes[1]", "Volume Types"),
    ("restricted", _set(f"{C0}/securityContext/allowPrivilegeEscalation", True),
     "spec.containers[0].securityContext.allowPrivilegeEscalation", "Privilege Escalation"),
    ("restricted", _set(f"{I0}/securityContext", {"runAsNonRoot": True, "capabilities": {"drop": ["ALL"]}}),
     "spec.initContainers[0].securityContext.allowPrivilegeEscalation", "Privilege Escalation"),
    ("restricted", _set(f"{C0}/securityContext/runAsNonRoot", False),
     "spec.containers[0].securityContext.runAsNonRoot", "Running as Non-root"),
    ("restricted", _set("spec/securityContext/runAsNonRoot", False),
     "spec.securityContext.runAsNonRoot", "Running as Non-root"),
    ("restricted", _set("spec/securityContext/runAsUser", 0), "spec.securityContext.runAsUser", "Running as Non-root user"),
    ("restricted", _set(f"{E0}/securityContext/runAsUser", 0),
     "spec.ephemeralContainers[0].securityContext.runAsUser", "Running as Non-root user"),
    ("restricted", lambda pod: (pod["spec"]["securityContext"].pop("seccompProfile"),
                                pod["spec"]["containers"][0]["securityContext"].pop("seccompProfile")),
     "spec.containers[0].securityContext.seccompProfile.type", "Seccomp"),  # absent is refused too
    ("restricted", _set(f"{C0}/securityContext/capabilities", {"drop": ["NET_RAW"]}),
     "spec.containers[0].securityContext.capabilities.drop", "Capabilities"),
    ("restricted", _set(f"{C0}/securityContext/capabilities/add", ["CHOWN"]),
     "spec.containers[0].securityContext.capabilities.add[0]", "Capabilities"),
]


def test_the_good_pod_passes_every_level() -> None:
    for level in LEVELS:
        assert check_pod(good_pod(), level) == []


@pytest.mark.parametrize("level, edit, path, rule", RULES, ids=[f"{r[3]}:{r[2]}" for r in RULES])
def test_each_rule_can_fail(level: str, edit: Edit, path: str, rule: str) -> None:
    pod = good_pod()
    edit(pod)
    found = check_pod(pod, level)
    assert [(v.path, v.rule) for v in found] == [(path, rule)], found
    assert str(found[0]).startswith(f"{path}: {rule}: ")
    assert check_pod(pod, "restricted")  # restricted includes everything baseline forbids
    assert check_pod(pod, "privileged") == []
    if level == "restricted":
        assert check_pod(pod, "baseline") == []


def test_containers_inherit_the_pods_security_context() -> None:
    pod = good_pod()
    for key in ("containers", "initContainers", "ephemeralContainers"):
        del pod["spec"][key][0]["securityContext"]["runAsNonRoot"]
        del pod["spec"][key][0]["securityContext"]["seccompProfile"]
    assert check_pod(pod, "restricted") == []  # both come from the pod
    del pod["spec"]["securityContext"]["seccompProfile"]
    pod["spec"]["securityContext"]["runAsNonRoot"] = None
    found = {(v.path, v.rule) for v in check_pod(pod, "restricted")}
    assert ("spec.initContainers[0].securityContext.runAsNonRoot", "Running as Non-root") in found
    assert ("spec.ephemeralContainers[0].securityContext.seccompProfile.type", "Seccomp") in found
    assert len(found) == 6
    # Without a pod-level value, every container setting its own is enough.
    pod = good_pod()
    del pod["spec"]["securityContext"]
    assert check_pod(pod, "restricted") == []
    # A value Kubernetes would see as set must be the allowed value: true is not 1.
    pod["spec"]["hostNetwork"] = 0
    pod["spec"]["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = 0
    assert [v.rule for v in check_pod(pod, "restricted")] == ["Host Namespaces", "Privilege Escalation"]


def test_linux_only_controls_are_skipped_for_windows_pods() -> None:
    pod = good_pod()
    pod["spec"]["os"] = {"name": "windows"}
    pod["spec"]["securityContext"].pop("seccompProfile")
    for key in ("containers", "initContainers", "ephemeralContainers"):
        pod["spec"][key][0]["securityContext"] = {"runAsNonRoot": True}
    assert check_pod(pod, "restricted") == []
    pod["spec"]["os"] = {"name": "linux"}
    assert {v.rule for v in check_pod(pod, "restricted")} == {"Privilege Escalation", "Seccomp", "Capabilities"}


def test_a_bare_pod_spec_is_read_as_the_spec() -> None:
    assert check_pod({"containers": [{"name": "a"}], "hostPID": True}, "baseline") == [
        Violation("spec.hostPID", "Host Namespaces", "must be unset or false")]


def test_check_overlay_is_unchanged_by_the_level_check() -> None:
    """The level check runs on a copy: the model keeps the overlay as written."""
    template = check_overlay(copy.deepcopy(BENIGN_OVERLAY), "t")
    cluster = parse_cluster(with_overlay(BENIGN_OVERLAY), OperatorSettings())
    assert dict(cluster.worker_groups[0].template) == template

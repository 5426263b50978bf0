"""The Kubernetes Pod Security Standards, checked on a Pod (or pod template) as a dict. Pure.

`check_pod(pod, level)` returns every violation of `level` ("privileged", "baseline" or
"restricted"), each naming the field (`spec.containers[1].securityContext.privileged`) and the
control. The controls and their allowed values are those of the Kubernetes documentation page
"Pod Security Standards" (kubernetes.io/docs/concepts/security/pod-security-standards/); each
check below cites its control by the name that page gives it. Container fields are checked
on `containers`, `initContainers` and `ephemeralContainers`. As the pod-security admission
controller does, an explicitly set value must be allowed wherever it is set (pod or
container), and a value Restricted requires (runAsNonRoot, the seccomp profile) may come from
the pod's securityContext, which containers inherit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Mapping

PRIVILEGED, BASELINE, RESTRICTED = "privileged", "baseline", "restricted"
LEVELS = (PRIVILEGED, BASELINE, RESTRICTED)
CONTAINER_LISTS = ("containers", "initContainers", "ephemeralContainers")

BASELINE_CAPABILITIES = frozenset({
    "AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD", "NET_BIND_SERVICE",
    "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"})
RESTRICTED_CAPABILITIES = frozenset({"NET_BIND_SERVICE"})
SAFE_SYSCTLS = frozenset({
    "kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes"})
SELINUX_TYPES = ("", "container_t", "container_init_t", "container_kvm_t", "container_engine_t")
PROFILE_TYPES = ("RuntimeDefault", "Localhost")  # seccomp and AppArmor
APPARMOR_ANNOTATION = "container.apparmor.security.beta.kubernetes.io/"
RESTRICTED_VOLUME_TYPES = ("configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
                           "persistentVolumeClaim", "projected", "secret")
PROBES = ("livenessProbe", "readinessProbe", "startupProbe")
HOOKS = ("postStart", "preStop")


@dataclass(frozen=True)
class Violation:
    path: str    # the field, in the pod: spec.containers[1].securityContext.privileged
    rule: str    # the control's name on the Kubernetes page, e.g. "Privileged Containers"
    detail: str  # what is allowed

    def __str__(self) -> str:
        return f"{self.path}: {self.rule}: {self.detail}"


def _map(value: Any) -> Mapping[str, Any]:
    """A malformed part (the API server refuses it anyway) is read as absent."""
    return value if isinstance(value, Mapping) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _is(value: Any, *allowed: Any) -> bool:
    """Membership where True is not 1 and False is not 0."""
    return any(value is a if a is None or isinstance(a, bool) else
               (not isinstance(value, bool) and value == a) for a in allowed)


def _containers(spec: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    for key in CONTAINER_LISTS:
        for i, container in enumerate(_list(spec.get(key))):
            yield f"spec.{key}[{i}]", _map(container)


def _contexts(spec: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """The pod's securityContext and each container's, with their paths."""
    yield "spec.securityContext", _map(spec.get("securityContext"))
    for path, container in _containers(spec):
        yield f"{path}.securityContext", _map(container.get("securityContext"))


def _baseline(metadata: Mapping[str, Any], spec: Mapping[str, Any]) -> Iterator[Violation]:
    # "HostProcess": windowsOptions.hostProcess, pod and containers: undefined or false.
    for path, context in _contexts(spec):
        value = _map(context.get("windowsOptions")).get("hostProcess")
        if not _is(value, None, False):
            yield Violation(f"{path}.windowsOptions.hostProcess", "HostProcess", "must be unset or false")
    # "Host Namespaces": hostNetwork, hostPID, hostIPC: undefined or false.
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if not _is(spec.get(key), None, False):
            yield Violation(f"spec.{key}", "Host Namespaces", "must be unset or false")
    for path, container in _containers(spec):
        context = _map(container.get("securityContext"))
        # "Privileged Containers": securityContext.privileged: undefined or false.
        if not _is(context.get("privileged"), None, False):
            yield Violation(f"{path}.securityContext.privileged", "Privileged Containers", "must be unset or false")
        # "Capabilities": capabilities.add only from the Baseline list.
        for i, capability in enumerate(_list(_map(context.get("capabilities")).get("add"))):
            if capability not in BASELINE_CAPABILITIES:
                yield Violation(f"{path}.securityContext.capabilities.add[{i}]", "Capabilities",
                                f"{capability!r} is not in the Baseline list"
                                f" ({', '.join(sorted(BASELINE_CAPABILITIES))})")
        # "Host Ports": ports[*].hostPort: undefined or 0.
        for i, port in enumerate(_list(container.get("ports"))):
            if not _is(_map(port).get("hostPort"), None, 0):
                yield Violation(f"{path}.ports[{i}].hostPort", "Host Ports", "must be unset or 0")
        # "Host Probes / Lifecycle Hooks": httpGet.host and tcpSocket.host: undefined or "".
        handlers = [(f"{path}.{p}", _map(container.get(p))) for p in PROBES]
        handlers += [(f"{path}.lifecycle.{h}", _map(_map(container.get("lifecycle")).get(h))) for h in HOOKS]
        for where, handler in handlers:
            for kind in ("httpGet", "tcpSocket"):
                if not _is(_map(handler.get(kind)).get("host"), None, ""):
                    yield Violation(f"{where}.{kind}.host", "Host Probes / Lifecycle Hooks", "must be unset or empty")
        # "/proc Mount Type": procMount: undefined or Default.
        if not _is(context.get("procMount"), None, "Default"):
            yield Violation(f"{path}.securityContext.procMount", "/proc Mount Type", "must be unset or Default")
    # "HostPath Volumes": volumes[*].hostPath: undefined.
    for i, volume in enumerate(_list(spec.get("volumes"))):
        if _map(volume).get("hostPath") is not None:
            yield Violation(f"spec.volumes[{i}].hostPath", "HostPath Volumes", "hostPath volumes are forbidden")
    # "AppArmor": appArmorProfile.type undefined, RuntimeDefault or Localhost; the beta
    # annotations runtime/default or localhost/*.
    for path, context in _contexts(spec):
        if not _is(_map(context.get("appArmorProfile")).get("type"), None, *PROFILE_TYPES):
            yield Violation(f"{path}.appArmorProfile.type", "AppArmor", "must be unset, RuntimeDefault or Localhost")
    for key, value in sorted(_map(metadata.get("annotations")).items()):
        if key.startswith(APPARMOR_ANNOTATION) and not (
                value == "runtime/default" or (isinstance(value, str) and value.startswith("localhost/"))):
            yield Violation(f"metadata.annotations.{key}", "AppArmor", "must be runtime/default or localhost/*")
    # "SELinux": seLinuxOptions.type from the allowed list; user and role undefined or "".
    for path, context in _contexts(spec):
        options = _map(context.get("seLinuxOptions"))
        if not _is(options.get("type"), None, *SELINUX_TYPES):
            yield Violation(f"{path}.seLinuxOptions.type", "SELinux",
                            f"must be unset or one of {', '.join(t for t in SELINUX_TYPES if t)}")
        for key in ("user", "role"):
            if not _is(options.get(key), None, ""):
                yield Violation(f"{path}.seLinuxOptions.{key}", "SELinux",
                                "custom SELinux users and roles are forbidden")
    # "Seccomp" (Baseline): seccompProfile.type must not be Unconfined, pod or container.
    for path, context in _contexts(spec):
        if _map(context.get("seccompProfile")).get("type") == "Unconfined":
            yield Violation(f"{path}.seccompProfile.type", "Seccomp", "must not be Unconfined")
    # "Sysctls": spec.securityContext.sysctls[*].name only from the safe set.
    for i, sysctl in enumerate(_list(_map(spec.get("securityContext")).get("sysctls"))):
        name = _map(sysctl).get("name")
        if name not in SAFE_SYSCTLS:
            yield Violation(f"spec.securityContext.sysctls[{i}].name", "Sysctls", f"{name!r} is not a safe sysctl")


def _restricted(spec: Mapping[str, Any]) -> Iterator[Violation]:
    pod = _map(spec.get("securityContext"))
    linux = _map(spec.get("os")).get("name") != "windows"  # three controls are Linux only
    # "Volume Types": every volume is one of the allowed kinds.
    for i, volume in enumerate(_list(spec.get("volumes"))):
        volume = _map(volume)
        if not any(volume.get(kind) is not None for kind in RESTRICTED_VOLUME_TYPES):
            kinds = sorted(k for k in volume if k != "name") or ["none"]
            yield Violation(f"spec.volumes[{i}]", "Volume Types",
                            f"{', '.join(kinds)} is not one of {', '.join(RESTRICTED_VOLUME_TYPES)}")
    # "Running as Non-root": runAsNonRoot true, on every container or inherited from the pod;
    # false is refused wherever it is set.
    if not _is(pod.get("runAsNonRoot"), None, True):
        yield Violation("spec.securityContext.runAsNonRoot", "Running as Non-root", "must be true")
    # "Running as Non-root user": runAsUser is never 0.
    if not _non_root_user(pod.get("runAsUser")):
        yield Violation("spec.securityContext.runAsUser", "Running as Non-root user", "must be unset or not 0")
    # "Seccomp" (Restricted): RuntimeDefault or Localhost, on every container or inherited.
    pod_seccomp = _map(pod.get("seccompProfile")).get("type")
    if linux and not _is(pod_seccomp, None, *PROFILE_TYPES):
        yield Violation("spec.securityContext.seccompProfile.type", "Seccomp", "must be RuntimeDefault or Localhost")
    for path, container in _containers(spec):
        context = _map(container.get("securityContext"))
        here = f"{path}.securityContext"
        # "Privilege Escalation": allowPrivilegeEscalation must be false.
        if linux and not _is(context.get("allowPrivilegeEscalation"), False):
            yield Violation(f"{here}.allowPrivilegeEscalation", "Privilege Escalation", "must be false")
        non_root = context.get("runAsNonRoot")
        if not (_is(non_root, True) or (non_root is None and _is(pod.get("runAsNonRoot"), True))):
            yield Violation(f"{here}.runAsNonRoot", "Running as Non-root",
                            "must be true (here or in spec.securityContext)")
        if not _non_root_user(context.get("runAsUser")):
            yield Violation(f"{here}.runAsUser", "Running as Non-root user", "must be unset or not 0")
        seccomp = _map(context.get("seccompProfile")).get("type")
        if linux and not (_is(seccomp, *PROFILE_TYPES) or (seccomp is None and _is(pod_seccomp, *PROFILE_TYPES))):
            yield Violation(f"{here}.seccompProfile.type", "Seccomp",
                            "must be RuntimeDefault or Localhost (here or in spec.securityContext)")
        # "Capabilities" (Restricted): drop includes ALL; add only NET_BIND_SERVICE.
        capabilities = _map(context.get("capabilities"))
        if linux and "ALL" not in _list(capabilities.get("drop")):
            yield Violation(f"{here}.capabilities.drop", "Capabilities", "must include ALL")
        for i, capability in enumerate(_list(capabilities.get("add"))):
            if linux and capability not in RESTRICTED_CAPABILITIES:
                yield Violation(f"{here}.capabilities.add[{i}]", "Capabilities",
                                f"{capability!r}: only NET_BIND_SERVICE may be added")


def _non_root_user(value: Any) -> bool:
    return value is None or (isinstance(value, int) and not isinstance(value, bool) and value != 0)


def check_pod(pod: Mapping[str, Any], level: str) -> list[Violation]:
    """Every violation of `level` in a Pod or pod template ({metadata, spec}); a bare PodSpec
    (no `spec` key) is read as the spec. Paths start at the pod: `spec.`, `metadata.`."""
    if level not in LEVELS:
        raise ValueError(f"unknown Pod Security Standard {level!r}; expected one of {', '.join(LEVELS)}")
    if level == PRIVILEGED:  # "Privileged": entirely unrestricted
        return []
    spec = _map(pod.get("spec")) if "spec" in pod else pod
    violations = list(_baseline(_map(pod.get("metadata")), spec))
    if level == RESTRICTED:  # "Restricted": everything from Baseline, and more
        violations += _restricted(spec)
    unique: dict[tuple[str, str], Violation] = {}  # a field both levels refuse is named once
    for violation in violations:
        unique.setdefault((violation.path, violation.rule), violation)
    return list(unique.values())

"""A rendered Pod as `podman run` arguments (pure): what `--runtime podman` runs, or a refusal.

Honoured: the ray-node container's image, command, args, env and workingDir; memory and CPU
limits (no swap, CPU shares from the CPU request); the pod's and the container's
securityContext (user and groups, capabilities, no-new-privileges, seccomp, a read-only root);
`/dev/shm` sized from the pod's memory emptyDir; other emptyDirs as directories (memory ones as
tmpfs of their size); the Secret's keys as read-only files at the pod's mount paths; labels and
annotations; terminationGracePeriodSeconds. Every port is a free loopback port on the host's
network, as in `--runtime process` (pods.py).

Anything else in a pod spec is refused with a SpecError naming the field: nothing is dropped
in silence. Scheduling fields are accepted (one machine: every pod runs here, said once), and so
are probes and restartPolicy (a pod that exits is reported and stays down, said once).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from rayguard_node.contract import autoscaler as A
from rayguard_node.contract import settings as S
from rayguard_node.sizing.quantity import parse_bytes

from rayguard_operator import names
from rayguard_operator.errors import SpecError
from rayguard_operator.local.pods import LocalNode
from rayguard_operator.spec.autoscaling import TOKEN_VOLUME

SIDECAR_VOLUMES = frozenset({A.VOLUME, TOKEN_VOLUME})  # mounted by the autoscaler sidecar alone
CGROUP_PARENT_PREFIX = "rayguard-podman-"  # one cgroup parent per run, in every hierarchy
LABEL_RUN = "rayguard.dev/local-run"  # which `rayguard local up` made the container
LABEL_OWNER_PID = "rayguard.dev/local-pid"  # its pid: a container whose owner died is swept
# Placement only: there is one machine, and every pod runs on it.
SCHEDULING = ("nodeSelector", "tolerations", "affinity", "topologySpreadConstraints",
              "priorityClassName", "priority", "schedulerName", "preemptionPolicy")
# Accepted as documented: what a pod does after it exits (local mode reports it, no restart),
# and the API-server-side fields that do nothing to the container itself.
POD_KEYS = {"containers", "volumes", "securityContext", "restartPolicy", "terminationGracePeriodSeconds",
            "enableServiceLinks", "automountServiceAccountToken", "serviceAccountName",
            "imagePullSecrets", *SCHEDULING}
CONTAINER_KEYS = {"name", "image", "command", "args", "env", "ports", "resources", "volumeMounts",
                  "securityContext", "workingDir", "imagePullPolicy", "startupProbe", "livenessProbe",
                  "readinessProbe", "terminationMessagePolicy", "terminationMessagePath"}
SECURITY_KEYS = {"runAsUser", "runAsGroup", "runAsNonRoot", "fsGroup", "fsGroupChangePolicy",
                 "supplementalGroups", "seccompProfile", "allowPrivilegeEscalation", "capabilities",
                 "readOnlyRootFilesystem", "privileged"}
# The ports local mode moves to free loopback ports (pods.py); any other could not be moved.
REMAPPED_PORTS = {"gcs", "client", "dashboard", "redis", "metrics", "health"}
# Env the runtime points at the container's own mounts (local_node points them at host files).
POD_PATH_ENV = (S.RAY_AUTH_TOKEN_FILE.env, S.REDIS_PASSWORD_FILE.env)


@dataclass(frozen=True)
class HostDir:
    """A directory the runtime makes (and removes) for a volume: (mount path, read-only) each."""
    host: Path
    mounts: tuple[tuple[str, bool], ...]
    secret_keys: tuple[str, ...] = ()  # a Secret volume: these keys' files, mode `mode`
    mode: int = 0o644
    secret: bool = False


@dataclass(frozen=True)
class ContainerPlan:
    argv: list[str]  # podman run ... IMAGE [ARGS]
    image: str
    uid: int
    gid: int
    dirs: list[HostDir] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # accepted fields that do nothing here


def refuse(pod_name: str, path: str, why: str) -> SpecError:
    return SpecError(f"pod {pod_name} {path}", f"--runtime podman cannot honour it: {why}")


# Why a field is refused, where more can be said than that the podman runtime does not do it.
WHY = {"seLinuxOptions": "no SELinux labels are set here", "appArmorProfile": "no AppArmor profiles here",
       "sysctls": "no sysctls are set here", "procMount": "the default /proc only",
       "windowsOptions": "Linux containers only", "initContainers": "only the ray-node container runs",
       "lifecycle": "no lifecycle hooks run here", "hostNetwork": "the host's network is used, on loopback ports",
       "hostPID": "each pod has its own PID namespace", "hostIPC": "each pod has its own IPC namespace",
       "subPath": "whole volumes only", "envFrom": "only env entries are resolved here"}


def _unknown(keys: Mapping[str, Any], allowed: set[str], pod_name: str, path: str) -> None:
    for key in keys:
        if key not in allowed and keys[key] not in (None, False, [], {}):
            raise refuse(pod_name, f"{path}.{key}", WHY.get(key, "the podman runtime does not do it"))


def cpu_cores(quantity: Any, where: str) -> float:
    text = str(quantity)
    try:
        return float(text[:-1]) / 1000 if text.endswith("m") else float(text)
    except ValueError:
        raise SpecError(where, f"{text!r} is not a CPU quantity") from None


def ray_node(pod: Mapping[str, Any], pod_name: str) -> tuple[int, Mapping[str, Any]]:
    # The autoscaler sidecar of an autoscaling head is not started: local mode runs the same
    # autoscaler in its own process (local/autoscaling.py).
    containers = [c for c in pod["spec"].get("containers", []) if c.get("name") != A.CONTAINER]
    for i, container in enumerate(containers):
        if container.get("name") != names.CONTAINER:
            raise refuse(pod_name, f"spec.containers[{i}]",
                         f"container {container.get('name')!r}: only {names.CONTAINER} runs locally")
    if len(containers) != 1:
        raise refuse(pod_name, "spec.containers", f"expected one {names.CONTAINER} container")
    return 0, containers[0]


def _security(pod: Mapping[str, Any], container: Mapping[str, Any], pod_name: str) -> tuple[list[str], int, int]:
    pod_sc = pod["spec"].get("securityContext") or {}
    own = container.get("securityContext") or {}
    _unknown(pod_sc, SECURITY_KEYS, pod_name, "spec.securityContext")
    _unknown(own, SECURITY_KEYS, pod_name, "spec.containers[0].securityContext")
    merged = {**pod_sc, **own}
    where = {key: ("spec.containers[0].securityContext" if key in own else "spec.securityContext")
             for key in merged}
    argv: list[str] = []
    uid, gid = merged.get("runAsUser"), merged.get("runAsGroup")
    if uid is None:
        raise refuse(pod_name, "spec.securityContext.runAsUser",
                     "unset: the image's user is not looked up, so runAsNonRoot and volume owners cannot be set")
    if merged.get("runAsNonRoot") and int(uid) == 0:
        raise refuse(pod_name, f"{where['runAsNonRoot']}.runAsNonRoot", "runAsUser is 0")
    # Without runAsGroup the image's group for that user applies, as under a kubelet.
    argv.append(f"--user={int(uid)}" + (f":{int(gid)}" if gid is not None else ""))
    groups = list(merged.get("supplementalGroups") or [])
    if merged.get("fsGroup") is not None:
        groups.append(merged["fsGroup"])
    argv += [f"--group-add={int(g)}" for g in dict.fromkeys(groups)]
    if merged.get("privileged"):
        raise refuse(pod_name, f"{where['privileged']}.privileged", "no privileged containers locally")
    if merged.get("allowPrivilegeEscalation") is False:
        argv.append("--security-opt=no-new-privileges")
    seccomp = (merged.get("seccompProfile") or {}).get("type", "Unconfined")
    if seccomp == "Unconfined":
        argv.append("--security-opt=seccomp=unconfined")
    elif seccomp != "RuntimeDefault":  # podman's default profile is the runtime default
        raise refuse(pod_name, f"{where['seccompProfile']}.seccompProfile.type",
                     f"{seccomp}: only RuntimeDefault and Unconfined exist here")
    capabilities = own.get("capabilities") or {}
    _unknown(capabilities, {"add", "drop"}, pod_name, "spec.containers[0].securityContext.capabilities")
    argv += [f"--cap-drop={c.upper()}" for c in capabilities.get("drop") or []]
    argv += [f"--cap-add={c.upper()}" for c in capabilities.get("add") or []]
    if merged.get("readOnlyRootFilesystem"):
        argv += ["--read-only", "--read-only-tmpfs=false"]  # no writable /tmp a pod would not have
    owner_gid = merged.get("fsGroup", gid)  # who owns the pod's volumes, as a kubelet sets them
    return argv, int(uid), int(owner_gid) if owner_gid is not None else 0


def _resources(container: Mapping[str, Any], pod_name: str) -> tuple[list[str], int]:
    resources = container.get("resources") or {}
    path = "spec.containers[0].resources"
    _unknown(resources, {"limits", "requests"}, pod_name, path)
    limits, requests = resources.get("limits") or {}, resources.get("requests") or {}
    for kind, values in (("limits", limits), ("requests", requests)):
        for name in values:
            if name not in ("cpu", "memory"):
                raise refuse(pod_name, f"{path}.{kind}.{name}", "only cpu and memory are given to a container here")
    if "memory" not in limits:
        raise refuse(pod_name, f"{path}.limits.memory", "a pod without a memory limit is not sized here")
    limit = parse_bytes(limits["memory"], f"{path}.limits.memory")
    argv = [f"--memory={limit}", f"--memory-swap={limit}"]  # no swap, as a kubelet runs it
    if "cpu" in limits:
        argv.append(f"--cpus={cpu_cores(limits['cpu'], f'{path}.limits.cpu'):g}")
    if "cpu" in requests:  # the kubelet's shares: 1024 per core, at least 2
        argv.append(f"--cpu-shares={max(2, int(cpu_cores(requests['cpu'], f'{path}.requests.cpu') * 1024))}")
    return argv, limit


def _volumes(pod: Mapping[str, Any], container: Mapping[str, Any], pod_name: str, node: LocalNode,
             volume_root: Path, secret: tuple[str, tuple[str, ...]], limit: int) -> tuple[list[str], list[HostDir]]:
    volumes = {v["name"]: (i, v) for i, v in enumerate(pod["spec"].get("volumes") or [])
               if v["name"] not in SIDECAR_VOLUMES}  # the autoscaler sidecar's, which is not started
    mounts: dict[str, list[tuple[int, Mapping[str, Any]]]] = {}
    for j, mount in enumerate(container.get("volumeMounts") or []):
        _unknown(mount, {"name", "mountPath", "readOnly"}, pod_name, f"spec.containers[0].volumeMounts[{j}]")
        if mount["name"] not in volumes:
            raise refuse(pod_name, f"spec.containers[0].volumeMounts[{j}].name", f"no volume {mount['name']!r}")
        mounts.setdefault(mount["name"], []).append((j, mount))
    argv: list[str] = []
    dirs: list[HostDir] = []
    for name, (i, volume) in volumes.items():
        path = f"spec.volumes[{i}]"
        kinds = [k for k in volume if k != "name"]
        if kinds not in (["emptyDir"], ["secret"]):
            raise refuse(pod_name, f"{path}.{kinds[0] if kinds else 'name'}",
                         "only emptyDir and the cluster's Secret exist locally")
        used = mounts.get(name, [])
        targets = tuple(str(m["mountPath"]) for _, m in used)
        at = tuple((str(m["mountPath"]), bool(m.get("readOnly"))) for _, m in used)
        if "secret" in volume:
            source = volume["secret"] or {}
            _unknown(source, {"secretName", "defaultMode", "optional"}, pod_name, f"{path}.secret")
            if source.get("secretName") != secret[0]:
                raise refuse(pod_name, f"{path}.secret.secretName",
                             f"{source.get('secretName')!r}: only the cluster's Secret {secret[0]!r} exists locally")
            dirs.append(HostDir(volume_root / name, tuple((t, True) for t in targets), secret[1],
                                int(source.get("defaultMode", 0o644)), secret=True))  # read-only, as a kubelet mounts it
            continue
        source = volume["emptyDir"] or {}
        _unknown(source, {"medium", "sizeLimit"}, pod_name, f"{path}.emptyDir")
        medium = source.get("medium") or ""
        if medium not in ("", "Memory"):
            raise refuse(pod_name, f"{path}.emptyDir.medium", f"{medium!r}")
        if medium == "Memory":  # tmpfs, counted in the container's memory as in a pod
            size = parse_bytes(source["sizeLimit"], f"{path}.emptyDir.sizeLimit") if source.get("sizeLimit") else limit
            for target, ro in at:
                if target == names.SHM_PATH:
                    argv.append(f"--shm-size={size}")
                else:
                    argv.append(f"--mount=type=tmpfs,destination={target},tmpfs-size={size},tmpfs-mode=1777"
                                + (",ro=true" if ro else ""))
            continue
        if source.get("sizeLimit"):
            raise refuse(pod_name, f"{path}.emptyDir.sizeLimit", "a disk emptyDir's size is not enforced locally")
        if names.SHM_PATH in targets:
            raise refuse(pod_name, f"{path}.emptyDir.medium", f"{names.SHM_PATH} needs medium: Memory")
        if name == names.VOLUME_RAY_TEMP:
            # Ray's temp dir is also mounted at its host path, which the node is told to use:
            # a driver on this machine reaches the raylet's sockets, named by that path.
            host = Path(node.env[S.RAY_TEMP_DIR.env])
            dirs.append(HostDir(host, (*at, (str(host), False))))
        else:
            dirs.append(HostDir(volume_root / name, at))
    for d in dirs:
        argv += [f"--volume={d.host}:{target}" + (":ro" if ro else "") for target, ro in d.mounts]
    return argv, dirs


def _env(container: Mapping[str, Any], node: LocalNode, pod_name: str) -> list[str]:
    pod_values = {}
    for i, entry in enumerate(container.get("env") or []):
        if entry["name"] not in node.env:  # local_node resolves what it can (pods.py)
            raise refuse(pod_name, f"spec.containers[0].env[{i}] ({entry['name']})",
                         f"its valueFrom {sorted((entry.get('valueFrom') or {}))} is not resolved locally")
        if "value" in entry:
            pod_values[entry["name"]] = str(entry["value"])
    env = dict(node.env)
    for name in POD_PATH_ENV:  # the Secret is mounted where the pod mounts it
        if name in pod_values:
            env[name] = pod_values[name]
    return [f"--env={key}={value}" for key, value in env.items()]


def _ports(container: Mapping[str, Any], pod_name: str) -> None:
    for i, port in enumerate(container.get("ports") or []):
        _unknown(port, {"name", "containerPort", "protocol"}, pod_name, f"spec.containers[0].ports[{i}]")
        if port.get("name") not in REMAPPED_PORTS:
            raise refuse(pod_name, f"spec.containers[0].ports[{i}]",
                         f"port {port.get('name')!r} ({port.get('containerPort')}) cannot be moved to a free"
                         " loopback port")


def cgroup_parent(run_id: str) -> str:
    """The run's own cgroup parent: its containers, and podman's conmon monitors (which podman
    puts in `<parent>/conmon` and never removes), go there, and the run removes it at the end."""
    return f"/{CGROUP_PARENT_PREFIX}{run_id}"


def plan_container(pod: Mapping[str, Any], node: LocalNode, container_name: str, run_id: str,
                   volume_root: Path, secret: tuple[str, tuple[str, ...]], owner_pid: int) -> ContainerPlan:
    """`secret`: the cluster's Secret name and its keys (files in the local secrets dir)."""
    pod_name = node.name
    spec = pod["spec"]
    _unknown(spec, POD_KEYS, pod_name, "spec")
    _, container = ray_node(pod, pod_name)
    _unknown(container, CONTAINER_KEYS, pod_name, "spec.containers[0]")
    if container.get("imagePullPolicy") == "Always":
        raise refuse(pod_name, "spec.containers[0].imagePullPolicy", "Always: nothing is pulled here")
    security, uid, gid = _security(pod, container, pod_name)
    resources, limit = _resources(container, pod_name)
    volumes, dirs = _volumes(pod, container, pod_name, node, volume_root, secret, limit)
    _ports(container, pod_name)
    env = _env(container, node, pod_name)
    metadata = pod.get("metadata") or {}
    labels = {**(metadata.get("labels") or {}), LABEL_RUN: run_id, LABEL_OWNER_PID: str(owner_pid)}
    argv = ["podman", "run", f"--name={container_name}", "--pull=never", "--network=host",
            f"--cgroup-parent={cgroup_parent(run_id)}",
            "--pids-limit=-1",  # a pod has no PID limit unless the kubelet sets one
            *security, *resources, *volumes, *env]
    argv += [f"--label={k}={v}" for k, v in labels.items()]
    argv += [f"--annotation={k}={v}" for k, v in (metadata.get("annotations") or {}).items()]
    if spec.get("terminationGracePeriodSeconds") is not None:
        argv.append(f"--stop-timeout={int(spec['terminationGracePeriodSeconds'])}")
    if container.get("workingDir"):
        argv.append(f"--workdir={container['workingDir']}")
    if container.get("command"):  # as a kubelet: the command replaces ENTRYPOINT, args replace CMD
        argv.append("--entrypoint=" + json.dumps([str(c) for c in container["command"]]))
    argv.append(str(container["image"]))
    argv += [str(a) for a in container.get("args") or []]
    notes = [f"spec.{key}" for key in SCHEDULING if spec.get(key)]
    return ContainerPlan(argv, str(container["image"]), uid, gid, dirs, notes)

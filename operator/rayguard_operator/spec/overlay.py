"""The pod template overlay: checked once when the spec is parsed, merged by the builder.

`template` is pod-template shaped, `{metadata: {labels, annotations}, spec: {...}}`.
Merge rules:
- labels and annotations are added; rayguard's own keys (`rayguard.dev/...`) are refused;
- `spec.containers` merge BY NAME: `ray-node` merges into rayguard's container (its env,
  volumeMounts and ports are appended, maps merged, other fields replaced); any other name is
  a sidecar, appended;
- `spec.volumes` and `spec.initContainers` are appended;
- added containers (sidecars, init containers) start from rayguard's restricted container
  securityContext, their own settings merged over it;
- other maps (nodeSelector, securityContext, affinity, ...) merge key by key, overlay winning;
  other values (tolerations, priorityClassName, serviceAccountName, ...) are set by the overlay;
- a null value sets nothing: `securityContext: null` (or `{}`, or a null key inside it) never
  removes rayguard's defaults from the pod, `ray-node` or an added container.
Refused, with the field's path: rayguard's volumes and labels; on `ray-node`, the env names it
sets, `envFrom` (its keys are unknown when the spec is checked), `command` and `args` (the
container runs `rayguard-node run`) and `resources` (the plan is sized from the spec's); in
every container, a mount at or under a path rayguard mounts (compared after normalising, so
`/dev//shm/.` is `/dev/shm`), except that a container other than `ray-node` may mount
rayguard's own volume at its own path read-only (a log shipper reading /tmp/ray).
`check_pod_security` then checks rayguard's pod with the overlay merged against the operator's
Pod Security Standard level (spec/pod_security.py).
"""

from __future__ import annotations

import copy
import posixpath
import re
from typing import Any, Mapping

from rayguard_operator import names
from rayguard_operator.errors import SpecError
from rayguard_operator.settings import ENV_POD_SECURITY
from rayguard_operator.spec.pod_security import PRIVILEGED, check_pod

APPENDED_POD_LISTS = ("volumes", "initContainers")
APPENDED_CONTAINER_LISTS = ("env", "volumeMounts", "ports")
# Each path rayguard mounts in ray-node, and the volume it mounts there.
VOLUME_AT = {names.SHM_PATH: names.VOLUME_SHM, names.SECRETS_DIR: names.VOLUME_SECRETS,
             names.RAY_TEMP_DIR: names.VOLUME_RAY_TEMP}
_RUNS_RAYGUARD = "the ray-node container runs `rayguard-node run`, which rayguard starts; remove it"
RAY_NODE_REFUSED = {
    "resources": "set resources in the group's resources field; the memory plan is sized from it",
    "command": _RUNS_RAYGUARD,
    "args": _RUNS_RAYGUARD,
    "envFrom": "not on ray-node: its keys are unknown when the spec is checked and could override"
               " the RAYGUARD_* env rayguard sets; use env, or envFrom on a sidecar",
}


def container_security() -> dict[str, Any]:
    """The restricted Pod Security Standard, for ray-node and for any added container."""
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def pod_security_context() -> dict[str, Any]:
    """The pod's securityContext: the node image's non-root user, RuntimeDefault seccomp."""
    return {
        "runAsNonRoot": True,
        "runAsUser": names.RUN_AS_ID,
        "runAsGroup": names.RUN_AS_ID,
        "fsGroup": names.RUN_AS_ID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _mapping(value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise SpecError(path, f"expected an object, found {type(value).__name__}")
    return value


def _list_of_named(value: Any, path: str) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        raise SpecError(path, f"expected a list, found {type(value).__name__}")
    seen: set[str] = set()
    for i, item in enumerate(value):
        item_path = f"{path}[{i}]"
        _mapping(item, item_path)
        name = item.get("name")
        if not isinstance(name, str) or not name:
            raise SpecError(f"{item_path}.name", "a name is required")
        if name in seen:
            raise SpecError(f"{item_path}.name", f"duplicate name {name!r}")
        seen.add(name)
    return value


def _string_map(value: Any, path: str) -> None:
    for key, item in _mapping(value, path).items():
        if not isinstance(item, str):
            raise SpecError(f"{path}.{key}", "must be a string")
        if key.startswith(names.RESERVED_PREFIX):
            raise SpecError(f"{path}.{key}", f"keys under {names.RESERVED_PREFIX} belong to rayguard")


def normalised(mount_path: Any) -> str:
    """`/dev//shm/.`, `dev/shm/` and `/dev/shm` are all `/dev/shm`."""
    return posixpath.normpath("/" + str(mount_path or "").lstrip("/"))


def reserved_mount(mount_path: Any) -> str | None:
    """The path rayguard mounts that `mount_path` is or lies under, after normalising."""
    where = normalised(mount_path)
    return next((r for r in VOLUME_AT if where == r or where.startswith(r + "/")), None)


def _check_mounts(container: dict[str, Any], path: str, ray_node: bool) -> None:
    mounts = container.get("volumeMounts", [])
    if not isinstance(mounts, list):
        raise SpecError(f"{path}.volumeMounts", "expected a list")
    for i, mount in enumerate(mounts):
        mount = _mapping(mount, f"{path}.volumeMounts[{i}]")
        reserved = reserved_mount(mount.get("mountPath"))
        if reserved is None:
            continue
        own_read_only = (normalised(mount.get("mountPath")) == reserved and mount.get("name") == VOLUME_AT[reserved]
                         and mount.get("readOnly") is True
                         and not mount.get("subPath") and not mount.get("subPathExpr"))
        if own_read_only and not ray_node:
            continue
        rule = "" if ray_node else f"; other containers may mount only {VOLUME_AT[reserved]!r} there, read-only"
        raise SpecError(f"{path}.volumeMounts[{i}].mountPath",
                        f"{mount.get('mountPath')!r} is or lies under {reserved}, rayguard's mount{rule}")


def _check_ray_node(container: dict[str, Any], path: str) -> None:
    for key, why in RAY_NODE_REFUSED.items():
        if key in container:
            raise SpecError(f"{path}.{key}", why)
    for i, env in enumerate(_list_of_named(container.get("env", []), f"{path}.env")):
        if env["name"] in names.RESERVED_ENV:
            raise SpecError(f"{path}.env[{i}].name", f"{env['name']} is set by rayguard")
    if not isinstance(container.get("ports", []), list):
        raise SpecError(f"{path}.ports", "expected a list")


def check_overlay(template: Any, path: str) -> dict[str, Any]:
    """A checked deep copy of a group's template overlay (empty when absent)."""
    if template is None:
        return {}
    template = copy.deepcopy(_mapping(template, path))
    for key in template:
        if key not in ("metadata", "spec"):
            raise SpecError(f"{path}.{key}", "unknown field; a template has metadata and spec")
    metadata = _mapping(template.get("metadata", {}), f"{path}.metadata")
    for key in metadata:
        if key not in ("labels", "annotations"):
            raise SpecError(f"{path}.metadata.{key}", "only labels and annotations can be set")
        _string_map(metadata[key], f"{path}.metadata.{key}")
    spec = _mapping(template.get("spec", {}), f"{path}.spec")
    for key in ("containers", "initContainers"):
        for i, container in enumerate(_list_of_named(spec.get(key, []), f"{path}.spec.{key}")):
            ray_node = key == "containers" and container["name"] == names.CONTAINER
            if ray_node:
                _check_ray_node(container, f"{path}.spec.{key}[{i}]")
            _check_mounts(container, f"{path}.spec.{key}[{i}]", ray_node)
    for i, volume in enumerate(_list_of_named(spec.get("volumes", []), f"{path}.spec.volumes")):
        if volume["name"] in names.RESERVED_VOLUMES:
            raise SpecError(f"{path}.spec.volumes[{i}].name", f"volume {volume['name']!r} is rayguard's")
    return template


def _deep_merge(base: Any, over: Any) -> Any:
    """Maps merge recursively with `over` winning; anything else is replaced by `over`.
    A null in `over` sets nothing, so it cannot remove one of rayguard's values."""
    if over is None:
        return copy.deepcopy(base)
    if isinstance(base, dict) and isinstance(over, dict):
        merged = dict(base)
        for key, value in over.items():
            if value is not None:
                merged[key] = _deep_merge(base.get(key), value) if key in base else copy.deepcopy(value)
        return merged
    return copy.deepcopy(over)


def _merge_container(ours: dict[str, Any], theirs: dict[str, Any]) -> dict[str, Any]:
    merged = dict(ours)
    for key, value in theirs.items():
        if value is None or key == "name":
            continue
        if key in APPENDED_CONTAINER_LISTS:
            merged[key] = list(ours.get(key, [])) + copy.deepcopy(value)
        else:
            merged[key] = _deep_merge(ours[key], value) if key in ours else copy.deepcopy(value)
    return merged


def _added_container(container: dict[str, Any], security: dict[str, Any] | None) -> dict[str, Any]:
    """A sidecar or init container: the restricted securityContext, its own settings over it."""
    added = copy.deepcopy(container)
    if security:
        added["securityContext"] = _deep_merge(security, container.get("securityContext"))
    return added


def merge_overlay(pod: dict[str, Any], template: Mapping[str, Any],
                  container_security: dict[str, Any] | None = None) -> dict[str, Any]:
    """`pod` with a checked overlay merged in. Neither argument is modified.
    `container_security` is the default securityContext of added containers."""
    pod = copy.deepcopy(pod)
    metadata = template.get("metadata", {})
    for key in ("labels", "annotations"):
        if metadata.get(key):
            pod["metadata"][key] = {**metadata[key], **pod["metadata"].get(key, {})}
    spec = pod["spec"]
    for key, value in template.get("spec", {}).items():
        if value is None:
            continue
        if key == "containers":
            for container in value:
                index = next((i for i, c in enumerate(spec["containers"]) if c["name"] == container["name"]), None)
                if index is None:
                    spec["containers"].append(_added_container(container, container_security))
                else:
                    spec["containers"][index] = _merge_container(spec["containers"][index], container)
        elif key == "initContainers":
            spec[key] = list(spec.get(key, [])) + [_added_container(c, container_security) for c in value]
        elif key in APPENDED_POD_LISTS:
            spec[key] = list(spec.get(key, [])) + copy.deepcopy(value)
        else:
            spec[key] = _deep_merge(spec[key], value) if key in spec else copy.deepcopy(value)
    return pod


# --- the Pod Security Standard of the merged pod -------------------------------------------

def policy_base() -> dict[str, Any]:
    """What a Pod Security Standard reads of rayguard's own pod before the overlay: the
    securityContexts and the kinds of its volumes. manifests/pod.py builds its pods from the
    same defaults, and the rest of its pod (env, ports without hostPort, probes without host)
    passes every level; tests/unit/operator/spec/test_pod_security.py holds the two to the
    same verdicts."""
    return {
        "metadata": {"labels": {}, "annotations": {}},
        "spec": {
            "containers": [{"name": names.CONTAINER, "securityContext": container_security()}],
            "volumes": [{"name": names.VOLUME_SHM, "emptyDir": {"medium": "Memory"}},
                        {"name": names.VOLUME_SECRETS, "secret": {}},
                        {"name": names.VOLUME_RAY_TEMP, "emptyDir": {}}],
            "securityContext": pod_security_context(),
        },
    }


_IN_LIST = re.compile(r"^spec\.(containers|initContainers|ephemeralContainers|volumes)\[(\d+)\](.*)$")


def _overlay_path(field: str, merged: Mapping[str, Any], template: Mapping[str, Any], path: str) -> str:
    """The overlay's field behind a field of the merged pod: list items are found by name."""
    match = _IN_LIST.match(field)
    if not match:
        return f"{path}.{field}"
    key, index, rest = match.group(1), int(match.group(2)), match.group(3)
    name = merged["spec"][key][index].get("name")
    theirs = template.get("spec", {}).get(key) or []
    j = next((j for j, item in enumerate(theirs) if isinstance(item, dict) and item.get("name") == name), None)
    return f"{path}.spec" if j is None else f"{path}.spec.{key}[{j}]{rest}"


def check_pod_security(template: Mapping[str, Any], path: str, level: str) -> None:
    """Refuse an overlay that makes the group's pods break the Pod Security Standard `level`:
    rayguard's pod with the overlay merged (as the builder merges it) is checked, and the first
    violation is a SpecError naming the overlay's field."""
    if level == PRIVILEGED or not template:
        return
    merged = merge_overlay(policy_base(), template, container_security())
    for violation in check_pod(merged, level):
        raise SpecError(_overlay_path(violation.path, merged, template, path),
                        f"the pod would break the {level} Pod Security Standard ({violation.rule}:"
                        f" {violation.detail}); the operator enforces {level} ({ENV_POD_SECURITY})")

"""The pod template overlay: checked once when the spec is parsed, merged by the builder.

`template` is pod-template shaped, `{metadata: {labels, annotations}, spec: {...}}`.
Merge rules:
- labels and annotations are added; rayguard's own keys (`rayguard.dev/...`) are refused;
- `spec.containers` merge BY NAME: `ray-node` merges into rayguard's container (its env,
  volumeMounts, ports and envFrom are appended, maps merged, other fields replaced); any other
  name is a sidecar, appended;
- `spec.volumes` and `spec.initContainers` are appended;
- added containers (sidecars, init containers) get the restricted securityContext of
  `ray-node` under their own settings, so the pod still passes the restricted standard;
- other maps (nodeSelector, securityContext, affinity, ...) merge key by key, overlay winning;
  other values (tolerations, priorityClassName, ...) are set by the overlay.
What would break rayguard's invariants is refused with the field's path: its volumes, mount
paths and env names, and `resources` on `ray-node` (the plan is sized from the spec's).
"""

from __future__ import annotations

import copy
from typing import Any

from rayguard_operator import names
from rayguard_operator.errors import SpecError

APPENDED_POD_LISTS = ("volumes", "initContainers")
APPENDED_CONTAINER_LISTS = ("env", "volumeMounts", "ports", "envFrom")


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


def _check_ray_node(container: dict[str, Any], path: str) -> None:
    if "resources" in container:
        raise SpecError(f"{path}.resources",
                        "set resources in the group's resources field; the memory plan is sized from it")
    for i, env in enumerate(_list_of_named(container.get("env", []), f"{path}.env")):
        if env["name"] in names.RESERVED_ENV:
            raise SpecError(f"{path}.env[{i}].name", f"{env['name']} is set by rayguard")
    mounts = container.get("volumeMounts", [])
    if not isinstance(mounts, list):
        raise SpecError(f"{path}.volumeMounts", "expected a list")
    for i, mount in enumerate(mounts):
        _mapping(mount, f"{path}.volumeMounts[{i}]")
        if str(mount.get("mountPath", "")).rstrip("/") in names.RESERVED_MOUNT_PATHS:
            raise SpecError(f"{path}.volumeMounts[{i}].mountPath", f"{mount.get('mountPath')} is rayguard's")
    for key in ("ports", "envFrom"):
        if not isinstance(container.get(key, []), list):
            raise SpecError(f"{path}.{key}", "expected a list")


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
        if key in spec:
            _list_of_named(spec[key], f"{path}.spec.{key}")
    for i, container in enumerate(spec.get("containers", [])):
        if container["name"] == names.CONTAINER:
            _check_ray_node(container, f"{path}.spec.containers[{i}]")
    for i, volume in enumerate(_list_of_named(spec.get("volumes", []), f"{path}.spec.volumes")):
        if volume["name"] in names.RESERVED_VOLUMES:
            raise SpecError(f"{path}.spec.volumes[{i}].name", f"volume {volume['name']!r} is rayguard's")
    return template


def _deep_merge(base: Any, over: Any) -> Any:
    """Maps merge recursively with `over` winning; anything else is replaced by `over`."""
    if isinstance(base, dict) and isinstance(over, dict):
        merged = dict(base)
        for key, value in over.items():
            merged[key] = _deep_merge(base.get(key), value) if key in base else copy.deepcopy(value)
        return merged
    return copy.deepcopy(over)


def _merge_container(ours: dict[str, Any], theirs: dict[str, Any]) -> dict[str, Any]:
    merged = dict(ours)
    for key, value in theirs.items():
        if key in APPENDED_CONTAINER_LISTS:
            merged[key] = list(ours.get(key, [])) + copy.deepcopy(value)
        elif key != "name":
            merged[key] = _deep_merge(ours[key], value) if key in ours else copy.deepcopy(value)
    return merged


def _added_container(container: dict[str, Any], security: dict[str, Any] | None) -> dict[str, Any]:
    """A sidecar or init container: the restricted securityContext unless it sets its own."""
    added = copy.deepcopy(container)
    if security:
        added["securityContext"] = _deep_merge(security, container.get("securityContext") or {})
    return added


def merge_overlay(pod: dict[str, Any], template: dict[str, Any],
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

"""spec.autoscaling, spec.suspend and workerGroups[].workersToDelete (README, "Autoscaling").

With `autoscaling.enabled`, a sidecar in the head pod runs Ray's own autoscaler; it owns each
group's `replicas` (between minReplicas and maxReplicas) and names the pods to remove in
`workersToDelete`, which the operator deletes and then clears. Defaults are the CRD's (a unit
test keeps them in step). Every error names its field path.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from rayguard_node.contract.autoscaler import CONTAINER, DEFAULT_LIMITS, UPSCALING_SPEED, VOLUME
from rayguard_node.sizing.quantity import parse_bytes

from rayguard_operator.errors import SpecError
from rayguard_operator.spec.fields import known_object, one_of
from rayguard_operator.spec.readers import _bytes, _cpus, _int, _obj

PATH = "spec.autoscaling"
FIELDS = {"enabled", "idleTimeoutSeconds", "upscalingMode", "image", "resources"}
RESOURCES_FIELDS = {"limits", "requests"}
UPSCALING_MODES = ("Default", "Aggressive", "Conservative")
IDLE_TIMEOUT_DEFAULT_S = 60
MAX_WORKERS_TO_DELETE = 1000
# The sidecar's own API token: a projected volume mounted in the sidecar only, where the
# kubernetes client's in-cluster config looks, so that ray-node (which runs user code) has none.
TOKEN_VOLUME = "rayguard-autoscaler-token"
TOKEN_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
# What a head template overlay may not set while autoscaling is on: the sidecar is rayguard's,
# and the pod's service account is what the autoscaler's Role is bound to.
HEAD_OVERLAY_REFUSED = ("serviceAccountName", "serviceAccount", "automountServiceAccountToken")
# A pod name: a DNS subdomain.
_POD_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


@dataclass(frozen=True)
class AutoscalingSpec:
    """Off by default. `image` None: the cluster's node image. The sidecar's limits equal its
    requests unless the spec says otherwise; `memory_limit_bytes` is its memory limit."""

    enabled: bool = False
    idle_timeout_s: int = IDLE_TIMEOUT_DEFAULT_S
    upscaling_mode: str = "Default"
    image: str | None = None
    limits: Mapping[str, str] = dataclasses.field(default_factory=lambda: dict(DEFAULT_LIMITS))
    requests: Mapping[str, str] = dataclasses.field(default_factory=lambda: dict(DEFAULT_LIMITS))
    memory_limit_bytes: int = parse_bytes(DEFAULT_LIMITS["memory"], "DEFAULT_LIMITS.memory")

    @property
    def upscaling_speed(self) -> float:
        return UPSCALING_SPEED[self.upscaling_mode]


def _quantities(data: Any, path: str) -> dict[str, str]:
    """A limits or requests map; cpu and memory must be quantities Kubernetes takes."""
    data = _obj(data, path)
    if "memory" in data:
        _bytes(data["memory"], f"{path}.memory")
    if "cpu" in data:
        _cpus(data["cpu"], f"{path}.cpu")
    return {str(k): str(v) for k, v in data.items()}


def _resources(data: Any, path: str) -> tuple[dict[str, str], dict[str, str], int]:
    """(limits, requests, memory limit in bytes); requests default to the limits."""
    if data is None:
        return dict(DEFAULT_LIMITS), dict(DEFAULT_LIMITS), AutoscalingSpec.memory_limit_bytes
    known_object(data, path, RESOURCES_FIELDS)
    limits = _quantities(data.get("limits"), f"{path}.limits")
    if "memory" not in limits:
        raise SpecError(f"{path}.limits.memory", "is required: the autoscaler's own memory is planned too")
    memory = _bytes(data["limits"]["memory"], f"{path}.limits.memory")
    if memory == 0:
        raise SpecError(f"{path}.limits.memory", "must be above 0")
    if data.get("requests") is None:
        return limits, dict(limits), memory
    requests = _quantities(data["requests"], f"{path}.requests")
    if "memory" in requests and _bytes(data["requests"]["memory"], f"{path}.requests.memory") > memory:
        raise SpecError(f"{path}.requests.memory", "must not exceed limits.memory")
    return limits, requests, memory


def parse_autoscaling(data: Any, path: str = PATH) -> AutoscalingSpec:
    """spec.autoscaling, or the defaults (off) when absent."""
    if data is None:
        return AutoscalingSpec()
    known_object(data, path, FIELDS)
    enabled = data.get("enabled", False)
    if enabled is None:
        enabled = False
    if not isinstance(enabled, bool):
        raise SpecError(f"{path}.enabled", f"expected true or false, found {enabled!r}")
    idle = _int(data, "idleTimeoutSeconds", path, IDLE_TIMEOUT_DEFAULT_S)
    mode = data.get("upscalingMode")
    mode = "Default" if mode is None else one_of(mode, f"{path}.upscalingMode", UPSCALING_MODES)
    image = data.get("image")
    if image is not None and (not isinstance(image, str) or not image):
        raise SpecError(f"{path}.image", "expected an image reference")
    limits, requests, memory = _resources(data.get("resources"), f"{path}.resources")
    return AutoscalingSpec(enabled=enabled, idle_timeout_s=idle, upscaling_mode=mode, image=image,  # type: ignore[arg-type]
                           limits=limits, requests=requests, memory_limit_bytes=memory)


def parse_suspend(spec: Mapping[str, Any]) -> bool:
    value = spec.get("suspend")
    if value is None:
        return False
    if not isinstance(value, bool):
        raise SpecError("spec.suspend", f"expected true or false, found {value!r}")
    return value


def parse_workers_to_delete(data: Any, path: str) -> tuple[str, ...]:
    """A group's workersToDelete: pod names, each once, at most MAX_WORKERS_TO_DELETE."""
    if data is None:
        return ()
    if not isinstance(data, list):
        raise SpecError(path, f"expected a list of pod names, found {type(data).__name__}")
    if len(data) > MAX_WORKERS_TO_DELETE:
        raise SpecError(path, f"must have at most {MAX_WORKERS_TO_DELETE} items (found {len(data)})")
    seen: set[str] = set()
    for i, name in enumerate(data):
        if not isinstance(name, str) or len(name) > 253 or not _POD_NAME.match(name):
            raise SpecError(f"{path}[{i}]", f"expected a pod name, found {name!r}")
        if name in seen:
            raise SpecError(f"{path}[{i}]", f"duplicate pod name {name!r}")
        seen.add(name)
    return tuple(data)


def check_autoscaled(autoscaling: AutoscalingSpec, head_template: Mapping[str, Any], head_path: str,
                     groups: Sequence[Any]) -> None:
    """What autoscaling needs of the rest of the spec: each worker group's CPU count known (the
    autoscaler is told it, and a count from whatever node a pod lands on is no count), and a
    head overlay that leaves the sidecar and the pod's service account alone."""
    if not autoscaling.enabled:
        return
    for group in groups:
        if group.num_cpus is None and group.resources.cpu_limit is None:
            raise SpecError(f"{group.path}.resources.limits.cpu", f"is required with {PATH}.enabled (or set"
                            " numCpus): the autoscaler must know how many CPUs each node of the group has")
    spec = head_template.get("spec") or {}
    for key in HEAD_OVERLAY_REFUSED:
        if spec.get(key) is not None:
            raise SpecError(f"{head_path}.template.spec.{key}", f"is rayguard's while {PATH}.enabled: the"
                            " autoscaler's Role is bound to the pod's service account")
    for i, container in enumerate(spec.get("containers") or []):
        if container.get("name") == CONTAINER:
            raise SpecError(f"{head_path}.template.spec.containers[{i}].name", f"{CONTAINER!r} is the autoscaler"
                            f" sidecar's name while {PATH}.enabled; choose another")
    for i, volume in enumerate(spec.get("volumes") or []):
        if volume.get("name") in (VOLUME, TOKEN_VOLUME):
            raise SpecError(f"{head_path}.template.spec.volumes[{i}].name", f"volume {volume['name']!r} is"
                            f" rayguard's while {PATH}.enabled")

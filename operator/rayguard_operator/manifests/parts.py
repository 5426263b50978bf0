"""A pod template split into the parts a user changes, each with a short digest.

The template hash says only that a pod is out of date. When the reconciler leaves an
outdated pod in place (the head, under upgradeStrategy RollingUpdate without GCS fault
tolerance), it must say what changed. So every pod also carries the digest of each part
(`rayguard.dev/template-parts`, not itself hashed), and comparing those with the desired
template's names the parts. The parts cover the whole template: whatever is not image,
resources or a known setting is `other` (the template overlay, labels, or what a newer
operator builds), so a changed hash always shows at least one changed part.
"""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any, Mapping

from rayguard_node.contract import autoscaler as A
from rayguard_node.contract import settings as S

from rayguard_operator import names
from rayguard_operator.spec.autoscaling import TOKEN_VOLUME

IMAGE, RESOURCES, MEMORY, RAY_START_PARAMS, NUM_CPUS, QUOTA, PROFILING, AUTOSCALING, OTHER = (
    "image", "resources", "memory", "rayStartParams", "numCpus", "memory.quota", "memory.profiling",
    "autoscaling", "other")
PARTS = (IMAGE, RESOURCES, MEMORY, RAY_START_PARAMS, NUM_CPUS, QUOTA, PROFILING, AUTOSCALING, OTHER)
# How a part is named to a user when it changed.
SHOWN = {OTHER: "other pod settings (the template overlay, or what a newer operator builds)"}

_ENV_PARTS: dict[str, str] = {
    **{s.env: MEMORY for s in (S.OBJECT_STORE_BYTES, S.OBJECT_STORE_FRACTION, S.OBJECT_STORE_MAX_BYTES,
                                S.REDIS_FRACTION, S.REDIS_MAX_BYTES, S.HEAP_FRACTION, S.USAGE_THRESHOLD,
                                S.MONITOR_REFRESH_MS, S.FLUSH_WHEN_AT_LEAST_BYTES, S.FLUSH_PERIOD_SECS,
                                S.FLUSH_NUM_ENTRIES_EACH_TIME)},
    **{s.env: QUOTA for s in (S.QUOTA_ENFORCEMENT, S.QUOTA_TOLERANCE, S.QUOTA_GRACE_SECONDS)},
    **{s.env: PROFILING for s in S.PROFILE_SETTINGS},
    S.RAY_START_PARAMS.env: RAY_START_PARAMS,
    S.NUM_CPUS.env: NUM_CPUS,
    S.EXTERNAL_AUTOSCALER.env: AUTOSCALING,
}
# The head's autoscaling pieces (manifests/autoscaler.py): the sidecar, its volumes, the pod's
# service account. Only spec.autoscaling's image and resources change them; replicas never do.
_AUTOSCALING_VOLUMES = (A.VOLUME, TOKEN_VOLUME)


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:8]


def template_parts(template: Mapping[str, Any]) -> dict[str, str]:
    """Part → digest, for a template from `pod.pod_template` (rayguard's annotations ignored)."""
    rest = copy.deepcopy(dict(template))
    annotations = rest.get("metadata", {}).get("annotations") or {}
    for key in (names.ANNOTATION_TEMPLATE_HASH, names.ANNOTATION_TEMPLATE_PARTS):
        annotations.pop(key, None)
    buckets: dict[str, list[Any]] = {part: [] for part in PARTS}
    spec = rest.get("spec", {})
    if "containers" in spec:
        buckets[AUTOSCALING] += [c for c in spec["containers"] if c.get("name") == A.CONTAINER]
        spec["containers"] = [c for c in spec["containers"] if c.get("name") != A.CONTAINER]
    buckets[AUTOSCALING] += [v for v in spec.get("volumes", []) if v.get("name") in _AUTOSCALING_VOLUMES]
    spec["volumes"] = [v for v in spec.get("volumes", []) if v.get("name") not in _AUTOSCALING_VOLUMES]
    if "serviceAccountName" in spec:
        buckets[AUTOSCALING].append(spec.pop("serviceAccountName"))
    for container in spec.get("containers", []):
        if container.get("name") != names.CONTAINER:
            continue
        image = container.pop("image", None)
        buckets[IMAGE].append(image)
        if isinstance(container.get("command"), list):  # it may name the image: that is the image's part
            container["command"] = ["<image>" if arg == image else arg for arg in container["command"]]
        buckets[RESOURCES].append(container.pop("resources", None))
        kept = []
        for entry in container.get("env", []):
            part = _ENV_PARTS.get(entry.get("name", ""))
            (buckets[part] if part else kept).append(entry)
        container["env"] = kept
    volumes = spec.get("volumes", [])
    buckets[MEMORY] += [v for v in volumes if v.get("name") == names.VOLUME_SHM]  # sized to the object store
    spec["volumes"] = [v for v in volumes if v.get("name") != names.VOLUME_SHM]
    buckets[OTHER].append(rest)
    return {part: _digest(values) for part, values in buckets.items()}


def format_parts(parts: Mapping[str, str]) -> str:
    return ",".join(f"{part}={digest}" for part, digest in parts.items())


def read_parts(value: str | None) -> dict[str, str]:
    """The annotation's parts; empty when the pod has none (made by an older operator)."""
    out = {}
    for item in (value or "").split(","):
        part, sep, digest = item.partition("=")
        if sep and part and digest:
            out[part] = digest
    return out


def changed_parts(recorded: Mapping[str, str], desired: Mapping[str, str]) -> tuple[str, ...]:
    """The parts whose digests differ, named for a user, in PARTS order; empty when unknown."""
    return tuple(SHOWN.get(p, p) for p in PARTS if p in recorded and p in desired and recorded[p] != desired[p])

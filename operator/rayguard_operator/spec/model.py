"""A RayCluster body, parsed once into frozen models; every error names its field path.

The CRD rejects what it can (types, minimums, CEL rules). Parsing checks those again, because
`rayguard render` sees files no API server has checked, and then the rest: negative byte
quantities, objectStoreFraction + redisFraction >= 1 on the head, rayStartParams values and
flags rayguard owns, template overlays, and memory plans that cannot work. Missing fields take
the CRD's defaults (a unit test keeps the two in step), so a server-defaulted body and the
same file as written parse to the same model: that is what makes render equal the operator.

Each group's memory plan comes from `rayguard_node.sizing.plan.make_plan`, the code the runtime runs
in the pod, planned as the pod will see itself: limit from the pod spec, visible to Ray.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any, Mapping

from rayguard_node.errors import ImpossiblePlan, InvalidSetting
from rayguard_node.sizing.plan import BudgetSettings, MemoryPlan, NodeFacts, make_plan
from rayguard_node.sizing.quantity import parse_bytes, parse_cpus
from rayguard_node.contract.ray_flags import OWNED_FLAGS, flag_field, flag_key_problems, shown_value

from rayguard_operator import names
from rayguard_operator.errors import SpecError
from rayguard_operator.spec.quota import QuotaSpec, parse_quota
from rayguard_operator.spec.accelerators import parse_accelerators
from rayguard_operator.spec.upgrade import UpgradeStrategy, parse_upgrade_strategy
from rayguard_operator.spec.gcs import GcsFaultTolerance, parse_gcs
from rayguard_operator.spec.profiling import ProfilingSpec, parse_profiling
from rayguard_operator.spec.service import HeadServiceSpec, parse_head_service
from rayguard_operator.spec.overlay import check_overlay, check_pod_security
from rayguard_operator.settings import OperatorSettings

GiB = 1024**3
# spec.memory defaults, as in the CRD: (field, default).
MEMORY_DEFAULTS: dict[str, Any] = {
    "usageThreshold": 0.95, "monitorRefreshMs": 250, "objectStoreFraction": 0.3,
    "objectStoreMaxBytes": "20Gi", "objectStoreBytes": None, "redisFraction": 0.3,
    "redisMaxBytes": "10Gi", "heapFraction": 0.5,
}
FLUSH_DEFAULTS: dict[str, Any] = {
    "flushWhenAtLeastBytes": "2Gi", "flushPeriodSecs": 10, "flushNumEntriesEachTime": 10000,
}
HEAD_NUM_CPUS_DEFAULT = 0
REPLICAS_DEFAULT, MIN_REPLICAS_DEFAULT, MAX_REPLICAS_DEFAULT = 1, 0, 1000
# The scale caps, as in the CRD (README, "Scale caps"): replicas, minReplicas and maxReplicas
# of a group, and the sum of replicas over the groups. Checked here too, for objects stored
# before the CRD had them.
MAX_GROUP_REPLICAS, MAX_CLUSTER_WORKERS = 1000, 1000
# rayStartParams keys rayguard sets itself: the plan's, the supervisor's, and the head Service's and pod's ports.
FIXED_PORT_FLAGS = {"port", "dashboard-port", "ray-client-server-port", "metrics-export-port"}
RESERVED_RAY_FLAGS = frozenset(OWNED_FLAGS | FIXED_PORT_FLAGS)
_NAME = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_GROUP = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


@dataclass(frozen=True)
class MemorySettings:
    """Effective memory knobs of one group, and where each came from (for error messages)."""

    usage_threshold: float
    monitor_refresh_ms: int
    object_store_fraction: float
    object_store_max_bytes: int
    object_store_bytes: int | None
    redis_fraction: float
    redis_max_bytes: int
    heap_fraction: float
    flush_when_at_least_bytes: int
    flush_period_secs: int
    flush_num_entries_each_time: int
    # Where each value came from (its spec path; spec.memory's for a default), and which were set.
    sources: Mapping[str, str] = dataclasses.field(default_factory=dict, compare=False, repr=False)
    explicit: frozenset[str] = dataclasses.field(default=frozenset(), compare=False, repr=False)


@dataclass(frozen=True)
class Resources:
    limits: Mapping[str, str]
    requests: Mapping[str, str]
    memory_limit_bytes: int
    cpu_limit: float | None


@dataclass(frozen=True)
class NodeGroup:
    """The head (name "head") or one worker group. Mappings are never modified after parsing."""

    role: str
    name: str
    path: str
    replicas: int
    min_replicas: int
    max_replicas: int
    resources: Resources
    num_cpus: int | None
    ray_start_params: Mapping[str, str | int | bool]
    template: Mapping[str, Any]
    memory: MemorySettings
    plan: MemoryPlan
    warnings: tuple[str, ...] = ()
    profiling: ProfilingSpec = ProfilingSpec()
    num_gpus: int | None = None  # GPUs and custom resources for Ray (spec/accelerators.py)
    ray_resources: Mapping[str, int] = dataclasses.field(default_factory=dict)
    image: str | None = None  # the group's own image; None: the cluster's (ClusterModel.image_of)


@dataclass(frozen=True)
class ClusterModel:
    name: str
    namespace: str
    uid: str
    generation: int
    image: str
    head: NodeGroup
    worker_groups: tuple[NodeGroup, ...]
    quota: QuotaSpec = QuotaSpec()
    upgrade_strategy: UpgradeStrategy = UpgradeStrategy()
    head_service: HeadServiceSpec = HeadServiceSpec()  # spec.head.service (spec/service.py)
    gcs: GcsFaultTolerance | None = None  # spec.gcsFaultTolerance: Ray's GCS on an external Redis

    @property
    def groups(self) -> tuple[NodeGroup, ...]:
        return (self.head, *self.worker_groups)

    def image_of(self, group: NodeGroup) -> str:
        return group.image or self.image

    def group(self, name: str) -> NodeGroup | None:
        return next((g for g in self.groups if g.name == name), None)


# Fields the CRD defines, per object. The API server prunes (or, strictly, refuses) others;
# render must not silently drop a misspelt field either.
SPEC_FIELDS = {"image", "head", "workerGroups", "memory", "gcsFaultTolerance", "upgradeStrategy"}
HEAD_FIELDS = {"resources", "numCpus", "numGpus", "rayStartParams", "rayResources", "image", "template", "memory", "service"}
GROUP_FIELDS = HEAD_FIELDS - {"numGpus", "service"} | {"name", "replicas", "minReplicas", "maxReplicas"}
RESOURCES_FIELDS = {"limits", "requests"}


def _known(data: Mapping[str, Any], path: str, allowed: set[str]) -> None:
    for key in data:
        if key not in allowed:
            raise SpecError(f"{path}.{key}", "unknown field")


# --- small typed readers -------------------------------------------------------------------

def _obj(value: Any, path: str, required: bool = False) -> dict[str, Any]:
    if value is None and not required:
        return {}
    if not isinstance(value, dict):
        raise SpecError(path, "is required" if value is None else f"expected an object, found {type(value).__name__}")
    return value


def _int(data: Mapping[str, Any], key: str, path: str, default: int | None, minimum: int = 0) -> int | None:
    value = data.get(key)
    if value is None:  # absent or null: the API server drops a null and applies the default
        value = default
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError(f"{path}.{key}", f"expected a whole number, found {value!r}")
    if value < minimum:
        raise SpecError(f"{path}.{key}", f"must be at least {minimum}, found {value}")
    return value


def _fraction(value: Any, path: str, upper_inclusive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SpecError(path, f"expected a number, found {value!r}")
    if not (0 < value <= 1 if upper_inclusive else 0 < value < 1):
        raise SpecError(path, f"must be in (0, 1{']' if upper_inclusive else ')'}, found {value}")
    return float(value)


def _bytes(value: Any, path: str) -> int:
    if isinstance(value, float):
        raise SpecError(path, f"expected a quantity such as 4Gi or a whole number, found {value!r}")
    try:
        return parse_bytes(value, path)
    except InvalidSetting as error:
        raise SpecError(path, str(error).split(": ", 1)[-1] + f" (found {value!r})") from None


# --- parts ---------------------------------------------------------------------------------

def _resources(data: Any, path: str) -> tuple[Resources, list[str]]:
    data = _obj(data, path, required=True)
    _known(data, path, RESOURCES_FIELDS)
    limits = _obj(data.get("limits"), f"{path}.limits")
    requests = _obj(data.get("requests"), f"{path}.requests")
    if "memory" not in limits:
        raise SpecError(f"{path}.limits.memory", "is required: rayguard sizes Ray from the memory limit")
    memory = _bytes(limits["memory"], f"{path}.limits.memory")
    if memory == 0:
        raise SpecError(f"{path}.limits.memory", "must be above 0")
    cpu = _cpus(limits["cpu"], f"{path}.limits.cpu") if "cpu" in limits else None
    warnings = []
    if "memory" in requests:
        requested = _bytes(requests["memory"], f"{path}.requests.memory")
        if requested > memory:
            raise SpecError(f"{path}.requests.memory", "must not exceed limits.memory")
        if requested != memory:
            warnings.append(f"{path}: requests.memory differs from limits.memory; equal values are"
                            " recommended, so the scheduler reserves what Ray is sized to use")
    if "cpu" in requests:
        _cpus(requests["cpu"], f"{path}.requests.cpu")
    as_strings = lambda d: {k: str(v) for k, v in d.items()}  # noqa: E731
    return Resources(as_strings(limits), as_strings(requests), memory, cpu), warnings


def _cpus(value: Any, path: str) -> float:
    if isinstance(value, float):
        value = str(value)
    try:
        return parse_cpus(value, path)
    except InvalidSetting as error:
        raise SpecError(path, str(error).split(": ", 1)[-1] + f" (found {value!r})") from None


def _ray_start_params(data: Any, path: str) -> dict[str, str | int | bool]:
    params = _obj(data, path)
    # Keys are checked in Ray's own spelling (`NUM_CPUS` is `num-cpus`), as the runtime does.
    for key, why in flag_key_problems(params, RESERVED_RAY_FLAGS):  # the first one
        raise SpecError(flag_field(path, key), why)
    for key, value in params.items():
        if isinstance(value, float) or not isinstance(value, (str, int, bool)):
            raise SpecError(flag_field(path, key), "values must be strings, integers or booleans,"
                                                   f" found {shown_value(key, value)!r}")
    return dict(params)


_MEMORY_FIELDS = {
    # CRD field: (model field, kind)
    "usageThreshold": ("usage_threshold", "threshold"),
    "monitorRefreshMs": ("monitor_refresh_ms", "int"),
    "objectStoreFraction": ("object_store_fraction", "fraction"),
    "objectStoreMaxBytes": ("object_store_max_bytes", "bytes"),
    "objectStoreBytes": ("object_store_bytes", "bytes"),
    "redisFraction": ("redis_fraction", "fraction"),
    "redisMaxBytes": ("redis_max_bytes", "bytes"),
    "heapFraction": ("heap_fraction", "fraction"),
}
_FLUSH_FIELDS = {
    "flushWhenAtLeastBytes": ("flush_when_at_least_bytes", "bytes"),
    "flushPeriodSecs": ("flush_period_secs", "positive"),
    "flushNumEntriesEachTime": ("flush_num_entries_each_time", "positive"),
}


def _memory_value(kind: str, value: Any, path: str) -> Any:
    if kind == "bytes":
        return _bytes(value, path)
    if kind in ("int", "positive"):
        minimum = 1 if kind == "positive" else 0
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise SpecError(path, f"expected a whole number of at least {minimum}, found {value!r}")
        return value
    return _fraction(value, path, upper_inclusive=(kind == "threshold"))


def _memory(layers: list[tuple[Any, str]]) -> MemorySettings:
    """Field-by-field: the last layer that sets a field wins; absent fields take defaults."""
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    explicit: set[str] = set()
    for table, defaults, sub in ((_MEMORY_FIELDS, MEMORY_DEFAULTS, ""), (_FLUSH_FIELDS, FLUSH_DEFAULTS, "flushPolicy")):
        for key, (field, kind) in table.items():
            chosen, where = defaults[key], f"spec.memory.{sub + '.' if sub else ''}{key}"
            for data, path in layers:
                data = _obj(data, path)
                _known(data, path, set(_MEMORY_FIELDS) | {"flushPolicy", "profiling"}
                       | ({"quota"} if path == "spec.memory" else set()))
                if sub:
                    _known(_obj(data.get(sub), f"{path}.{sub}"), f"{path}.{sub}", set(_FLUSH_FIELDS))
                    data, path = _obj(data.get(sub), f"{path}.{sub}"), f"{path}.{sub}"
                if data.get(key) is not None:
                    chosen, where = data[key], f"{path}.{key}"
                    explicit.add(field)
            values[field] = None if chosen is None else _memory_value(kind, chosen, where)
            sources[field] = where
    return MemorySettings(**values, sources=sources, explicit=frozenset(explicit))


def _plan(role: str, resources: Resources, memory: MemorySettings, num_cpus: int | None,
          path: str, external_redis: bool = False) -> tuple[MemoryPlan, list[str]]:
    limit_path = f"{path}.resources.limits.memory"
    if role == names.HEAD and memory.object_store_fraction + memory.redis_fraction >= 1:
        set_here = [f for f in ("object_store_fraction", "redis_fraction") if f in memory.explicit]
        raise SpecError(memory.sources[(set_here or ["object_store_fraction"])[0]],
                        f"objectStoreFraction ({memory.object_store_fraction}, {memory.sources['object_store_fraction']})"
                        f" + redisFraction ({memory.redis_fraction}, {memory.sources['redis_fraction']}) must be below 1,"
                        " or nothing is left for the head's heap")
    if memory.object_store_bytes == 0:
        raise SpecError(memory.sources["object_store_bytes"], "must be above 0 (leave it out to use the fraction)")
    if memory.object_store_bytes is not None and memory.object_store_bytes >= resources.memory_limit_bytes:
        raise SpecError(memory.sources["object_store_bytes"],
                        f"the object store must fit in {limit_path} ({resources.limits['memory']})")
    settings = BudgetSettings(
        object_store_fraction=memory.object_store_fraction, object_store_max_bytes=memory.object_store_max_bytes,
        object_store_bytes=memory.object_store_bytes, redis_fraction=memory.redis_fraction,
        redis_max_bytes=memory.redis_max_bytes, heap_fraction=memory.heap_fraction,
        usage_threshold=memory.usage_threshold, monitor_refresh_ms=memory.monitor_refresh_ms,
        num_cpus=num_cpus, external_redis=external_redis)
    facts = NodeFacts(limit_bytes=resources.memory_limit_bytes, limit_source="pod-spec",
                      cpu_limit=resources.cpu_limit, shm_free_bytes=None, ray_sees_limit=True)
    try:
        plan = make_plan(role, facts, settings)
    except ImpossiblePlan as error:  # named at the knob to blame when it was set, else the limit
        knob_path = memory.sources.get(error.knob) if error.knob in memory.explicit else None
        raise SpecError(knob_path or limit_path, str(error)) from None
    warnings = [w for w in plan.warnings if not w.startswith("no CPU limit found")]
    if role == names.WORKER and num_cpus is None and resources.cpu_limit is None:
        warnings.append(f"{path}: no CPU limit and no numCpus; Ray takes num-cpus from the node it lands on")
    return dataclasses.replace(plan, warnings=tuple(warnings)), warnings


def _image(data: Mapping[str, Any], path: str) -> str | None:
    if (image := data.get("image")) is not None and (not isinstance(image, str) or not image):
        raise SpecError(f"{path}.image", "expected an image reference")
    return image


def _group(role: str, data: Any, path: str, cluster_memory: Any, external_redis: bool = False) -> NodeGroup:
    data = _obj(data, path, required=True)
    _known(data, path, HEAD_FIELDS if role == names.HEAD else GROUP_FIELDS)
    if role == names.HEAD:
        name = names.HEAD_GROUP
        replicas, low, high = 1, 1, 1
        num_cpus = _int(data, "numCpus", path, HEAD_NUM_CPUS_DEFAULT)
    else:
        name = data.get("name")
        if not isinstance(name, str) or not _GROUP.match(name) or len(name) > 63:
            raise SpecError(f"{path}.name", f"expected a DNS label (lower-case letters, digits, '-'), found {name!r}")
        if name == names.HEAD_GROUP:
            raise SpecError(f"{path}.name", "'head' is the head's group name; choose another")
        replicas = _int(data, "replicas", path, REPLICAS_DEFAULT)
        low = _int(data, "minReplicas", path, MIN_REPLICAS_DEFAULT)
        high = _int(data, "maxReplicas", path, MAX_REPLICAS_DEFAULT)
        for key, value in (("replicas", replicas), ("minReplicas", low), ("maxReplicas", high)):
            if value > MAX_GROUP_REPLICAS:  # type: ignore[operator]
                raise SpecError(f"{path}.{key}", f"must be at most {MAX_GROUP_REPLICAS}, found {value}")
        if low > high:  # type: ignore[operator]
            raise SpecError(f"{path}.minReplicas", f"must not exceed maxReplicas ({high})")
        if not low <= replicas <= high:  # type: ignore[operator]
            raise SpecError(f"{path}.replicas", f"must lie between minReplicas ({low}) and maxReplicas ({high})")
        num_cpus = _int(data, "numCpus", path, None)
    resources, warnings = _resources(data.get("resources"), f"{path}.resources")
    layers = [(cluster_memory, "spec.memory"), (data.get("memory"), f"{path}.memory")]
    memory = _memory(layers)
    plan, plan_warnings = _plan(role, resources, memory, num_cpus, path, external_redis)
    accelerators = parse_accelerators(role, data, path, resources.limits,
                                      _ray_start_params(data.get("rayStartParams"), f"{path}.rayStartParams"))
    return NodeGroup(
        role=role, name=name, path=path, replicas=replicas, min_replicas=low, max_replicas=high,  # type: ignore[arg-type]
        resources=resources, num_cpus=num_cpus, ray_start_params=accelerators.ray_start_params,
        template=check_overlay(data.get("template"), f"{path}.template"),
        memory=memory, plan=plan, warnings=tuple(warnings + plan_warnings), profiling=parse_profiling(layers),
        num_gpus=accelerators.num_gpus, ray_resources=accelerators.ray_resources, image=_image(data, path))


def parse_cluster(body: Mapping[str, Any], settings: OperatorSettings) -> ClusterModel:
    """The whole RayCluster, or a SpecError naming the first field that cannot work."""
    metadata = _obj(body.get("metadata"), "metadata", required=True)
    name = metadata.get("name")
    if not isinstance(name, str) or not _NAME.match(name) or len(name) > 50:
        raise SpecError("metadata.name", f"expected a DNS-1035 label of at most 50 characters, found {name!r}")
    spec, uid = _obj(body.get("spec"), "spec", required=True), str(metadata.get("uid") or "")
    _known(spec, "spec", SPEC_FIELDS)
    image = spec.get("image", settings.node_image)
    if not isinstance(image, str) or not image:
        raise SpecError("spec.image", "expected an image reference")
    cluster_memory, gcs = _obj(spec.get("memory"), "spec.memory"), parse_gcs(spec.get("gcsFaultTolerance"), uid)
    head = _group(names.HEAD, spec.get("head"), "spec.head", cluster_memory, external_redis=gcs is not None)
    raw_groups = spec.get("workerGroups") or []
    if not isinstance(raw_groups, list):
        raise SpecError("spec.workerGroups", "expected a list")
    workers: list[NodeGroup] = []
    for i, raw in enumerate(raw_groups):
        group = _group(names.WORKER, raw, f"spec.workerGroups[{i}]", cluster_memory)
        if any(g.name == group.name for g in workers):
            raise SpecError(f"spec.workerGroups[{i}].name", f"duplicate group name {group.name!r}")
        workers.append(group)
    if sum(g.replicas for g in workers) > MAX_CLUSTER_WORKERS:
        raise SpecError("spec.workerGroups", f"the sum of replicas over all worker groups must be at most"
                                             f" {MAX_CLUSTER_WORKERS}, found {sum(g.replicas for g in workers)}")
    for group in (head, *workers):  # the overlay merged into rayguard's pod, at the operator's level
        check_pod_security(group.template, f"{group.path}.template", settings.pod_security)
    return ClusterModel(
        name=name, namespace=str(metadata.get("namespace") or "default"), uid=uid,
        generation=generation if isinstance(generation := metadata.get("generation"), int) else 0, image=image,
        head=head, worker_groups=tuple(workers), head_service=parse_head_service(spec["head"].get("service")),
        quota=parse_quota(cluster_memory.get("quota"), "spec.memory.quota"),
        upgrade_strategy=parse_upgrade_strategy(spec.get("upgradeStrategy")),
        gcs=gcs)

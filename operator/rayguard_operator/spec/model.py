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

from rayguard_node.sizing.plan import MemoryPlan
from rayguard_node.contract.ray_flags import OWNED_FLAGS, flag_field, flag_key_problems, shown_value

from rayguard_operator import names
from rayguard_operator.errors import SpecError
from rayguard_operator.spec.quota import QuotaSpec, parse_quota
from rayguard_operator.spec.accelerators import parse_accelerators
from rayguard_operator.spec.autoscaling import (
    AutoscalingSpec, check_autoscaled, parse_autoscaling, parse_suspend, parse_workers_to_delete)
from rayguard_operator.spec.upgrade import UpgradeStrategy, parse_upgrade_strategy
from rayguard_operator.spec.gcs import GcsFaultTolerance, parse_gcs
from rayguard_operator.spec.memory import MemorySettings, Resources, _memory, _plan
from rayguard_operator.spec.profiling import ProfilingSpec, parse_profiling
from rayguard_operator.spec.readers import _bytes, _cpus, _int, _known, _obj
from rayguard_operator.spec.service import HeadServiceSpec, parse_head_service
from rayguard_operator.spec.overlay import check_overlay, check_pod_security
from rayguard_operator.settings import OperatorSettings

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
    workers_to_delete: tuple[str, ...] = ()  # pods the autoscaler named (spec/autoscaling.py)

    @property
    def ray_num_cpus(self) -> int | None:
        """Ray's num-cpus in the pod (and the autoscaler's CPU of the group): numCpus, else the
        plan's count from the CPU limit; None when neither exists and Ray counts the node's."""
        if self.num_cpus is not None:
            return self.num_cpus
        return self.plan.num_cpus if self.resources.cpu_limit is not None else None


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
    suspend: bool = False  # spec.suspend: no pods at all; the Secret, the Service and the spec stay
    autoscaling: AutoscalingSpec = AutoscalingSpec()  # spec.autoscaling (spec/autoscaling.py)

    @property
    def groups(self) -> tuple[NodeGroup, ...]:
        return (self.head, *self.worker_groups)

    def image_of(self, group: NodeGroup) -> str:
        return group.image or self.image

    def group(self, name: str) -> NodeGroup | None:
        return next((g for g in self.groups if g.name == name), None)


# Fields the CRD defines, per object. The API server prunes (or, strictly, refuses) others;
# render must not silently drop a misspelt field either.
SPEC_FIELDS = {"image", "head", "workerGroups", "memory", "gcsFaultTolerance", "upgradeStrategy", "suspend", "autoscaling"}
HEAD_FIELDS = {"resources", "numCpus", "numGpus", "rayStartParams", "rayResources", "image", "template", "memory", "service"}
GROUP_FIELDS = HEAD_FIELDS - {"numGpus", "service"} | {"name", "replicas", "minReplicas", "maxReplicas", "workersToDelete"}
RESOURCES_FIELDS = {"limits", "requests"}


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
        num_gpus=accelerators.num_gpus, ray_resources=accelerators.ray_resources, image=_image(data, path),
        workers_to_delete=parse_workers_to_delete(data.get("workersToDelete"), f"{path}.workersToDelete"))


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
    autoscaling = parse_autoscaling(spec.get("autoscaling"))
    check_autoscaled(autoscaling, head.template, head.path, workers)
    return ClusterModel(
        name=name, namespace=str(metadata.get("namespace") or "default"), uid=uid,
        generation=generation if isinstance(generation := metadata.get("generation"), int) else 0, image=image,
        head=head, worker_groups=tuple(workers), head_service=parse_head_service(spec["head"].get("service")),
        quota=parse_quota(cluster_memory.get("quota"), "spec.memory.quota"),
        upgrade_strategy=parse_upgrade_strategy(spec.get("upgradeStrategy")),
        gcs=gcs, suspend=parse_suspend(spec), autoscaling=autoscaling)

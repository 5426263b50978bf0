"""What Ray may schedule on a group's pods besides CPUs and memory: GPUs, TPUs and custom
resources, from the container's limits, `rayResources`, `head.numGpus` and `rayStartParams`.

- A worker's `nvidia.com/gpu` or `amd.com/gpu` limit is its `--num-gpus`; `google.com/tpu` is the
  `TPU` resource (Ray 2.60 has no `--num-tpus`: it reads a configured TPU count from
  `--resources`; see `rayguard_node.contract.accelerators`).
- The head takes no GPU or TPU tasks, whatever its limits, unless `head.numGpus` (or
  `head.rayResources.TPU`) says so: `--num-gpus=0`, and `TPU: 0` when it has a TPU limit.
- `rayResources` (name -> count) and a `rayStartParams.resources` JSON string are merged with
  the TPU count into one `--resources`; `rayStartParams.num-gpus` may only repeat what the
  limits (or `head.numGpus`) say. A contradiction is a `SpecError` naming both fields.

The model keeps the result (`NodeGroup.num_gpus`, `NodeGroup.ray_resources`) and drops
`num-gpus` and `resources` from the group's `rayStartParams`, so the pod builder passes each
once (`RAYGUARD_NUM_GPUS`, `RAYGUARD_RAY_RESOURCES`) and whatever reads the model later (an
autoscaler's node types) sees what Ray is told.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from rayguard_node.contract.accelerators import (GPU_LIMITS, TPU_LIMIT, TPU_RESOURCE, parse_resources_json,
                                                 resource_count_problem, resource_name_problem)
from rayguard_node.contract.ray_flags import normalize_flag
from rayguard_node.errors import InvalidSetting
from rayguard_node.sizing.quantity import parse_cpus

from rayguard_operator import names
from rayguard_operator.errors import SpecError

HEAD_NUM_GPUS_DEFAULT = 0


@dataclass(frozen=True)
class Accelerators:
    num_gpus: int | None  # None: Ray counts the GPUs it sees (a worker without a GPU limit)
    ray_resources: Mapping[str, int]
    ray_start_params: Mapping[str, str | int | bool]  # without num-gpus and resources


def _whole(value: Any, path: str) -> int:
    """An extended resource's quantity; Kubernetes allows only whole numbers for those."""
    try:
        count = parse_cpus(str(value), path)
    except InvalidSetting as error:
        raise SpecError(path, str(error).split(": ", 1)[-1] + f" (found {value!r})") from None
    if not float(count).is_integer():
        raise SpecError(path, f"must be a whole number, found {value!r}")
    return int(count)


def _limit_counts(limits: Mapping[str, str], path: str) -> tuple[tuple[str, int] | None, int | None]:
    """(GPU limit name, count) and the TPU count, from a container's limits."""
    gpus = [(name, _whole(limits[name], f"{path}.{name}")) for name in GPU_LIMITS if name in limits]
    if len(gpus) > 1:
        raise SpecError(f"{path}.{GPU_LIMITS[1]}", f"a pod gets {GPU_LIMITS[0]} or {GPU_LIMITS[1]}, not both"
                                                  f" (both are Ray's GPU; also set: {path}.{GPU_LIMITS[0]})")
    tpus = _whole(limits[TPU_LIMIT], f"{path}.{TPU_LIMIT}") if TPU_LIMIT in limits else None
    return (gpus[0] if gpus else None), tpus


def _ray_resources(data: Any, path: str) -> dict[str, int]:
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SpecError(path, f"expected an object of resource name to count, found {type(data).__name__}")
    for name, count in data.items():
        why = resource_name_problem(name) or resource_count_problem(count)
        if why:
            raise SpecError(f"{path}.{name}" if isinstance(name, str) else f"{path}[{name!r}]", f"{why} (found {count!r})")
    return {name: int(count) for name, count in data.items()}


def _param_num_gpus(value: Any, path: str) -> int:
    if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, str) and value.isdigit())):
        raise SpecError(path, f"expected a whole number of GPUs, found {value!r}")
    return int(value)


def parse_accelerators(role: str, data: Mapping[str, Any], path: str, limits: Mapping[str, str],
                       params: Mapping[str, str | int | bool]) -> Accelerators:
    """The group's GPU count, its Ray resources, and its rayStartParams without either."""
    limits_path = f"{path}.resources.limits"
    gpu_limit, tpu_limit = _limit_counts(limits, limits_path)
    resources = _ray_resources(data.get("rayResources"), f"{path}.rayResources")
    # Where the GPU count comes from, for the error that names a contradiction.
    num_gpus: int | None
    if role == names.HEAD:
        given = data.get("numGpus")
        if given is not None and (isinstance(given, bool) or not isinstance(given, int) or given < 0):
            raise SpecError(f"{path}.numGpus", f"expected a whole number of at least 0, found {given!r}")
        num_gpus = HEAD_NUM_GPUS_DEFAULT if given is None else given
        gpu_source = (f"{path}.numGpus ({num_gpus})" if given is not None else
                      f"{path}.numGpus ({num_gpus}, the default: the head takes no GPU tasks)")
    else:
        num_gpus = gpu_limit[1] if gpu_limit else None
        gpu_source = f"{limits_path}.{gpu_limit[0]} ({gpu_limit[1]})" if gpu_limit else ""
        if tpu_limit is not None:
            if TPU_RESOURCE in resources and resources[TPU_RESOURCE] != tpu_limit:
                raise SpecError(f"{path}.rayResources.{TPU_RESOURCE}",
                                f"{resources[TPU_RESOURCE]} contradicts {limits_path}.{TPU_LIMIT} ({tpu_limit});"
                                f" leave {TPU_RESOURCE} out, rayguard gives Ray the TPU limit")
            resources[TPU_RESOURCE] = tpu_limit
    rest: dict[str, str | int | bool] = {}
    for key, value in params.items():
        flag, key_path = normalize_flag(key), f"{path}.rayStartParams.{key}"
        if flag == "num-gpus":
            wanted = _param_num_gpus(value, key_path)
            if num_gpus is not None and wanted != num_gpus:
                fix = f"set {path}.numGpus instead" if role == names.HEAD else "remove it"
                raise SpecError(key_path, f"{wanted} contradicts {gpu_source}; {fix}")
            num_gpus = wanted
        elif flag == "resources":
            if not isinstance(value, str):
                raise SpecError(key_path, f'expected a JSON object in a string, such as \'{{"fpga": 1}}\', found {value!r}')
            extra, why = parse_resources_json(value)
            if extra is None:
                raise SpecError(key_path, why)
            for name in sorted(extra):
                if name in resources and resources[name] != extra[name]:
                    other = (f"{limits_path}.{TPU_LIMIT}" if name == TPU_RESOURCE and tpu_limit is not None
                             and role != names.HEAD else f"{path}.rayResources.{name}")
                    raise SpecError(key_path, f"{name}: {extra[name]} contradicts {other} ({resources[name]});"
                                              f" give it once, in {path}.rayResources")
            resources.update(extra)
        else:
            rest[key] = value
    if role == names.HEAD and tpu_limit is not None:  # else Ray counts the chips and takes TPU tasks
        resources.setdefault(TPU_RESOURCE, 0)
    return Accelerators(num_gpus, resources, rest)

"""GPUs, TPUs and custom resources: how a pod's limits and a group's `rayResources` become
Ray's `--num-gpus` and `--resources`, shared by the operator (which checks a spec) and the
runtime (which builds `ray start`), so both refuse the same names with the same words.

What Ray 2.60 does with them (`ray/scripts/scripts.py`, `ray/_private/resource_and_label_spec.py`,
`ray/_private/accelerators/`):

- `ray start --num-gpus` is a click `int`; NVIDIA and AMD GPUs are both Ray's `GPU` resource
  (`NvidiaGPUAcceleratorManager` and `AMDGPUAcceleratorManager.get_resource_name()`).
- TPU chips are the resource `TPU` (`TPUAcceleratorManager.get_resource_name()`); there is no
  `--num-tpus`. A configured count is read from the custom resources (`resources.get("TPU")` in
  `ResourceAndLabelSpec._get_current_node_accelerator`), so `--resources='{"TPU": 4}'` is how a
  count is given; without one Ray counts `/dev/accel*` or `/dev/vfio` devices itself.
- `--resources` is a JSON object (`parse_resources_json`). The node's quantities must be whole
  numbers, at least 0 and at most `MAX_RESOURCE_QUANTITY` (1e14) (`to_resource_dict`), which
  also overwrites `CPU`, `GPU`, `memory` and `object_store_memory` from the flags: a custom
  resource of those names would silently lose, so rayguard refuses them. Ray reserves the
  `node:` prefix (the node id and `node:__internal_head__`), `accelerator_type:` (what it
  detects), `bundle` and names with `_group_` (placement groups).
"""

from __future__ import annotations

import json
import math
import re
from typing import Mapping

# Extended resources in a container's limits that are Ray's GPU, and the TPU's.
GPU_LIMITS = ("nvidia.com/gpu", "amd.com/gpu")
TPU_LIMIT = "google.com/tpu"
TPU_RESOURCE = "TPU"
MAX_RESOURCE_QUANTITY = 100 * 10**12

# Names Ray sets from flags or reserves, with where the value belongs instead.
RESERVED_RESOURCES = {
    "CPU": "numCpus", "GPU": "a GPU limit (nvidia.com/gpu, amd.com/gpu) or numGpus",
    "memory": "the memory plan", "object_store_memory": "the memory plan", "bundle": "Ray's placement groups",
}
_RESOURCE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,62}")
NAME_RULE = ("a resource name is 1 to 63 ASCII letters, digits, '_', '-' and '.', starting with a"
             " letter")


def resource_name_problem(name: object) -> str | None:
    """Why `name` may not be a custom Ray resource of a rayguard node, or None."""
    if not isinstance(name, str) or not _RESOURCE_NAME.fullmatch(name):
        return NAME_RULE
    if name in RESERVED_RESOURCES:
        return f"Ray sets {name} itself; use {RESERVED_RESOURCES[name]}"
    if "_group_" in name:
        return "names with '_group_' are Ray's placement group resources"
    return None


def resource_count_problem(value: object) -> str | None:
    """Why `value` is not a count Ray takes for a node resource, or None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "a count must be a whole number"
    if isinstance(value, float) and (not math.isfinite(value) or not value.is_integer()):
        return "a count must be a whole number (Ray refuses fractions of a node's resource)"
    if not 0 <= value <= MAX_RESOURCE_QUANTITY:
        return f"a count must be from 0 to {MAX_RESOURCE_QUANTITY}"
    return None


def resources_problems(resources: Mapping[object, object]) -> list[tuple[object, str]]:
    """Each (name, why) that Ray may not be given, in order."""
    problems: list[tuple[object, str]] = []
    for name, value in resources.items():
        why = resource_name_problem(name) or resource_count_problem(value)
        if why:
            problems.append((name, why))
    return problems


def parse_resources_json(text: str) -> tuple[dict[str, int] | None, str]:
    """`--resources` text as Ray reads it: a JSON object of name -> count. (dict, "") or (None, why)."""
    try:
        parsed = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as error:
        return None, f"not JSON ({getattr(error, 'msg', 'nested too deeply')})"
    if not isinstance(parsed, dict):
        return None, 'expected a JSON object such as {"example.com_fpga": 2}'
    for name, why in resources_problems(parsed):
        return None, f"{name!r}: {why}"
    return {name: int(count) for name, count in parsed.items()}, ""


def resources_json(resources: Mapping[str, int]) -> str:
    """The one spelling of `--resources` (and `RAYGUARD_RAY_RESOURCES`): sorted, compact JSON."""
    return json.dumps(dict(resources), sort_keys=True, separators=(",", ":"))


def conflicts(first: Mapping[str, int], second: Mapping[str, int]) -> list[str]:
    """Names both give, with different counts."""
    return sorted(name for name in first if name in second and first[name] != second[name])

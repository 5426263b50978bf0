"""Where detection meets the plan: the node's facts (detected, or overridden by settings)
and the plan made from them. The one module in sizing/ that reads the machine, through
`rayguard_node.cgroup.detect`; `rayguard-node plan` and `run` both call `compute_plan`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

from rayguard_node.cgroup.detect import MemoryDetection, detect, read_shm
from rayguard_node.errors import InvalidSetting, RayguardError
from rayguard_node.contract.settings import by_key
from rayguard_node.sizing.plan import BudgetSettings, MemoryPlan, NodeFacts, make_plan


BUDGET_FIELDS = {
    "num_cpus", "object_store_bytes", "object_store_fraction", "object_store_max_bytes",
    "redis_fraction", "redis_max_bytes", "heap_fraction", "usage_threshold",
    "monitor_refresh_ms", "guard_refresh_ms", "guard_min_refresh_ms", "guard_threshold",
}



def budget_settings(values: Mapping[str, object]) -> BudgetSettings:
    """The budget knobs among resolved values; range errors name the flag and env var."""
    try:
        return BudgetSettings(**{k: v for k, v in values.items() if k in BUDGET_FIELDS},
                              external_redis=bool(values.get("gcs_redis_address")))
    except InvalidSetting as error:
        if error.field not in BUDGET_FIELDS:
            raise
        raise InvalidSetting(by_key(error.field).spellings,
                             values[error.field], str(error).split(": ", 1)[1]) from None


def host_cpus() -> int:
    return len(os.sched_getaffinity(0))


def node_facts(values: dict[str, object], sysfs_root: Path, procfs_root: Path) -> tuple[NodeFacts, list[str]]:
    """Detection, with `limit_bytes` and `shm_bytes` overrides; an override of the limit
    also makes detection failures non-fatal, so a broken cgroup file can be bypassed."""
    warnings: list[str] = []
    detection: MemoryDetection | None = None
    try:
        detection = detect(sysfs_root, procfs_root)
    except (RayguardError, OSError) as error:
        if "limit_bytes" not in values:
            raise
        warnings.append(f"detection failed ({error}); using the given limit")
    shm_free = values.get("shm_bytes")
    if shm_free is None:
        shm_free = detection.shm_free_bytes if detection else read_shm(Path("/dev/shm"))[1]
    if "limit_bytes" in values:
        limit = int(values["limit_bytes"])  # type: ignore[arg-type]
        sees = detection is not None and detection.ray_limit_bytes == limit
        return NodeFacts(limit, "override", detection.cpu_limit if detection else None,
                         shm_free, sees), warnings  # type: ignore[arg-type]
    assert detection is not None
    warnings.extend(w for w in detection.warnings if not w.startswith("no memory limit"))
    return NodeFacts(detection.limit_bytes, detection.source, detection.cpu_limit,
                     shm_free, detection.ray_sees_limit), warnings  # type: ignore[arg-type]


def compute_plan(values: dict[str, object], sysfs_root: Path, procfs_root: Path) -> MemoryPlan:
    if "role" not in values:
        raise RayguardError("--role is required (head or worker), or set RAYGUARD_ROLE")
    settings = budget_settings(values)
    facts, warnings = node_facts(values, sysfs_root, procfs_root)
    plan = make_plan(str(values["role"]), facts, settings, host_cpus())
    if warnings:
        plan = MemoryPlan(**{**plan.__dict__, "warnings": tuple(warnings) + plan.warnings})
    return plan

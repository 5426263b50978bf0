"""spec.memory: the memory knobs of each group (cluster-wide, then per group, field by field),
and the memory plan they give, made by the runtime's own `make_plan`."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

from rayguard_node.errors import ImpossiblePlan
from rayguard_node.sizing.plan import BudgetSettings, MemoryPlan, NodeFacts, make_plan

from rayguard_operator import names
from rayguard_operator.errors import SpecError
from rayguard_operator.spec.readers import _bytes, _fraction, _known, _obj

# spec.memory defaults, as in the CRD: (field, default).
MEMORY_DEFAULTS: dict[str, Any] = {
    "usageThreshold": 0.95, "monitorRefreshMs": 250, "objectStoreFraction": 0.3,
    "objectStoreMaxBytes": "20Gi", "objectStoreBytes": None, "redisFraction": 0.3,
    "redisMaxBytes": "10Gi", "heapFraction": 0.5,
}
FLUSH_DEFAULTS: dict[str, Any] = {
    "flushWhenAtLeastBytes": "2Gi", "flushPeriodSecs": 10, "flushNumEntriesEachTime": 10000,
}


@dataclass(frozen=True)
class Resources:
    limits: Mapping[str, str]
    requests: Mapping[str, str]
    memory_limit_bytes: int
    cpu_limit: float | None


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

"""The memory budget: how a node's limit L is split between Ray's parts.

These are Ray's documented defaults: object store min(30% L, 20 GiB), Redis min(30% L, 10 GiB)
on the head only, and half of what remains as the heap Ray hands out through `memory=`
quotas. A plan that cannot work is an error naming the number to raise, never a clamp.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from rayguard_node.errors import ImpossiblePlan, InvalidSetting
from rayguard_node.sizing.quantity import GiB, MiB, format_bytes

HEAD, WORKER = "head", "worker"
ROLES = (HEAD, WORKER)

# Ray refuses an object store below 75 MiB; a heap below 100 MiB cannot run a task.
MIN_OBJECT_STORE_BYTES = 75 * MiB
MIN_HEAP_BYTES = 100 * MiB
# The head's Redis holds the reports stream, which is never evicted (no TTL): up to 10,000
# reports (`MAXLEN ~ 10000`) of about 1.2 KiB each, about 12 MiB, plus Redis itself (about
# 1 MiB) and the ledger's samples (which carry a TTL and are evicted first). Below this a
# full stream makes Redis refuse writes; and 0 would be `maxmemory 0`, which Redis reads as
# "no limit at all".
MIN_REDIS_BYTES = 32 * MiB
# Below these the Ray processes themselves (raylet, GCS, dashboard, agents) do not fit.
MIN_LIMIT_BYTES = {HEAD: 768 * MiB, WORKER: 384 * MiB}
SHM_USABLE_FRACTION = 0.95


@dataclass(frozen=True)
class BudgetSettings:
    """Every knob of the budget; defaults are Ray's documented ones."""

    object_store_fraction: float = 0.3
    object_store_max_bytes: int = 20 * GiB
    object_store_bytes: int | None = None
    redis_fraction: float = 0.3
    redis_max_bytes: int = 10 * GiB
    heap_fraction: float = 0.5
    usage_threshold: float = 0.95
    monitor_refresh_ms: int = 250
    guard_refresh_ms: int = 50
    guard_min_refresh_ms: int = 2
    guard_threshold: float | None = None
    num_cpus: int | None = None
    # GCS fault tolerance: the head's reports and ledger live in the external Redis, so the
    # head starts no redis-server and its share goes to the heap.
    external_redis: bool = False

    def __post_init__(self) -> None:
        for name in ("object_store_fraction", "redis_fraction", "heap_fraction"):
            value = getattr(self, name)
            if not 0 < value < 1:
                raise InvalidSetting(name, value, "a fraction must be between 0 and 1, exclusive")
        if not 0 < self.usage_threshold <= 1:
            raise InvalidSetting("usage_threshold", self.usage_threshold, "must be in (0, 1]")
        if self.guard_threshold is not None and not 0 < self.guard_threshold <= 1:
            raise InvalidSetting("guard_threshold", self.guard_threshold, "must be in (0, 1]")
        for name in ("monitor_refresh_ms", "guard_refresh_ms", "object_store_max_bytes",
                     "redis_max_bytes"):
            if getattr(self, name) < 0:
                raise InvalidSetting(name, getattr(self, name), "must not be negative")
        if self.guard_min_refresh_ms < 1:
            raise InvalidSetting("guard_min_refresh_ms", self.guard_min_refresh_ms,
                                 "must be at least 1 (a period of 0 would spin a core)")
        if self.object_store_bytes is not None and self.object_store_bytes <= 0:
            raise InvalidSetting("object_store_bytes", self.object_store_bytes, "must be positive")
        if self.num_cpus is not None and self.num_cpus < 0:
            raise InvalidSetting("num_cpus", self.num_cpus, "must not be negative")


@dataclass(frozen=True)
class NodeFacts:
    """What the node knows about itself, from detection or from a pod spec."""

    limit_bytes: int
    limit_source: str
    cpu_limit: float | None = None
    shm_free_bytes: int | None = None
    ray_sees_limit: bool = False


@dataclass(frozen=True)
class MemoryPlan:
    role: str
    limit_bytes: int
    limit_source: str
    num_cpus: int
    object_store_bytes: int
    redis_max_bytes: int
    heap_bytes: int
    usage_threshold: float
    monitor_refresh_ms: int
    guard_refresh_ms: int
    guard_threshold: float
    guard_mode: str  # primary | backstop | disabled
    guard_min_refresh_ms: int = 2  # the adaptive floor; never above guard_refresh_ms
    warnings: tuple[str, ...] = field(default=())

    @property
    def ray_start_args(self) -> list[str]:
        return [
            f"--num-cpus={self.num_cpus}",
            f"--memory={self.heap_bytes}",
            f"--object-store-memory={self.object_store_bytes}",
        ]

    @property
    def ray_env(self) -> dict[str, str]:
        return {
            "RAY_memory_usage_threshold": f"{self.usage_threshold}",
            "RAY_memory_monitor_refresh_ms": str(self.monitor_refresh_ms),
        }

    def to_json_dict(self) -> dict[str, object]:
        data = asdict(self)
        data["warnings"] = list(self.warnings)
        data["ray_start_args"] = self.ray_start_args
        data["ray_env"] = self.ray_env
        return data


def _worker_cpus(cpu_limit: float | None, host_cpus: int) -> tuple[int, list[str]]:
    if cpu_limit is None:
        return host_cpus, [f"no CPU limit found; Ray gets num-cpus={host_cpus} from the host"]
    cpus = max(1, math.ceil(cpu_limit - 1e-9))
    warnings = []
    if cpus != cpu_limit:
        warnings.append(f"CPU limit {cpu_limit:g} is not a whole number; Ray gets num-cpus={cpus}")
    return cpus, warnings


def make_plan(role: str, facts: NodeFacts, settings: BudgetSettings = BudgetSettings(),
              host_cpus: int = 1) -> MemoryPlan:
    if role not in ROLES:
        raise InvalidSetting("role", role, "must be 'head' or 'worker'")
    limit = facts.limit_bytes
    warnings: list[str] = []
    if limit < MIN_LIMIT_BYTES[role]:
        raise ImpossiblePlan(
            f"memory limit {format_bytes(limit)} is below the {format_bytes(MIN_LIMIT_BYTES[role])}"
            f" a Ray {role} needs to start; raise the {role}'s memory limit"
        )

    object_store = _object_store_bytes(limit, facts.shm_free_bytes, settings, warnings)
    redis_max = _redis_bytes(limit, settings) if role == HEAD and not settings.external_redis else 0
    remaining = limit - object_store - redis_max
    heap = int(remaining * settings.heap_fraction)
    if heap < MIN_HEAP_BYTES:
        raise ImpossiblePlan(
            f"heap would be {format_bytes(max(heap, 0))}, below the {format_bytes(MIN_HEAP_BYTES)}"
            f" minimum (limit {format_bytes(limit)} - object store {format_bytes(object_store)}"
            f" - redis {format_bytes(redis_max)}, x heap fraction {settings.heap_fraction});"
            " raise the memory limit or lower the object store or redis share"
        )

    if settings.num_cpus is not None:
        num_cpus = settings.num_cpus
    elif role == HEAD:
        num_cpus = 0
    else:
        num_cpus, cpu_warnings = _worker_cpus(facts.cpu_limit, host_cpus)
        warnings.extend(cpu_warnings)
    if facts.limit_source == "host":
        warnings.append("no memory limit was found: the plan is sized from the host's memory")

    guard_mode, guard_threshold = _guard(facts.ray_sees_limit, settings)
    return MemoryPlan(
        role=role, limit_bytes=limit, limit_source=facts.limit_source, num_cpus=num_cpus,
        object_store_bytes=object_store, redis_max_bytes=redis_max, heap_bytes=heap,
        usage_threshold=settings.usage_threshold, monitor_refresh_ms=settings.monitor_refresh_ms,
        guard_refresh_ms=settings.guard_refresh_ms, guard_threshold=guard_threshold,
        guard_mode=guard_mode, warnings=tuple(warnings),
        guard_min_refresh_ms=min(settings.guard_min_refresh_ms, settings.guard_refresh_ms or 1),
    )


def _redis_bytes(limit: int, settings: BudgetSettings) -> int:
    by_fraction = int(limit * settings.redis_fraction)
    redis_max = min(by_fraction, settings.redis_max_bytes)
    if redis_max < MIN_REDIS_BYTES:
        capped = settings.redis_max_bytes < by_fraction
        knob = ("redisMaxBytes (RAYGUARD_REDIS_MAX_BYTES)" if capped
                else "redisFraction (RAYGUARD_REDIS_FRACTION) or the memory limit")
        raise ImpossiblePlan(
            f"the head's Redis would get {format_bytes(redis_max)} (min of redisFraction"
            f" {settings.redis_fraction:g} x limit {format_bytes(limit)} and redisMaxBytes"
            f" {format_bytes(settings.redis_max_bytes)}), below the {format_bytes(MIN_REDIS_BYTES)}"
            f" its reports stream needs (and maxmemory 0 would mean no limit); raise {knob}",
            knob="redis_max_bytes" if capped else "redis_fraction",
        )
    return redis_max


def _object_store_bytes(limit: int, shm_free: int | None, settings: BudgetSettings,
                        warnings: list[str]) -> int:
    if settings.object_store_bytes is not None:
        wanted = settings.object_store_bytes
        if wanted >= limit:
            raise ImpossiblePlan(
                f"object store {format_bytes(wanted)} does not fit in the memory limit"
                f" {format_bytes(limit)}; lower objectStoreBytes or raise the limit"
            )
    else:
        wanted = min(int(limit * settings.object_store_fraction), settings.object_store_max_bytes)
    # Ray's own rule for a size it picks is 95% of the free /dev/shm. A size that was
    # given explicitly (the operator sizes /dev/shm to exactly that) only has to fit.
    usable = None
    if shm_free is not None:
        usable = shm_free if settings.object_store_bytes is not None else int(shm_free * SHM_USABLE_FRACTION)
    size = wanted
    if usable is not None and wanted > usable:
        size = usable
        warnings.append(
            f"object store shrunk from {format_bytes(wanted)} to {format_bytes(size)} to fit"
            f" the {format_bytes(shm_free or 0)} free in /dev/shm; size /dev/shm to the object store"
        )
    if size < MIN_OBJECT_STORE_BYTES:
        if size < wanted:
            fix = "/dev/shm"
        elif settings.object_store_bytes is not None:
            fix = "objectStoreBytes"
        else:
            fix = "the memory limit or objectStoreFraction"
        raise ImpossiblePlan(
            f"object store would be {format_bytes(size)}, below Ray's minimum of"
            f" {format_bytes(MIN_OBJECT_STORE_BYTES)}; raise {fix}"
        )
    return size


def _guard(ray_sees_limit: bool, settings: BudgetSettings) -> tuple[str, float]:
    """Primary when Ray is blind to the limit (or its monitor is off); else a backstop.

    As a backstop the guard sits halfway between Ray's threshold and the limit, so Ray's
    own typed OutOfMemoryError still wins the normal case.
    """
    ray_monitor_on = settings.monitor_refresh_ms > 0
    if settings.guard_refresh_ms == 0:
        mode = "disabled"
    else:
        mode = "backstop" if ray_sees_limit and ray_monitor_on else "primary"
    if settings.guard_threshold is not None:
        return mode, settings.guard_threshold
    if mode == "backstop":
        return mode, round((1 + settings.usage_threshold) / 2, 6)
    return mode, settings.usage_threshold

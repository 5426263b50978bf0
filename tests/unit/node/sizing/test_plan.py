"""The memory budget: make_plan's formulas, guard modes, outputs and every error path."""

from __future__ import annotations

import json

import pytest

from rayguard_node.errors import ImpossiblePlan, InvalidSetting
from rayguard_node.sizing.plan import BudgetSettings, NodeFacts, make_plan

MiB, GiB = 1024**2, 1024**3


def plan(role="worker", limit=4 * GiB, source="cgroup2", cpu=2.0, shm=None, sees=False,
         host_cpus=1, **settings):
    facts = NodeFacts(limit, source, cpu, shm, sees)
    return make_plan(role, facts, BudgetSettings(**settings), host_cpus)


# role, limit, shm free, settings -> object store, redis, heap (hand-computed from the seeds)
BUDGET_TABLE = [
    ("worker", 4 * GiB, None, {}, 1288490188, 0, 1503238554),
    ("head", 4 * GiB, None, {}, 1288490188, 1288490188, 858993460),
    ("worker", 4 * GiB, 8 * GiB, {}, 1288490188, 0, 1503238554),  # shm big enough: no cap
    # 100 GiB hits the caps: 20 GiB object store, 10 GiB redis.
    ("head", 100 * GiB, None, {}, 20 * GiB, 10 * GiB, 37580963840),
    ("worker", 100 * GiB, None, {}, 20 * GiB, 0, 40 * GiB),
    # 95% of 1 GiB free in /dev/shm.
    ("worker", 4 * GiB, 1 * GiB, {}, 1020054732, 0, 1637456282),
    ("head", 2 * GiB, None, {"heap_fraction": 0.8}, 644245094, 644245094, 687194768),
    ("worker", 2 * GiB, None, {"object_store_bytes": 512 * MiB}, 512 * MiB, 0, 805306368),
    ("worker", 4 * GiB, None, {"object_store_fraction": 0.1}, 429496729, 0, 1932735283),
    ("worker", 4 * GiB, None, {"object_store_max_bytes": 1 * GiB}, 1 * GiB, 0, 1610612736),
    ("head", 4 * GiB, None, {"redis_fraction": 0.1, "redis_max_bytes": 256 * MiB},
     1288490188, 256 * MiB, 1369020826),
    # The smallest limits each role accepts.
    ("worker", 384 * MiB, None, {}, 120795955, 0, 140928614),
    ("head", 768 * MiB, None, {}, 241591910, 241591910, 161061274),
]


@pytest.mark.parametrize("role, limit, shm, settings, object_store, redis, heap", BUDGET_TABLE)
def test_budget(role, limit, shm, settings, object_store, redis, heap):
    p = plan(role, limit, shm=shm, **settings)
    assert (p.role, p.limit_bytes) == (role, limit)
    assert (p.object_store_bytes, p.redis_max_bytes, p.heap_bytes) == (object_store, redis, heap)


def test_shm_cap_warns():
    p = plan("worker", 4 * GiB, shm=1 * GiB)
    assert len(p.warnings) == 1
    assert p.warnings[0].startswith("object store shrunk from 1.20 GiB to 973 MiB to fit ")
    assert "1.00 GiB free in /dev/shm" in p.warnings[0]


@pytest.mark.parametrize("shm, object_store, warned", [
    (None, 1 * GiB, False),
    (2 * GiB, 1 * GiB, False),
    (1 * GiB, 1 * GiB, False),       # an explicit size only has to fit, not fit in 95%
    (512 * MiB, 512 * MiB, True),
])
def test_explicit_object_store_against_shm(shm, object_store, warned):
    p = plan("worker", 4 * GiB, shm=shm, object_store_bytes=1 * GiB)
    assert p.object_store_bytes == object_store
    assert p.heap_bytes == (4 * GiB - object_store) // 2
    assert bool(p.warnings) is warned


@pytest.mark.parametrize("role, cpu, host_cpus, num_cpus, expected, warnings", [
    ("head", None, 8, None, 0, ()),
    ("head", 4.0, 8, None, 0, ()),
    ("head", 4.0, 8, 2, 2, ()),
    ("worker", 2.0, 8, None, 2, ()),
    ("worker", 1.5, 8, None, 2, ("CPU limit 1.5 is not a whole number; Ray gets num-cpus=2",)),
    ("worker", 0.5, 8, None, 1, ("CPU limit 0.5 is not a whole number; Ray gets num-cpus=1",)),
    ("worker", 0.1, 8, None, 1, ("CPU limit 0.1 is not a whole number; Ray gets num-cpus=1",)),
    ("worker", None, 8, None, 8, ("no CPU limit found; Ray gets num-cpus=8 from the host",)),
    ("worker", 1.5, 8, 3, 3, ()),
    ("worker", 4.0, 8, 0, 0, ()),
])
def test_num_cpus(role, cpu, host_cpus, num_cpus, expected, warnings):
    p = plan(role, cpu=cpu, host_cpus=host_cpus, num_cpus=num_cpus)
    assert p.num_cpus == expected
    assert p.warnings == warnings


def test_host_limit_source_warns():
    p = plan("worker", 16 * GiB, source="host", cpu=2.0)
    assert p.limit_source == "host"
    assert p.warnings == ("no memory limit was found: the plan is sized from the host's memory",)


@pytest.mark.parametrize("sees, settings, mode, threshold", [
    (False, {}, "primary", 0.95),                         # Ray is blind: the guard is primary
    (True, {}, "backstop", 0.975),                        # (1 + 0.95) / 2
    (True, {"usage_threshold": 0.9}, "backstop", 0.95),
    (True, {"usage_threshold": 0.8}, "backstop", 0.9),
    (False, {"usage_threshold": 0.8}, "primary", 0.8),
    (True, {"monitor_refresh_ms": 0}, "primary", 0.95),  # Ray's monitor is off
    (False, {"guard_refresh_ms": 0}, "disabled", 0.95),
    (True, {"guard_refresh_ms": 0}, "disabled", 0.95),
    (True, {"guard_threshold": 0.99}, "backstop", 0.99),  # explicit wins
    (False, {"guard_threshold": 0.9}, "primary", 0.9),
    (True, {"usage_threshold": 1.0}, "backstop", 1.0),
])
def test_guard(sees, settings, mode, threshold):
    p = plan(sees=sees, **settings)
    assert (p.guard_mode, p.guard_threshold) == (mode, threshold)
    assert p.guard_refresh_ms == settings.get("guard_refresh_ms", 50)


def test_defaults_are_the_seeds():
    s = BudgetSettings()
    assert (s.object_store_fraction, s.object_store_max_bytes, s.redis_fraction, s.redis_max_bytes,
            s.heap_fraction, s.usage_threshold, s.monitor_refresh_ms, s.guard_refresh_ms,
            s.guard_threshold, s.num_cpus) == (0.3, 20 * GiB, 0.3, 10 * GiB, 0.5, 0.95, 250, 50,
                                               None, None)


def test_ray_start_args_and_env():
    p = plan("worker", 4 * GiB, cpu=2.0)
    assert p.ray_start_args == ["--num-cpus=2", "--memory=1503238554", "--object-store-memory=1288490188"]
    assert p.ray_env == {"RAY_memory_usage_threshold": "0.95", "RAY_memory_monitor_refresh_ms": "250"}
    head = plan("head", 4 * GiB, usage_threshold=0.9, monitor_refresh_ms=0)
    assert head.ray_start_args == ["--num-cpus=0", "--memory=858993460", "--object-store-memory=1288490188"]
    assert head.ray_env == {"RAY_memory_usage_threshold": "0.9", "RAY_memory_monitor_refresh_ms": "0"}


def test_to_json_dict():
    data = plan("head", 4 * GiB, cpu=None, shm=1 * GiB, sees=True).to_json_dict()
    assert set(data) == {"role", "limit_bytes", "limit_source", "num_cpus", "object_store_bytes",
                         "redis_max_bytes", "heap_bytes", "usage_threshold", "monitor_refresh_ms",
                         "ray_start_args", "ray_env", "warnings", "guard_refresh_ms",
                         "guard_threshold", "guard_mode", "guard_min_refresh_ms"}
    assert data["guard_min_refresh_ms"] == 2

    assert data == json.loads(json.dumps(data))
    assert data["role"] == "head" and data["limit_bytes"] == 4 * GiB
    assert data["limit_source"] == "cgroup2" and data["num_cpus"] == 0
    assert (data["object_store_bytes"], data["redis_max_bytes"], data["heap_bytes"]) == (
        1020054732, 1288490188, 993211188)
    assert (data["guard_mode"], data["guard_threshold"], data["guard_refresh_ms"]) == ("backstop", 0.975, 50)
    assert data["ray_start_args"] == ["--num-cpus=0", "--memory=993211188", "--object-store-memory=1020054732"]
    assert isinstance(data["warnings"], list) and len(data["warnings"]) == 1


# --- impossible plans: each message says the number and what to raise ---------------------

@pytest.mark.parametrize("kwargs, message", [
    ({"role": "worker", "limit": 384 * MiB - 1},
     "memory limit 384 MiB is below the 384 MiB a Ray worker needs to start; raise the worker's memory limit"),
    ({"role": "worker", "limit": 200 * MiB},
     "memory limit 200 MiB is below the 384 MiB a Ray worker needs to start; raise the worker's memory limit"),
    ({"role": "head", "limit": 767 * MiB},
     "memory limit 767 MiB is below the 768 MiB a Ray head needs to start; raise the head's memory limit"),
    ({"role": "head", "limit": 0},
     "memory limit 0 B is below the 768 MiB a Ray head needs to start; raise the head's memory limit"),
    # /dev/shm too small (Docker's default 64 MiB): 95% of it is 61 MiB.
    ({"role": "worker", "limit": 4 * GiB, "shm": 64 * MiB},
     "object store would be 61 MiB, below Ray's minimum of 75 MiB; raise /dev/shm"),
    # A tiny fraction: 1% of 4 GiB.
    ({"role": "worker", "limit": 4 * GiB, "object_store_fraction": 0.01},
     "object store would be 41 MiB, below Ray's minimum of 75 MiB; raise the memory limit or objectStoreFraction"),
    ({"role": "worker", "limit": 4 * GiB, "object_store_bytes": 4 * GiB},
     "object store 4.00 GiB does not fit in the memory limit 4.00 GiB; lower objectStoreBytes or raise the limit"),
    ({"role": "worker", "limit": 4 * GiB, "object_store_bytes": 5 * GiB},
     "object store 5.00 GiB does not fit in the memory limit 4.00 GiB; lower objectStoreBytes or raise the limit"),
    ({"role": "worker", "limit": 1 * GiB, "heap_fraction": 0.1},
     "heap would be 72 MiB, below the 100 MiB minimum (limit 1.00 GiB - object store 307 MiB - redis 0 B,"
     " x heap fraction 0.1); raise the memory limit or lower the object store or redis share"),
    ({"role": "head", "limit": 1 * GiB, "object_store_bytes": 900 * MiB},
     "heap would be 0 B, below the 100 MiB minimum (limit 1.00 GiB - object store 900 MiB - redis 307 MiB,"
     " x heap fraction 0.5); raise the memory limit or lower the object store or redis share"),
])
def test_impossible_plans(kwargs, message):
    with pytest.raises(ImpossiblePlan) as caught:
        plan(**kwargs)
    assert str(caught.value) == message


def test_explicit_object_store_below_minimum_names_object_store_bytes():
    with pytest.raises(ImpossiblePlan) as caught:
        plan("worker", 4 * GiB, object_store_bytes=50 * MiB)
    assert str(caught.value) == ("object store would be 50 MiB, below Ray's minimum of 75 MiB;"
                                 " raise objectStoreBytes")


@pytest.mark.parametrize("field, value, why", [
    *[(name, value, "a fraction must be between 0 and 1, exclusive")
      for name in ("object_store_fraction", "redis_fraction", "heap_fraction")
      for value in (0, 1, -0.5, 1.5)],
    ("usage_threshold", 0, "must be in (0, 1]"),
    ("usage_threshold", 1.01, "must be in (0, 1]"),
    ("usage_threshold", -0.5, "must be in (0, 1]"),
    ("guard_threshold", 0, "must be in (0, 1]"),
    ("guard_threshold", 1.5, "must be in (0, 1]"),
    ("monitor_refresh_ms", -1, "must not be negative"),
    ("guard_refresh_ms", -50, "must not be negative"),
    ("object_store_max_bytes", -1, "must not be negative"),
    ("redis_max_bytes", -1, "must not be negative"),
    ("object_store_bytes", 0, "must be positive"),
    ("object_store_bytes", -5, "must be positive"),
    ("num_cpus", -1, "must not be negative"),
])
def test_invalid_settings(field, value, why):
    with pytest.raises(InvalidSetting) as caught:
        BudgetSettings(**{field: value})
    assert caught.value.field == field
    assert str(caught.value) == f"invalid {field}={value!r}: {why}"


@pytest.mark.parametrize("field, value", [("usage_threshold", 1), ("guard_threshold", 1),
                                          ("monitor_refresh_ms", 0), ("guard_refresh_ms", 0),
                                          ("num_cpus", 0), ("heap_fraction", 0.99)])
def test_boundary_settings_accepted(field, value):
    assert getattr(BudgetSettings(**{field: value}), field) == value


@pytest.mark.parametrize("role", ["boss", "", "Head", "workers"])
def test_unknown_role(role):
    with pytest.raises(InvalidSetting) as caught:
        plan(role)
    assert str(caught.value) == f"invalid role={role!r}: must be 'head' or 'worker'"


# -- the head's Redis always has a real cap -------------------------------------------

def test_redis_minimum_is_stated():
    from rayguard_node.sizing.plan import MIN_REDIS_BYTES
    assert MIN_REDIS_BYTES == 32 * MiB


@pytest.mark.parametrize("settings, knob", [
    ({"redis_max_bytes": 0}, "redisMaxBytes"),
    ({"redis_max_bytes": 1}, "redisMaxBytes"),
    ({"redis_max_bytes": 32 * MiB - 1}, "redisMaxBytes"),
    ({"redis_fraction": 1e-12}, "redisFraction"),
    ({"redis_fraction": 0.001}, "redisFraction"),
])
def test_head_redis_below_the_minimum_is_impossible(settings, knob):
    with pytest.raises(ImpossiblePlan) as caught:
        plan("head", 4 * GiB, **settings)
    message = str(caught.value)
    assert knob in message and "32 MiB" in message and "\n" not in message


def test_head_redis_at_the_minimum_and_workers_without_redis():
    assert plan("head", 4 * GiB, redis_max_bytes=32 * MiB).redis_max_bytes == 32 * MiB
    assert plan("worker", 4 * GiB, redis_max_bytes=0).redis_max_bytes == 0


@pytest.mark.parametrize("field", ["object_store_fraction", "redis_fraction", "heap_fraction",
                                   "usage_threshold", "guard_threshold"])
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_nan_and_inf_settings_are_refused(field, value):
    with pytest.raises(InvalidSetting):
        BudgetSettings(**{field: value})


def test_guard_min_refresh_is_checked_and_never_above_the_period():
    with pytest.raises(InvalidSetting, match="guard_min_refresh_ms"):
        BudgetSettings(guard_min_refresh_ms=0)
    assert plan("worker", 4 * GiB, guard_refresh_ms=1).guard_min_refresh_ms == 1
    assert plan("worker", 4 * GiB, guard_refresh_ms=50, guard_min_refresh_ms=50).guard_min_refresh_ms == 50

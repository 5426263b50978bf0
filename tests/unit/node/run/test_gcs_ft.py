"""The runtime's side of GCS fault tolerance: settings, Ray's command line and environment,
the plan, and the key prefix (rayguard_node.contract.gcs)."""

from __future__ import annotations

from pathlib import Path

import pytest

from rayguard_node.contract.gcs import key_prefix, match_pattern
from rayguard_node.errors import InvalidSetting
from rayguard_node.run.config import run_config
from rayguard_node.run.ray_command import loggable_argv, ray_environment, ray_start_argv
from rayguard_node.sizing.facts import budget_settings
from rayguard_node.sizing.plan import HEAD, WORKER, NodeFacts, make_plan

GiB = 1024**3
FT = {"gcs_redis_address": "redis.example:6379", "gcs_redis_password": "pw-123",
      "gcs_redis_username": "ray", "gcs_storage_namespace": "ns-1"}
PLAN = make_plan(HEAD, NodeFacts(4 * GiB, "cgroup2"))


def test_the_head_starts_ray_on_the_external_redis() -> None:
    config = run_config({"role": HEAD, **FT})
    argv = ray_start_argv(config, PLAN)
    assert "--redis-password=pw-123" in argv and "--redis-username=ray" in argv
    assert "--redis-password=<hidden>" in loggable_argv(argv) and "pw-123" not in " ".join(loggable_argv(argv))
    base = {"RAYGUARD_GCS_REDIS_PASSWORD": "pw-123", "RAYGUARD_GCS_REDIS_USERNAME": "ray", "PATH": "/bin"}
    env = ray_environment(PLAN, Path("/t"), base, gcs=config.gcs, head=True)
    assert env["RAY_REDIS_ADDRESS"] == "redis.example:6379"
    assert env["RAY_external_storage_namespace"] == "ns-1"
    assert "pw-123" not in env.values() and "RAYGUARD_GCS_REDIS_USERNAME" not in env


def test_a_worker_gets_no_redis_flags_and_no_gcs_env() -> None:
    config = run_config({"role": WORKER, "head_address": "h:6379", **FT})
    assert not [a for a in ray_start_argv(config, PLAN) if a.startswith("--redis")]
    env = ray_environment(PLAN, Path("/t"), {"RAYGUARD_GCS_REDIS_PASSWORD": "pw-123"}, gcs=config.gcs)
    assert "RAY_REDIS_ADDRESS" not in env and "pw-123" not in env.values()


@pytest.mark.parametrize("values", [
    {"gcs_redis_address": "nohost"}, {"gcs_redis_address": "r:6379"},
    {"gcs_redis_address": "r:6379", "gcs_storage_namespace": "a@b"},
    {**FT, "redis_url": "redis://r:6379/0"}])
def test_what_cannot_work_is_refused(values: dict[str, str]) -> None:
    with pytest.raises(InvalidSetting) as caught:
        run_config({"role": HEAD, **values})
    assert "pw-123" not in str(caught.value)


def test_the_plan_gives_the_redis_share_to_the_heap() -> None:
    facts = NodeFacts(4 * GiB, "cgroup2")
    own = make_plan(HEAD, facts, budget_settings({}))
    external = make_plan(HEAD, facts, budget_settings({"gcs_redis_address": "r:6379"}))
    assert external.redis_max_bytes == 0 < own.redis_max_bytes
    assert external.heap_bytes > own.heap_bytes


def test_the_prefix_is_rays_and_the_pattern_matches_only_it() -> None:
    assert key_prefix("ns") == "RAYns@"
    assert match_pattern("a*b[1]") == "RAYa\\*b\\[1\\]@*"

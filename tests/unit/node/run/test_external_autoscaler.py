"""RAYGUARD_EXTERNAL_AUTOSCALER: parsed strictly; an autoscaled head starts Ray with `--no-monitor`
(the sidecar runs Ray's autoscaler), and nothing else changes."""

from __future__ import annotations

import argparse

import pytest

from rayguard_node.contract import settings as contract
from rayguard_node.errors import InvalidSetting
from rayguard_node.run.config import run_config
from rayguard_node.run.options import RUN_OPTIONS, resolve
from rayguard_node.run.ray_command import ray_start_argv
from rayguard_node.sizing.plan import HEAD, WORKER, MemoryPlan

GiB = 1 << 30


def plan(role: str) -> MemoryPlan:
    return MemoryPlan(role, 4 * GiB, "cgroup2", 0, GiB, GiB if role == HEAD else 0, GiB, 0.95, 250,
                      50, 0.975, "backstop")


def config(role: str = HEAD, flag: str | None = None, **env: str):
    args = argparse.Namespace(external_autoscaler=flag)
    extra = {"head_address": "demo-head:6379"} if role == WORKER else {}
    return run_config({"role": role, **extra, **resolve(RUN_OPTIONS, args, env)})


def test_off_by_default() -> None:
    assert config().external_autoscaler is False
    assert "--no-monitor" not in ray_start_argv(config(), plan(HEAD))


@pytest.mark.parametrize("value, expected", [("true", True), ("TRUE", True), ("1", True),
                                             ("false", False), ("0", False)])
def test_env_on_or_off(value: str, expected: bool) -> None:
    head = config(RAYGUARD_EXTERNAL_AUTOSCALER=value)
    assert head.external_autoscaler is expected
    assert ("--no-monitor" in ray_start_argv(head, plan(HEAD))) is expected


def test_the_flag_wins_over_the_env() -> None:
    assert config(flag="false", RAYGUARD_EXTERNAL_AUTOSCALER="true").external_autoscaler is False


@pytest.mark.parametrize("value", ["yes", "on", "2", "enabled"])
def test_anything_else_is_refused_naming_the_variable(value: str) -> None:
    with pytest.raises(InvalidSetting, match="RAYGUARD_EXTERNAL_AUTOSCALER.*must be true or false"):
        config(RAYGUARD_EXTERNAL_AUTOSCALER=value)


def test_the_head_argv_gains_exactly_no_monitor() -> None:
    plain = ray_start_argv(config(), plan(HEAD))
    autoscaled = ray_start_argv(config(RAYGUARD_EXTERNAL_AUTOSCALER="true"), plan(HEAD))
    assert sorted(autoscaled) == sorted(plain + ["--no-monitor"])
    assert autoscaled.index("--no-monitor") > autoscaled.index("--head")


def test_a_worker_has_no_monitor_to_turn_off() -> None:
    worker = config(WORKER, RAYGUARD_EXTERNAL_AUTOSCALER="true")
    assert "--no-monitor" not in ray_start_argv(worker, plan(WORKER))


def test_the_contract_names_it_once() -> None:
    assert contract.EXTERNAL_AUTOSCALER.env == "RAYGUARD_EXTERNAL_AUTOSCALER"
    assert contract.EXTERNAL_AUTOSCALER in contract.OPERATOR_SET
    assert contract.AUTOSCALER_SETTINGS == (contract.EXTERNAL_AUTOSCALER,)


def test_ray_260_has_the_flag() -> None:
    # hidden from `ray start --help`, so its parser is asked directly
    from ray.scripts.scripts import start

    assert "--no-monitor" in {opt for param in start.params for opt in param.opts}

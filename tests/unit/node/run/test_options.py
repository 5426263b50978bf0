"""Parsing of `rayguard-node` settings: strict numbers, each refusal naming flag or env var."""

from __future__ import annotations

import argparse

import pytest

from rayguard_node.errors import InvalidSetting
from rayguard_node.run.options import BUDGET_OPTIONS, ROLE_OPTION, RUN_OPTIONS, resolve

OPTIONS = (ROLE_OPTION,) + RUN_OPTIONS + BUDGET_OPTIONS


def resolve_env(**env):
    return resolve(OPTIONS, argparse.Namespace(), env)


def refusal(**env) -> InvalidSetting:
    with pytest.raises(InvalidSetting) as caught:
        resolve_env(**env)
    assert "\n" not in str(caught.value)
    return caught.value


@pytest.mark.parametrize("env", ["RAYGUARD_GRACE_SECONDS", "RAYGUARD_FLUSH_PERIOD_SECS",
                                 "RAYGUARD_HEAP_FRACTION", "RAYGUARD_USAGE_THRESHOLD",
                                 "RAYGUARD_GUARD_THRESHOLD", "RAYGUARD_REDIS_FRACTION"])
@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-inf", "Infinity", "1e400", "1_0",
                                   " 5", "+5", "0x10", "٥", "", "5 "])
def test_floats_must_be_finite_plain_numbers(env, value):
    if value == "":
        assert resolve_env(**{env: value}) == {}  # empty means unset
        return
    assert refusal(**{env: value}).field == env


@pytest.mark.parametrize("value, expected", [("0.5", 0.5), ("25", 25.0), (".5", 0.5), ("1e1", 10.0),
                                             ("-2", -2.0), ("2.", 2.0)])
def test_plain_floats(value, expected):
    assert resolve_env(RAYGUARD_GRACE_SECONDS=value)["grace_seconds"] == expected


@pytest.mark.parametrize("env", ["RAYGUARD_REDIS_PORT", "RAYGUARD_MONITOR_REFRESH_MS",
                                 "RAYGUARD_NUM_CPUS", "RAYGUARD_FLUSH_NUM_ENTRIES_EACH_TIME"])
@pytest.mark.parametrize("value", ["1_000", " 5", "+5", "٥", "5.0", "1e3", "9" * 5000,
                                   str(2**31)])
def test_whole_numbers_are_plain_and_bounded(env, value):
    assert refusal(**{env: value}).field == env


@pytest.mark.parametrize("env", ["RAYGUARD_LIMIT_BYTES", "RAYGUARD_SHM_BYTES",
                                 "RAYGUARD_REDIS_MAX_BYTES", "RAYGUARD_FLUSH_WHEN_AT_LEAST_BYTES"])
@pytest.mark.parametrize("value", ["1e400", "+4Gi", "2_000Mi", " 4Gi", "4Gi ", "٤Gi", "4K", "nan"])
def test_byte_quantities_follow_the_kubernetes_grammar(env, value):
    assert refusal(**{env: value}).field == env


@pytest.mark.parametrize("value", ["[" * 100000, '{"a": ' * 100000])
def test_deeply_nested_json_is_one_refusal(value):
    assert refusal(RAYGUARD_RAY_START_PARAMS=value).field == "RAYGUARD_RAY_START_PARAMS"


def test_json_nan_values_are_refused_by_run_config():
    from rayguard_node.run.config import run_config

    values = resolve_env(RAYGUARD_ROLE="head", RAYGUARD_RAY_START_PARAMS='{"object-spilling-threshold": NaN}')
    with pytest.raises(InvalidSetting):
        run_config(values)


@pytest.mark.parametrize("value", ['{"redis-password": "hunter2",}', '["token", "hunter2"]'])
def test_unparsable_params_with_a_secret_are_not_echoed(value):
    assert "hunter2" not in str(refusal(RAYGUARD_RAY_START_PARAMS=value))

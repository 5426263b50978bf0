"""rayStartParams keys: one canonical spelling per `ray start` flag, and one set of refusals
that the runtime (`run_config`) and the operator (`spec.model`) share word for word."""

from __future__ import annotations

import pytest

from rayguard_node.contract.ray_flags import (
    OWNED_FLAGS,
    flag_key_problems,
    normalize_flag,
    secret_looking,
)
from rayguard_node.errors import InvalidSetting
from rayguard_node.run.config import run_config
from rayguard_operator.errors import SpecError
from rayguard_operator.spec.model import RESERVED_RAY_FLAGS, _ray_start_params


@pytest.mark.parametrize("key, flag", [
    ("num-cpus", "num-cpus"),
    ("--num-cpus", "num-cpus"),
    ("-num-cpus", "num-cpus"),
    ("NUM-CPUS", "num-cpus"),
    ("num_cpus", "num-cpus"),
    ("--Num_Cpus", "num-cpus"),
    ("Object_Store_Memory", "object-store-memory"),
    ("dashboard-port", "dashboard-port"),
])
def test_normalize_flag_is_the_name_ray_declares(key, flag):
    assert normalize_flag(key) == flag


SMUGGLED = ["temp-dir=/tmp/evil", "address=evil:6379", "num-cpus=64", "NUM-CPUS", "num_cpus",
            "--Num_Cpus", "Temp_Dir", "--HEAD", "BLOCK", "object_store_memory", "Memory"]
MALFORMED = ["", "-", "---", "dashboard port", "dashboard-port\n", "node-name\r", "x\ty",
             "=", "port=1", " num-cpus", "num-cpus ", "nodé-name", "a.b", "a/b"]


@pytest.mark.parametrize("key", SMUGGLED)
def test_owned_flags_are_refused_in_any_spelling(key):
    assert [k for k, _ in flag_key_problems({key: "1"}, OWNED_FLAGS)] == [key]


@pytest.mark.parametrize("key", MALFORMED)
def test_malformed_keys_are_refused(key):
    (found, why), = flag_key_problems({key: "1"}, frozenset())
    assert found == key and ("flag name" in why)


def test_a_flag_given_twice_in_two_spellings_is_refused():
    problems = flag_key_problems({"num-gpus": 1, "NUM_GPUS": 2}, OWNED_FLAGS)
    assert len(problems) == 1 and problems[0][0] == "NUM_GPUS" and "'num-gpus'" in problems[0][1]


def test_non_string_keys_are_refused():
    (found, why), = flag_key_problems({7: "x"}, OWNED_FLAGS)
    assert found == 7 and "string" in why


def test_ordinary_keys_pass():
    assert flag_key_problems({"dashboard-port": 1, "--min-worker-port": 2, "node_name": "n",
                              "Include-Dashboard": True}, OWNED_FLAGS) == []


@pytest.mark.parametrize("key", SMUGGLED + MALFORMED)
def test_runtime_and_operator_refuse_the_same_keys_with_the_same_words(key):
    with pytest.raises(InvalidSetting) as node:
        run_config({"role": "head", "ray_start_params": {key: "1"}})
    with pytest.raises(SpecError) as operator:
        _ray_start_params({key: "1"}, "spec.head.rayStartParams")
    why = dict(flag_key_problems({key: "1"}, RESERVED_RAY_FLAGS))[key]
    assert str(node.value).endswith(why) and str(operator.value).endswith(why)
    assert "\n" not in str(node.value) and "\n" not in str(operator.value)


@pytest.mark.parametrize("key, secret", [
    ("redis-password", True), ("Redis_Password", True), ("auth-token", True),
    ("some-secret", True), ("api-key", True), ("cloud-credentials", True),
    ("dashboard-port", False), ("node-name", False), ("labels", False),
])
def test_secret_looking(key, secret):
    assert secret_looking(key) is secret

"""The `ray start` command line and environment built from a plan and a run config."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from rayguard_node.errors import InvalidSetting
from rayguard_node.run.options import RUN_OPTIONS, resolve
from rayguard_node.sizing.plan import HEAD, WORKER, MemoryPlan
from rayguard_node.run.ray_command import ray_environment, ray_start_argv, render_params
from rayguard_node.run.config import run_config

MiB, GiB = 1024**2, 1024**3


def make_plan(role=WORKER, cpus=2, store=1288490188, redis=0, heap=1503238554,
              threshold=0.95, refresh=250):
    return MemoryPlan(role, 4 * GiB, "cgroup2", cpus, store, redis, heap, threshold, refresh,
                      50, 0.975, "backstop")


def head_config(**values):
    return run_config({"role": HEAD, **values})


def worker_config(**values):
    return run_config({"role": WORKER, "head_address": "demo-head:6379", **values})


# -- render_params --------------------------------------------------------------------

@pytest.mark.parametrize("params, expected", [
    ({}, []),
    ({"dashboard-port": 8265}, ["--dashboard-port=8265"]),
    ({"node-ip-address": "10.0.0.7"}, ["--node-ip-address=10.0.0.7"]),
    ({"include-dashboard": True}, ["--include-dashboard=true"]),
    ({"include-dashboard": False}, ["--include-dashboard=false"]),
    ({"disable-usage-stats": None}, ["--disable-usage-stats"]),
    ({"--min-worker-port": 10002}, ["--min-worker-port=10002"]),
    ({"-x": 1, "---y": "z"}, ["--x=1", "--y=z"]),
    ({"object-spilling-threshold": 0.8}, ["--object-spilling-threshold=0.8"]),
    ({"resources": '{"gpu_slot": 1}'}, ['--resources={"gpu_slot": 1}']),
    ({"a": 1, "b": None, "c": "x"}, ["--a=1", "--b", "--c=x"]),
])
def test_render_params(params, expected):
    assert render_params(params) == expected


def test_render_params_value_zero_is_not_a_bare_flag():
    assert render_params({"num-gpus": 0, "labels": ""}) == ["--num-gpus=0", "--labels="]


# -- ray_start_argv -------------------------------------------------------------------

def test_head_argv_defaults():
    plan = make_plan(HEAD, cpus=0, redis=1288490188, heap=858993460)
    assert ray_start_argv(head_config(), plan) == [
        "ray", "start", "--block", "--disable-usage-stats", "--head", "--port=6379",
        "--num-cpus=0", "--memory=858993460", "--object-store-memory=1288490188", "--num-gpus=0",
        "--dashboard-host=0.0.0.0",
    ]


def test_head_port_from_params_is_not_repeated():
    argv = ray_start_argv(head_config(ray_start_params={"port": 7000}), make_plan(HEAD, cpus=0))
    assert [a for a in argv if a.startswith("--port")] == ["--port=7000"]


def test_head_dashboard_host_given_wins():
    argv = ray_start_argv(head_config(ray_start_params={"dashboard-host": "127.0.0.1"}),
                          make_plan(HEAD, cpus=0))
    assert [a for a in argv if a.startswith("--dashboard-host")] == ["--dashboard-host=127.0.0.1"]


def test_head_with_temp_dir_and_params():
    config = head_config(ray_temp_dir="/var/lib/ray-tmp",
                         ray_start_params={"dashboard-port": 8265, "include-dashboard": True})
    argv = ray_start_argv(config, make_plan(HEAD, cpus=0), ray_executable="/opt/venv/bin/ray")
    assert argv[0] == "/opt/venv/bin/ray"
    assert argv.count("--temp-dir=/var/lib/ray-tmp") == 1
    assert "--dashboard-port=8265" in argv and "--include-dashboard=true" in argv
    assert "--dashboard-host=0.0.0.0" in argv
    assert {"--head", "--block", "--disable-usage-stats"} <= set(argv)


def test_worker_argv():
    plan = make_plan(WORKER, cpus=2)
    assert ray_start_argv(worker_config(), plan) == [
        "ray", "start", "--block", "--disable-usage-stats", "--address=demo-head:6379",
        "--num-cpus=2", "--memory=1503238554", "--object-store-memory=1288490188",
    ]


def test_worker_argv_never_has_head_flags():
    config = worker_config(ray_temp_dir="/var/lib/ray-tmp",
                           ray_start_params={"min-worker-port": 10002})
    argv = ray_start_argv(config, make_plan())
    assert "--head" not in argv
    assert not any(a.startswith(("--port", "--dashboard-host")) for a in argv)
    assert argv[-2:] == ["--object-store-memory=1288490188", "--min-worker-port=10002"]
    assert "--temp-dir=/var/lib/ray-tmp" in argv


def test_plan_args_are_all_there():
    plan = make_plan(WORKER, cpus=5, store=100 * MiB, heap=200 * MiB)
    argv = ray_start_argv(worker_config(), plan)
    assert set(plan.ray_start_args) <= set(argv)
    assert plan.ray_start_args == ["--num-cpus=5", f"--memory={200 * MiB}",
                                   f"--object-store-memory={100 * MiB}"]


def test_head_port_with_leading_dashes():
    config = head_config(ray_start_params={"--port": 7000})
    argv = ray_start_argv(config, make_plan(HEAD, cpus=0))
    assert [a for a in argv if a.startswith("--port")] == ["--port=7000"]
    assert config.gcs_port == 7000


def test_head_dashboard_host_with_leading_dashes():
    config = head_config(ray_start_params={"--dashboard-host": "127.0.0.1"})
    argv = ray_start_argv(config, make_plan(HEAD, cpus=0))
    assert [a for a in argv if a.startswith("--dashboard-host")] == ["--dashboard-host=127.0.0.1"]


# -- ray_environment ------------------------------------------------------------------

def test_environment_is_ours_and_the_plans():
    base = {"PATH": "/usr/bin", "RAY_AUTH_TOKEN": "someone-elses", "RAY_AUTH_MODE": "disabled",
            "RAY_AUTH_TOKEN_PATH": "/elsewhere", "RAY_memory_usage_threshold": "0.5"}
    env = ray_environment(make_plan(threshold=0.9, refresh=100), Path("/run/secrets/token"), base)
    assert env == {
        "PATH": "/usr/bin",
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": "/run/secrets/token",
        "RAY_memory_usage_threshold": "0.9",
        "RAY_memory_monitor_refresh_ms": "100",
    }
    assert base["RAY_AUTH_TOKEN"] == "someone-elses"  # the caller's mapping is not changed


def test_environment_with_ray_monitor_disabled():
    env = ray_environment(make_plan(refresh=0), Path("tok"), {})
    assert env["RAY_memory_monitor_refresh_ms"] == "0"
    assert env["RAY_memory_usage_threshold"] == "0.95"
    assert "RAY_AUTH_TOKEN" not in env


def test_environment_defaults_to_the_process_environment(monkeypatch):
    monkeypatch.setenv("RAYGUARD_TEST_MARKER", "1")
    monkeypatch.setenv("RAY_AUTH_TOKEN", "leak")
    env = ray_environment(make_plan(), Path("tok"))
    assert env["RAYGUARD_TEST_MARKER"] == "1"
    assert "RAY_AUTH_TOKEN" not in env
    assert env["RAY_AUTH_TOKEN_PATH"] == "tok"


# -- secrets stay out of Ray's environment and out of the log -------------------------

@pytest.mark.parametrize("url, shown", [
    ("redis://:hunter2@r:6379/0", "redis://r:6379/0"),
    ("rediss://user:hunter2@r.example.com:6380/1", "rediss://user@r.example.com:6380/1"),
    ("redis://r:6379/0", "redis://r:6379/0"),
])
def test_redis_url_password_is_not_copied_to_ray(url, shown):
    env = ray_environment(make_plan(), Path("tok"), {"RAYGUARD_REDIS_URL": url})
    assert env["RAYGUARD_REDIS_URL"] == shown
    assert not any("hunter2" in value for value in env.values())


def test_logged_argv_hides_secret_looking_params():
    from rayguard_node.run.ray_command import loggable_argv

    config = head_config(ray_start_params={"redis-password": "hunter2", "Auth_Token": "t0k3n",
                                           "node-name": "n1"})
    argv = ray_start_argv(config, make_plan(HEAD, cpus=0))
    assert "--redis-password=hunter2" in argv  # Ray itself still gets it
    logged = " ".join(loggable_argv(argv))
    assert "hunter2" not in logged and "t0k3n" not in logged
    assert "--redis-password=<hidden>" in logged and "--node-name=n1" in logged


# -- GPUs and custom resources ------------------------------------------------------------

def _flags(argv, name):
    return [a for a in argv if a == f"--{name}" or a.startswith(f"--{name}=")]


def test_worker_gpus_and_resources_reach_ray_start_once():
    environ = {"RAYGUARD_NUM_GPUS": "2", "RAYGUARD_RAY_RESOURCES": '{"TPU": 4, "fpga": 1}',
               "RAYGUARD_RAY_START_PARAMS": '{"num_gpus": 2, "resources": "{\\"disk\\": 3}", "log-style": "record"}'}
    values = resolve(RUN_OPTIONS, argparse.Namespace(), environ)
    argv = ray_start_argv(worker_config(**values), make_plan())
    assert _flags(argv, "num-gpus") == ["--num-gpus=2"]
    [resources] = _flags(argv, "resources")
    assert json.loads(resources.split("=", 1)[1]) == {"TPU": 4, "fpga": 1, "disk": 3}
    assert "--log-style=record" in argv


def test_worker_without_gpu_settings_lets_ray_count():
    argv = ray_start_argv(worker_config(), make_plan())
    assert _flags(argv, "num-gpus") == [] and _flags(argv, "resources") == []


def test_head_takes_no_gpu_tasks_unless_told():
    assert _flags(ray_start_argv(head_config(), make_plan(HEAD, cpus=0)), "num-gpus") == ["--num-gpus=0"]
    assert _flags(ray_start_argv(head_config(num_gpus=1), make_plan(HEAD, cpus=0)), "num-gpus") == ["--num-gpus=1"]
    told = head_config(ray_start_params={"num-gpus": "1"})
    assert _flags(ray_start_argv(told, make_plan(HEAD, cpus=0)), "num-gpus") == ["--num-gpus=1"]


@pytest.mark.parametrize("values, field, word", [
    ({"num_gpus": 1, "ray_start_params": {"num-gpus": 2}}, "rayStartParams.num-gpus", "RAYGUARD_NUM_GPUS (1)"),
    ({"ray_resources": {"fpga": 1}, "ray_start_params": {"resources": '{"fpga": 2}'}},
     "rayStartParams.resources", "RAYGUARD_RAY_RESOURCES (1)"),
    ({"ray_start_params": {"resources": '{"CPU": 2}'}}, "rayStartParams.resources", "Ray sets CPU itself"),
    ({"ray_start_params": {"resources": "not json"}}, "rayStartParams.resources", "not JSON"),
    ({"ray_start_params": {"num-gpus": True}}, "rayStartParams.num-gpus", "whole number"),
    ({"num_gpus": -1}, "RAYGUARD_NUM_GPUS", "negative"),
])
def test_contradicting_or_bad_gpu_settings_are_refused(values, field, word):
    with pytest.raises(InvalidSetting) as caught:
        worker_config(**values)
    assert field in str(caught.value) and word in str(caught.value), str(caught.value)


@pytest.mark.parametrize("text, word", [
    ('{"fpga": 1.5}', "whole number"), ('{"GPU": 1}', "Ray sets GPU"), ('{"node:1.2.3.4": 1}', "resource name"),
    ("[1]", "JSON object"), ('{"fpga": -1}', "from 0"),
])
def test_ray_resources_setting_is_checked_as_ray_would(text, word):
    with pytest.raises(InvalidSetting) as caught:
        resolve(RUN_OPTIONS, argparse.Namespace(), {"RAYGUARD_RAY_RESOURCES": text})
    assert "RAYGUARD_RAY_RESOURCES" in str(caught.value) and word in str(caught.value), str(caught.value)

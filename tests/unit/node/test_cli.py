"""`rayguard-node detect` and `plan` run as a user would: a subprocess on the fake trees."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tests.paths import DATA_DIR

TREES = DATA_DIR / "cgroup"
MiB, GiB = 1024**2, 1024**3
HOST = 16318032 * 1024

DETECT_KEYS = {"source", "cgroup_path", "limit_bytes", "limited_by", "host_total_bytes",
               "usage_bytes", "working_set_bytes", "oom_kill_count", "cpu_limit", "shm_bytes"}
DETECT_EXTRA_KEYS = {"ray_limit_bytes", "ray_sees_limit", "shm_free_bytes", "warnings"}


def roots(tree: str) -> list[str]:
    return ["--sysfs-root", str(TREES / tree / "sys"), "--procfs-root", str(TREES / tree / "proc")]


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items()
               if not k.startswith("RAYGUARD_") and k not in ("POD_NAME", "POD_NAMESPACE")}
    environ.update(env or {})
    return subprocess.run([sys.executable, "-m", "rayguard_node", *args], env=environ,
                          capture_output=True, text=True, timeout=60)


def ok_json(*args: str, env: dict[str, str] | None = None) -> dict:
    result = run(*args, env=env)
    assert (result.returncode, "Traceback" in result.stderr) == (0, False), result.stderr
    return json.loads(result.stdout)


def plan_json(role: str, tree: str, *args: str, env: dict[str, str] | None = None) -> dict:
    # /dev/shm is given, so the plan does not depend on this machine's tmpfs.
    return ok_json("plan", "--role", role, "--json", "--shm-bytes", "8Gi", *roots(tree), *args, env=env)


@pytest.mark.parametrize("tree, expected", [
    ("v2_nested", {"source": "cgroup2", "cgroup_path": "/kubepods.slice/pod1/ctr",
                   "limit_bytes": 2 * GiB, "limited_by": "/kubepods.slice/pod1",
                   "host_total_bytes": HOST, "usage_bytes": 524288000,
                   "working_set_bytes": 419430400, "oom_kill_count": 1, "cpu_limit": 2.0,
                   "ray_limit_bytes": HOST, "ray_sees_limit": False}),
    ("v1_memory_alone", {"source": "cgroup1", "cgroup_path": "/docker/abc",
                         "limit_bytes": 512 * MiB, "limited_by": "/docker/abc",
                         "host_total_bytes": HOST, "usage_bytes": 209715200,
                         "working_set_bytes": 178257920, "oom_kill_count": 4, "cpu_limit": 2.0,
                         "ray_limit_bytes": HOST, "ray_sees_limit": False}),
    ("v2_namespace", {"source": "cgroup2", "cgroup_path": "/", "limit_bytes": 1 * GiB,
                      "limited_by": "/", "host_total_bytes": HOST, "usage_bytes": 314572800,
                      "working_set_bytes": 251658240, "oom_kill_count": 2, "cpu_limit": 1.5,
                      "ray_limit_bytes": 1 * GiB, "ray_sees_limit": True}),
])
def test_detect_json(tree, expected):
    data = ok_json("detect", "--json", *roots(tree))
    assert DETECT_KEYS <= set(data) <= DETECT_KEYS | DETECT_EXTRA_KEYS
    assert {k: data[k] for k in expected} == expected
    assert isinstance(data["warnings"], list)


@pytest.mark.parametrize("tree, lines", [
    ("v2_nested", ["memory limit      2.00 GiB  (cgroup2, set by /kubepods.slice/pod1)",
                   "Ray 2.60 sees     15.56 GiB  (WRONG: Ray reads only the root cgroup file)",
                   "working set       400 MiB  (19.5% of the limit)", "kernel OOM kills  1",
                   "CPU limit         2 cores"]),
    ("v1_memory_alone", ["memory limit      512 MiB  (cgroup1, set by /docker/abc)",
                         "kernel OOM kills  4"]),
    ("v2_unlimited", ["memory limit      15.56 GiB  (host, the host's MemTotal)",
                      "CPU limit         none"]),
])
def test_detect_table(tree, lines):
    result = run("detect", *roots(tree))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Memory seen from this container\n")
    table = [line.strip() for line in result.stdout.splitlines()]
    for line in lines:
        assert line in table


def test_plan_head_json():
    data = plan_json("head", "v2_nested")
    assert (data["role"], data["limit_bytes"], data["limit_source"]) == ("head", 2 * GiB, "cgroup2")
    assert data["num_cpus"] == 0
    assert (data["object_store_bytes"], data["redis_max_bytes"], data["heap_bytes"]) == (
        644245094, 644245094, 429496730)
    assert data["redis_max_bytes"] > 0
    assert data["ray_start_args"] == ["--num-cpus=0", "--memory=429496730",
                                      "--object-store-memory=644245094"]
    assert (data["guard_mode"], data["guard_threshold"]) == ("primary", 0.95)  # Ray is blind here


def test_plan_worker_json():
    data = plan_json("worker", "v2_nested")
    assert (data["role"], data["num_cpus"], data["redis_max_bytes"]) == ("worker", 2, 0)
    assert (data["object_store_bytes"], data["heap_bytes"]) == (644245094, 751619277)
    assert data["ray_env"] == {"RAY_memory_usage_threshold": "0.95", "RAY_memory_monitor_refresh_ms": "250"}


def test_plan_worker_where_ray_sees_the_limit():
    data = plan_json("worker", "v2_namespace")
    assert (data["limit_bytes"], data["num_cpus"]) == (1 * GiB, 2)  # ceil(1.5)
    assert (data["guard_mode"], data["guard_threshold"]) == ("backstop", 0.975)
    assert data["warnings"] == ["CPU limit 1.5 is not a whole number; Ray gets num-cpus=2"]


def test_plan_table():
    result = run("plan", "--role", "head", "--shm-bytes", "8Gi", *roots("v2_nested"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Memory plan for a head\n")
    assert "ray start" in result.stdout and "--memory=429496730" in result.stdout


# Worker on v2_nested: the rest after the object store is 1503238554 bytes.
@pytest.mark.parametrize("args, env, heap", [
    ((), {}, 751619277),
    ((), {"RAYGUARD_HEAP_FRACTION": "0.8"}, 1202590843),
    (("--heap-fraction", "0.2"), {"RAYGUARD_HEAP_FRACTION": "0.8"}, 300647710),  # flag wins
    (("--heap-fraction", "0.2"), {"RAYGUARD_HEAP_FRACTION": "-1"}, 300647710),   # bad env unread
    ((), {"RAYGUARD_HEAP_FRACTION": ""}, 751619277),                              # empty = unset
])
def test_flags_and_env(args, env, heap):
    assert plan_json("worker", "v2_nested", *args, env=env)["heap_bytes"] == heap


def test_role_from_env_and_flag_wins():
    args = ["plan", "--json", "--shm-bytes", "8Gi", *roots("v2_nested")]
    assert ok_json(*args, env={"RAYGUARD_ROLE": "head"})["role"] == "head"
    assert ok_json(*args, "--role", "worker", env={"RAYGUARD_ROLE": "head"})["role"] == "worker"


def test_env_overrides_limit_and_cpus():
    data = plan_json("worker", "v2_nested", env={"RAYGUARD_LIMIT_BYTES": "4Gi", "RAYGUARD_NUM_CPUS": "3"})
    assert (data["limit_bytes"], data["limit_source"], data["num_cpus"]) == (4 * GiB, "override", 3)


def test_limit_override_bypasses_a_broken_tree():
    data = ok_json("plan", "--role", "worker", "--json", "--shm-bytes", "8Gi",
                   "--limit-bytes", "2Gi", *roots("malformed_limit"))
    assert (data["limit_bytes"], data["limit_source"]) == (2 * GiB, "override")
    assert (data["object_store_bytes"], data["heap_bytes"], data["redis_max_bytes"]) == (
        644245094, 751619277, 0)
    path = TREES / "malformed_limit/sys/fs/cgroup/memory.max"
    assert data["warnings"][0] == (f"detection failed (cannot parse {path}: expected an integer, found"
                                   " 'lots of memory' (pass --limit-bytes to bypass detection));"
                                   " using the given limit")


# --- bad input: exit 2, one line on stderr, no traceback --------------------------------

def _fails(args: list[str], env: dict[str, str] | None = None) -> str:
    result = run(*args, env=env)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("rayguard-node: error: ")
    return lines[0]


@pytest.mark.parametrize("command", ["detect", "plan"])
@pytest.mark.parametrize("tree, relative, how", [
    ("malformed_limit", "sys/fs/cgroup/memory.max", "cannot parse"),
    ("empty_limit", "sys/fs/cgroup/memory.max", "cannot parse"),
    ("malformed_stat", "sys/fs/cgroup/memory.stat", "cannot parse"),
    ("malformed_proc_cgroup", "proc/self/cgroup", "cannot parse"),
    ("missing_usage", "sys/fs/cgroup/memory.current", "cannot read"),
])
def test_broken_trees(command, tree, relative, how):
    args = [command, *roots(tree)] + (["--role", "worker", "--shm-bytes", "8Gi"] if command == "plan" else [])
    line = _fails(args)
    assert f"{how} {TREES / tree / relative}" in line


NOT_A_QUANTITY = ("not a Kubernetes quantity: digits with an optional fraction, an optional leading '-'"
                  " and one suffix (Ki Mi Gi Ti Pi Ei, n u m k M G T P E, or e<integer>), e.g. 4Gi, 512M or 2")
FRACTION_ERROR = ("rayguard-node: error: invalid --heap-fraction / RAYGUARD_HEAP_FRACTION=-0.5:"
                  " a fraction must be between 0 and 1, exclusive")


@pytest.mark.parametrize("args, env, expected", [
    (["--role", "worker", "--heap-fraction", "-0.5"], {}, FRACTION_ERROR),
    (["--role", "worker", "--heap-fraction=-0.5"], {}, FRACTION_ERROR),
    (["--role", "worker"], {"RAYGUARD_HEAP_FRACTION": "-0.5"}, FRACTION_ERROR),
    (["--role", "worker"], {"RAYGUARD_HEAP_FRACTION": "half"},
     "rayguard-node: error: invalid RAYGUARD_HEAP_FRACTION='half': expected a plain number such as 0.5"
     " (no nan, inf, '+' or spaces)"),
    (["--role", "boss"], {}, "rayguard-node: error: invalid --role='boss': must be 'head' or 'worker'"),
    ([], {"RAYGUARD_ROLE": "boss"},
     "rayguard-node: error: invalid RAYGUARD_ROLE='boss': must be 'head' or 'worker'"),
    ([], {}, "rayguard-node: error: --role is required (head or worker), or set RAYGUARD_ROLE"),
    (["--role", "head", "--limit-bytes", "lots"], {},
     f"rayguard-node: error: invalid --limit-bytes='lots': {NOT_A_QUANTITY}"),
    (["--role", "head"], {"RAYGUARD_LIMIT_BYTES": "lots"},
     f"rayguard-node: error: invalid RAYGUARD_LIMIT_BYTES='lots': {NOT_A_QUANTITY}"),
    (["--role", "worker", "--num-cpus", "-1"], {},
     "rayguard-node: error: invalid --num-cpus / RAYGUARD_NUM_CPUS=-1: must not be negative"),
    (["--role", "worker", "--limit-bytes", "100Mi"], {},
     "rayguard-node: error: memory limit 100 MiB is below the 384 MiB a Ray worker needs to start;"
     " raise the worker's memory limit"),
])
def test_plan_bad_input(args, env, expected):
    assert _fails(["plan", "--shm-bytes", "8Gi", *roots("v2_nested"), *args], env) == expected


@pytest.mark.parametrize("args, fragment", [
    (["plan", "--role", "head", "--bogus"], "unrecognized arguments: --bogus"),
    (["detect", "--bogus"], "unrecognized arguments: --bogus"),
    (["launch"], "invalid choice: 'launch'"),
    ([], "the following arguments are required: command"),
])
def test_usage_errors(args, fragment):
    assert fragment in _fails(args)


@pytest.mark.parametrize("command", [[], ["detect"], ["plan"], ["run"]])
def test_help_renders_for_every_command(command):
    """argparse formats help text with %: a stray percent sign breaks --help."""
    result = subprocess.run([sys.executable, "-m", "rayguard_node", *command, "--help"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "usage: rayguard-node" in result.stdout

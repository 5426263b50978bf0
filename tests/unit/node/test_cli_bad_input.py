"""Bad input to `rayguard-node detect/plan/run`: exit 2 and one line naming the field, never
a traceback. Each runs before anything is started."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from tests.paths import DATA_DIR

ROOTS = ["--sysfs-root", str(DATA_DIR / "cgroup/v2_nested/sys"),
         "--procfs-root", str(DATA_DIR / "cgroup/v2_nested/proc")]


def refused(*args: str, env: dict[str, str] | None = None) -> str:
    environ = {k: v for k, v in os.environ.items()
               if not k.startswith("RAYGUARD_") and k not in ("POD_NAME", "POD_NAMESPACE")}
    environ.update(env or {})
    result = subprocess.run([sys.executable, "-m", "rayguard_node", *args], env=environ,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rayguard-node: error: "), result.stderr
    return lines[0]


@pytest.mark.parametrize("flag", ["--limit-bytes", "--object-store-bytes", "--object-store-max-bytes",
                                  "--redis-max-bytes", "--shm-bytes"])
@pytest.mark.parametrize("value", ["1e400", "+4Gi", "2_000Mi", "٤Gi", " 4Gi"])
def test_plan_refuses_quantities_the_api_server_would_not_take(flag, value):
    line = refused("plan", "--role", "worker", "--limit-bytes", "4Gi", flag, value, *ROOTS)
    assert flag in line


@pytest.mark.parametrize("knob, value", [("RAYGUARD_REDIS_MAX_BYTES", "0"),
                                         ("RAYGUARD_REDIS_FRACTION", "0.000001")])
def test_plan_refuses_a_head_redis_without_a_real_cap(knob, value):
    line = refused("plan", "--role", "head", "--limit-bytes", "4Gi", "--shm-bytes", "8Gi", *ROOTS,
                   env={knob: value})
    assert "Redis" in line and "32 MiB" in line


@pytest.mark.parametrize("env, field", [
    ({"RAYGUARD_GRACE_SECONDS": "nan"}, "RAYGUARD_GRACE_SECONDS"),
    ({"RAYGUARD_GRACE_SECONDS": "inf"}, "RAYGUARD_GRACE_SECONDS"),
    ({"RAYGUARD_FLUSH_PERIOD_SECS": "nan"}, "RAYGUARD_FLUSH_PERIOD_SECS"),
    ({"RAYGUARD_REDIS_URL": "http://r:6379"}, "RAYGUARD_REDIS_URL"),
    ({"RAYGUARD_REDIS_URL": "redis://:6379"}, "RAYGUARD_REDIS_URL"),
    ({"RAYGUARD_REDIS_URL": "redis://r:port/0"}, "RAYGUARD_REDIS_URL"),
    ({"RAYGUARD_RAY_START_PARAMS": '{"temp-dir=/tmp/evil": "x"}'}, "rayStartParams"),
    ({"RAYGUARD_RAY_START_PARAMS": '{"NUM-CPUS": 64}'}, "rayStartParams"),
    ({"RAYGUARD_RAY_START_PARAMS": '{"--Num_Cpus": 64}'}, "rayStartParams"),
    ({"RAYGUARD_RAY_START_PARAMS": '{"address": "evil:6379"}'}, "rayStartParams"),
])
def test_run_refuses_before_starting_anything(tmp_path, env, field):
    line = refused("run", "--role", "head", "--limit-bytes", "2Gi", "--ray-temp-dir", str(tmp_path),
                   *ROOTS, env=env)
    assert field in line
    assert not any(tmp_path.iterdir())  # no token, no Redis, no Ray


# The operator plans with the same shared code: `rayguard render` refuses the same input.
@pytest.mark.parametrize("edit, field", [
    (lambda s: s["head"]["resources"]["limits"].update(memory="1e400"), "spec.head.resources.limits.memory"),
    (lambda s: s["head"]["resources"]["limits"].update(cpu="1e400"), "spec.head.resources.limits.cpu"),
    (lambda s: s["memory"].update(objectStoreBytes="1e400"), "spec.memory.objectStoreBytes"),
    (lambda s: s["memory"].update(redisMaxBytes="+1Gi"), "spec.memory.redisMaxBytes"),
    (lambda s: s["memory"].update(redisMaxBytes=0), "redisMaxBytes"),
    (lambda s: s["memory"].update(redisFraction=0.001), "redisFraction"),
    (lambda s: s["head"].update(rayStartParams={"Temp_Dir": "/tmp/evil"}), "spec.head.rayStartParams.Temp_Dir"),
    (lambda s: s["head"].update(rayStartParams={"temp-dir=/tmp/evil": "x"}), "rayStartParams['temp-dir=/tmp/evil']"),
])
def test_render_refuses_the_same(tmp_path, edit, field):
    import yaml

    body = yaml.safe_load((DATA_DIR.parent.parent / "examples" / "raycluster.yaml").read_text())
    edit(body["spec"])
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(body))
    environ = {k: v for k, v in os.environ.items() if not k.startswith("RAYGUARD_")}
    result = subprocess.run([sys.executable, "-m", "rayguard_operator.cli", "render", "-f", str(path)],
                            capture_output=True, text=True, timeout=60, env=environ)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1 and field in result.stderr, result.stderr

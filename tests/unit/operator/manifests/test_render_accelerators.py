"""GPUs, TPUs, custom resources and group images through `rayguard render`, run as a user runs
it, and on into the runtime: the rendered env, read by `rayguard-node`'s own option parser,
becomes the `ray start` line; the rendered command, run by a real `sh`, fails in one line when
the image lacks the runtime."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from rayguard_node.run.config import run_config
from rayguard_node.run.options import BUDGET_OPTIONS, ROLE_OPTION, RUN_OPTIONS, resolve
from rayguard_node.run.ray_command import ray_start_argv
from rayguard_node.sizing.plan import NodeFacts, make_plan
from tests.paths import REPO_ROOT

GPU_CLUSTER = """
apiVersion: rayguard.dev/v1
kind: RayCluster
metadata: {name: accel}
spec:
  image: example.com/rayguard-node:1
  head:
    image: example.com/rayguard-node-head:1
    resources:
      limits: {cpu: "1", memory: 2Gi, nvidia.com/gpu: 1}
  workerGroups:
  - name: gpu
    replicas: 1
    image: example.com/rayguard-node-cuda:12
    rayResources: {fpga: 2, example.com_license: 1}
    resources:
      limits: {cpu: "4", memory: 8Gi, nvidia.com/gpu: 2}
    rayStartParams: {num-gpus: 2, log-style: record}
  - name: tpu
    replicas: 1
    resources:
      limits: {cpu: "4", memory: 8Gi, google.com/tpu: 4}
  - name: cpu
    replicas: 1
    resources:
      limits: {cpu: "1", memory: 2Gi}
"""


def rayguard(*args: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("RAYGUARD_")}
    return subprocess.run([sys.executable, "-m", "rayguard_operator.cli", *args], capture_output=True,
                          text=True, timeout=60, env=environ, cwd=REPO_ROOT)


def write(tmp_path: Path, body: dict[str, Any]) -> Path:
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(body))
    return path


def render(tmp_path: Path, body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Group name -> its first pod."""
    result = rayguard("render", "-f", str(write(tmp_path, body)), "-o", "json")
    assert result.returncode == 0 and result.stderr == "", result.stderr
    pods = [i for i in json.loads(result.stdout)["items"] if i["kind"] == "Pod"]
    return {p["metadata"]["labels"]["rayguard.dev/group"]: p for p in reversed(pods)}


def ray_node(pod: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in pod["spec"]["containers"] if c["name"] == "ray-node")


def env_of(pod: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in ray_node(pod)["env"] if "value" in e}


@pytest.fixture(scope="module")
def pods(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    return render(tmp_path_factory.mktemp("accel"), yaml.safe_load(GPU_CLUSTER))


def test_gpu_limits_are_num_gpus_on_workers_and_zero_on_the_head(pods: dict[str, dict[str, Any]]) -> None:
    assert env_of(pods["head"])["RAYGUARD_NUM_GPUS"] == "0"  # despite its nvidia.com/gpu limit
    assert env_of(pods["gpu"])["RAYGUARD_NUM_GPUS"] == "2"
    # No GPU limit: nothing said, Ray counts what it sees (none, in a pod without a GPU).
    assert "RAYGUARD_NUM_GPUS" not in env_of(pods["tpu"]) and "RAYGUARD_NUM_GPUS" not in env_of(pods["cpu"])
    # The limits themselves reach Kubernetes unchanged (the device plugin allocates them).
    assert ray_node(pods["gpu"])["resources"]["limits"]["nvidia.com/gpu"] == "2"


def test_ray_resources_are_valid_json_with_the_tpu_count(pods: dict[str, dict[str, Any]]) -> None:
    assert json.loads(env_of(pods["gpu"])["RAYGUARD_RAY_RESOURCES"]) == {"fpga": 2, "example.com_license": 1}
    assert json.loads(env_of(pods["tpu"])["RAYGUARD_RAY_RESOURCES"]) == {"TPU": 4}
    assert "RAYGUARD_RAY_RESOURCES" not in env_of(pods["cpu"]) and "RAYGUARD_RAY_RESOURCES" not in env_of(pods["head"])
    # num-gpus was said once, by the limit; the rest of rayStartParams passes through.
    params = json.loads(env_of(pods["gpu"])["RAYGUARD_RAY_START_PARAMS"])
    assert params == {"log-style": "record", "metrics-export-port": 8080}


def test_group_images_override_spec_image(pods: dict[str, dict[str, Any]]) -> None:
    images = {group: ray_node(pod)["image"] for group, pod in pods.items()}
    assert images == {"head": "example.com/rayguard-node-head:1", "gpu": "example.com/rayguard-node-cuda:12",
                      "tpu": "example.com/rayguard-node:1", "cpu": "example.com/rayguard-node:1"}
    for group, pod in pods.items():  # the missing-runtime message names the pod's own image
        assert ray_node(pod)["command"][4] == images[group]


def test_head_num_gpus_overrides(tmp_path: Path) -> None:
    body = yaml.safe_load(GPU_CLUSTER)
    body["spec"]["head"]["numGpus"] = 1
    assert env_of(render(tmp_path, body)["head"])["RAYGUARD_NUM_GPUS"] == "1"


def argv_in_pod(pod: dict[str, Any]) -> list[str]:
    """The `ray start` line the runtime builds from the pod's env, through its own parser."""
    environ = {**env_of(pod), "RAYGUARD_HEAD_ADDRESS": "accel-head.default.svc:6379"}
    values = resolve((ROLE_OPTION,) + RUN_OPTIONS + BUDGET_OPTIONS, argparse.Namespace(), environ)
    limits = ray_node(pod)["resources"]["limits"]
    plan = make_plan(str(values["role"]), NodeFacts(8 * 1024**3, "pod-spec", float(limits["cpu"]), None, True))
    return ray_start_argv(run_config(values), plan)


def test_the_runtime_passes_them_to_ray_start(pods: dict[str, dict[str, Any]]) -> None:
    gpu = argv_in_pod(pods["gpu"])
    assert gpu.count("--num-gpus=2") == 1 and not [a for a in gpu if a.startswith("--num-gpus=") and a != "--num-gpus=2"]
    [resources] = [a for a in gpu if a.startswith("--resources=")]
    assert json.loads(resources.split("=", 1)[1]) == {"fpga": 2, "example.com_license": 1}
    assert "--log-style=record" in gpu
    assert "--num-gpus=0" in argv_in_pod(pods["head"])
    tpu = argv_in_pod(pods["tpu"])
    assert not [a for a in tpu if a.startswith("--num-gpus")] and '--resources={"TPU":4}' in tpu


CONTRADICTIONS = [
    ("gpu", {"limits": {"nvidia.com/gpu": 1}, "rayStartParams": {"num-gpus": 2}},
     "spec.workerGroups[0].rayStartParams.num-gpus", "spec.workerGroups[0].resources.limits.nvidia.com/gpu"),
    ("resources", {"rayResources": {"fpga": 1}, "rayStartParams": {"resources": '{"fpga": 2}'}},
     "spec.workerGroups[0].rayStartParams.resources", "spec.workerGroups[0].rayResources.fpga"),
    ("bad-name", {"rayResources": {"GPU": 1}}, "spec.workerGroups[0].rayResources.GPU", "nvidia.com/gpu"),
]


@pytest.mark.parametrize("edit,first,second", [c[1:] for c in CONTRADICTIONS], ids=[c[0] for c in CONTRADICTIONS])
def test_contradictions_exit_2_naming_both_fields(tmp_path: Path, edit: dict[str, Any], first: str,
                                                   second: str) -> None:
    body = yaml.safe_load((REPO_ROOT / "examples" / "raycluster-minimal.yaml").read_text())
    group = body["spec"]["workerGroups"][0]
    group["resources"]["limits"].update(edit.pop("limits", {}))
    group.update(edit)
    result = rayguard("render", "-f", str(write(tmp_path, body)))
    assert result.returncode == 2 and result.stdout == "", result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert f": {first}: " in result.stderr and second in result.stderr, result.stderr


# --- the container's command, run by a real sh -----------------------------------------------

def run_command(command: list[str], path: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=30, env={"PATH": path})


def test_an_image_without_the_runtime_fails_in_one_clear_line(pods: dict[str, dict[str, Any]],
                                                               tmp_path: Path) -> None:
    bare = tmp_path / "bin"
    bare.mkdir()
    os.symlink(shutil.which("sh"), bare / "sh")  # an image with a shell and no rayguard-node
    command = ray_node(pods["gpu"])["command"]
    result = run_command([str(bare / "sh"), *command[1:]], str(bare))
    assert result.returncode == 127 and result.stdout == ""
    assert result.stderr.count("\n") == 1, result.stderr
    assert "image example.com/rayguard-node-cuda:12 lacks the rayguard runtime" in result.stderr
    assert ray_node(pods["gpu"])["terminationMessagePolicy"] == "FallbackToLogsOnError"  # kubectl shows it


def test_with_the_runtime_the_shell_becomes_rayguard_node(pods: dict[str, dict[str, Any]], tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    os.symlink(shutil.which("sh"), bin_dir / "sh")
    fake = bin_dir / "rayguard-node"  # prints its argv and whether it replaced the shell (same pid)
    fake.write_text(f"#!{shutil.which('sh')}\necho \"$$ $*\"\n")
    fake.chmod(0o755)
    command = ray_node(pods["head"])["command"]
    script = command[2].replace("exec rayguard-node", "echo $$; exec rayguard-node")
    result = run_command([str(bin_dir / "sh"), "-c", script, *command[3:]], str(bin_dir))
    assert result.returncode == 0, result.stderr
    shell_pid, runtime_line = result.stdout.splitlines()
    assert runtime_line == f"{shell_pid} run --role head"  # exec: SIGTERM reaches the runtime

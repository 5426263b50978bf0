"""`rayguard render`, run as a user runs it: a subprocess on the examples."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from rayguard_node.sizing.plan import BudgetSettings, NodeFacts, make_plan
from rayguard_node.sizing.quantity import parse_bytes
from tests.paths import REPO_ROOT

REPO = REPO_ROOT
EXAMPLES = sorted((REPO / "examples").glob("raycluster*.yaml"))


def rayguard(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("RAYGUARD_")}
    environ.update(env or {})
    return subprocess.run([sys.executable, "-m", "rayguard_operator.cli", *args], capture_output=True,
                          text=True, timeout=60, env=environ, cwd=REPO)


def rendered(path: Path, *extra: str) -> dict[str, Any]:
    result = rayguard("render", "-f", str(path), *extra)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    return yaml.safe_load(result.stdout)


def env_of(pod: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_render_example(path: Path) -> None:
    listing = rendered(path)
    assert (listing["apiVersion"], listing["kind"]) == ("v1", "List")
    kinds = [i["kind"] for i in listing["items"]]
    spec = yaml.safe_load(path.read_text())["spec"]
    autoscaler = ["ServiceAccount", "Role", "RoleBinding", "ConfigMap"] \
        if spec.get("autoscaling", {}).get("enabled") else []  # test_render_autoscaling.py
    assert kinds == ["Secret", "Service", *autoscaler] \
        + ["Pod"] * (1 + sum(g.get("replicas", 1) for g in spec["workerGroups"]))
    secret = listing["items"][0]
    assert set(secret["stringData"].values()) == {"<generated>"}
    pods = [i for i in listing["items"] if i["kind"] == "Pod"]
    [head] = [p for p in pods if p["metadata"]["labels"]["rayguard.dev/node-type"] == "head"]
    assert env_of(head)["RAYGUARD_NUM_CPUS"] == "0"
    for pod in pods:
        container = pod["spec"]["containers"][0]
        limit = parse_bytes(container["resources"]["limits"]["memory"], "limit")
        role = pod["metadata"]["labels"]["rayguard.dev/node-type"]
        fraction = float(env_of(pod)["RAYGUARD_OBJECT_STORE_FRACTION"])
        planned = make_plan(role, NodeFacts(limit, "pod-spec", None, None, True),
                            BudgetSettings(object_store_fraction=fraction)).object_store_bytes
        [shm] = [v for v in pod["spec"]["volumes"] if v["name"] == "dshm"]
        assert shm["emptyDir"] == {"medium": "Memory", "sizeLimit": str(planned)}
        assert env_of(pod)["RAYGUARD_OBJECT_STORE_BYTES"] == str(planned)


def test_json_output_is_the_same_list() -> None:
    path = REPO / "examples" / "raycluster.yaml"
    result = rayguard("render", "-f", str(path), "-o", "json")
    assert result.returncode == 0
    assert json.loads(result.stdout) == rendered(path)


def test_default_image_comes_from_the_operator_setting(tmp_path: Path) -> None:
    result = rayguard("render", "-f", str(REPO / "examples" / "raycluster-minimal.yaml"),
                      env={"RAYGUARD_OPERATOR_NODE_IMAGE": "registry.local/node:9"})
    pods = [i for i in yaml.safe_load(result.stdout)["items"] if i["kind"] == "Pod"]
    assert {p["spec"]["containers"][0]["image"] for p in pods} == {"registry.local/node:9"}


@pytest.mark.parametrize("edit,field", [
    (lambda s: s["memory"].update(redisMaxBytes=-1), "spec.memory.redisMaxBytes"),
    (lambda s: s["workerGroups"][0].update(resources={"limits": {"memory": "100Mi"}}),
     "spec.workerGroups[0].resources.limits.memory"),
    (lambda s: s["head"].update(rayStartParams={"block": True}), "spec.head.rayStartParams.block"),
])
def test_invalid_file_exits_2_with_one_line(tmp_path: Path, edit: Any, field: str) -> None:
    body = yaml.safe_load((REPO / "examples" / "raycluster.yaml").read_text())
    edit(body["spec"])
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(body))
    result = rayguard("render", "-f", str(path))
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and field in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("content,word", [("kind: Pod\napiVersion: v1\n", "apiVersion/kind"),
                                           (": : :\n", "not YAML"), ("", "exactly one")])
def test_not_a_raycluster_exits_2(tmp_path: Path, content: str, word: str) -> None:
    path = tmp_path / "x.yaml"
    path.write_text(content)
    result = rayguard("render", "-f", str(path))
    assert result.returncode == 2 and word in result.stderr and result.stderr.count("\n") == 1


def test_missing_file_exits_2(tmp_path: Path) -> None:
    result = rayguard("render", "-f", str(tmp_path / "nope.yaml"))
    assert result.returncode == 2 and "cannot read" in result.stderr


def test_render_loads_neither_kopf_nor_handlers() -> None:
    code = ("import sys, rayguard_operator.manifests.render, rayguard_operator.cli;"
            "print(sorted(m for m in ('kopf', 'rayguard_operator.handlers') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "[]", result.stderr


# --- what the API server would refuse: the CRD's schema and CEL rules, before the model --------

def _groups(spec: dict[str, Any], *replicas: int) -> None:
    group = spec["workerGroups"][0]
    spec["workerGroups"] = [dict(group, name=f"g{i}", replicas=n, maxReplicas=max(n, 1))
                            for i, n in enumerate(replicas)]


CRD_REFUSALS = [
    ("33-groups", lambda s: _groups(s, *[1] * 33), "spec.workerGroups: must have at most 32 items (found 33)"),
    ("65-ray-start-params", lambda s: s["head"].update(rayStartParams={f"p{i}": i for i in range(65)}),
     "spec.head.rayStartParams: must have at most 64 properties (found 65)"),
    ("password-without-redis", lambda s: s.update(gcsFaultTolerance={"passwordSecret": {"name": "r", "key": "p"}}),
     "spec.gcsFaultTolerance: passwordSecret needs redisAddress"),
    ("replicas-above-cap", lambda s: s["workerGroups"][0].update(replicas=1001, maxReplicas=1000),
     "spec.workerGroups[0].replicas: must be at most 1000 (found 1001)"),
    ("workers-above-cluster-cap", lambda s: _groups(s, 500, 500, 1),
     "spec.workerGroups: the sum of replicas over all worker groups must be at most 1000"),
    ("unknown-field", lambda s: s["head"].update(numCPUs=2), 'spec.head.numCPUs: unknown field "numCPUs"'),
    ("no-memory-limit", lambda s: s["head"].update(resources={"limits": {"cpu": "1"}}),
     "spec.head.resources: resources.limits.memory is required, rayguard sizes Ray from it"),
]


def _bad_file(tmp_path: Path, edit: Any) -> Path:
    body = yaml.safe_load((REPO / "examples" / "raycluster-minimal.yaml").read_text())
    edit(body["spec"])
    path = tmp_path / "x.yaml"
    path.write_text(yaml.safe_dump(body))
    return path


@pytest.mark.parametrize("edit,line", [c[1:] for c in CRD_REFUSALS], ids=[c[0] for c in CRD_REFUSALS])
def test_what_the_api_server_refuses_exits_2_with_one_line(tmp_path: Path, edit: Any, line: str) -> None:
    path = _bad_file(tmp_path, edit)
    result = rayguard("render", "-f", str(path))
    assert result.returncode == 2 and result.stdout == "", result.stderr
    assert result.stderr == f"rayguard render: {path}: {line}\n"


def test_local_up_refuses_the_same_before_starting_anything(tmp_path: Path) -> None:
    edit, line = CRD_REFUSALS[0][1:]
    path = _bad_file(tmp_path, edit)
    result = rayguard("local", "up", str(path))
    assert result.returncode == 2 and result.stdout == "", result.stderr
    assert result.stderr == f"rayguard local: {path}: {line}\n"


def test_a_cluster_at_the_caps_renders(tmp_path: Path) -> None:
    body = yaml.safe_load((REPO / "examples" / "raycluster-minimal.yaml").read_text())
    _groups(body["spec"], 1000)
    path = tmp_path / "x.yaml"
    path.write_text(yaml.safe_dump(body))
    result = rayguard("render", "-f", str(path), "-o", "json")
    assert result.returncode == 0, result.stderr
    assert sum(1 for i in json.loads(result.stdout)["items"] if i["kind"] == "Pod") == 1001

"""memory.profiling: the CRD's field, the model's merge (cluster, then group), its refusals,
and the pod env it becomes."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from rayguard_node.contract import settings as S
from rayguard_operator.errors import SpecError
from rayguard_operator.manifests.pod import build_pod
from rayguard_operator.settings import OperatorSettings
from rayguard_operator.spec.model import parse_cluster
from rayguard_operator.spec.profiling import ProfilingSpec
from tests.crd_schema import defaulted, validate_against_crd
from tests.paths import REPO_ROOT

MiB, GiB = 1 << 20, 1 << 30
PROFILE_ENV = {s.env for s in S.PROFILE_SETTINGS}


def body(cluster: dict[str, Any] | None = None, group: dict[str, Any] | None = None,
         head: dict[str, Any] | None = None) -> dict[str, Any]:
    data = yaml.safe_load((REPO_ROOT / "examples" / "raycluster-minimal.yaml").read_text())
    if cluster is not None:
        data["spec"]["memory"] = {"profiling": cluster}
    if group is not None:
        data["spec"]["workerGroups"][0]["memory"] = {"profiling": group}
    if head is not None:
        data["spec"]["head"]["memory"] = {"profiling": head}
    return data


def parsed(data: dict[str, Any]):
    assert validate_against_crd(data) == [], validate_against_crd(data)
    model = parse_cluster(data, OperatorSettings())
    assert parse_cluster(defaulted(copy.deepcopy(data)), OperatorSettings()) == model  # render == operator
    return model


def env_of(model, group) -> dict[str, str]:
    container = build_pod(model, group, "x")["spec"]["containers"][0]
    return {e["name"]: e.get("value") for e in container["env"]}


def test_off_unless_enabled_and_no_env_then() -> None:
    model = parsed(body())
    for group in model.groups:
        assert group.profiling == ProfilingSpec(False, ("*",), GiB)
        assert not PROFILE_ENV & set(env_of(model, group))


def test_a_group_turns_it_on_for_its_pods_only() -> None:
    model = parsed(body(group={"enabled": True, "match": ["hog*", "Trainer"], "maxBytes": "256Mi"}))
    worker = model.worker_groups[0]
    assert worker.profiling == ProfilingSpec(True, ("hog*", "Trainer"), 256 * MiB)
    env = env_of(model, worker)
    assert (env[S.PROFILE.env], env[S.PROFILE_MATCH.env], env[S.PROFILE_MAX_BYTES.env]) == \
        ("true", "hog*,Trainer", str(256 * MiB))
    assert not PROFILE_ENV & set(env_of(model, model.head))


def test_the_group_overrides_the_cluster_field_by_field() -> None:
    model = parsed(body(cluster={"enabled": True, "match": ["hog*"]}, group={"maxBytes": "128Mi"},
                        head={"enabled": False}))
    assert model.worker_groups[0].profiling == ProfilingSpec(True, ("hog*",), 128 * MiB)
    assert model.head.profiling == ProfilingSpec(False, ("hog*",), GiB)


@pytest.mark.parametrize("where, profiling, field, crd_refuses", [
    ("group", {"enabled": "yes"}, "spec.workerGroups[0].memory.profiling.enabled", True),
    ("group", {"match": []}, "spec.workerGroups[0].memory.profiling.match", True),
    ("group", {"match": ["hog,train"]}, "spec.workerGroups[0].memory.profiling.match[0]", True),
    ("group", {"match": ["hog train"]}, "spec.workerGroups[0].memory.profiling.match[0]", True),
    ("group", {"match": ["g"] * 17}, "spec.workerGroups[0].memory.profiling.match", True),
    ("cluster", {"maxBytes": "63Mi"}, "spec.memory.profiling.maxBytes", False),
    ("cluster", {"maxBytes": "1Gx"}, "spec.memory.profiling.maxBytes", True),
    ("head", {"colour": "red"}, "spec.head.memory.profiling.colour", True),
])
def test_refusals_name_the_field(where: str, profiling: dict[str, Any], field: str, crd_refuses: bool) -> None:
    data = body(**{where: profiling})
    assert bool(validate_against_crd(data)) is crd_refuses
    with pytest.raises(SpecError) as caught:
        parse_cluster(data, OperatorSettings())
    assert caught.value.path == field, str(caught.value)


def test_a_null_inherits() -> None:
    model = parsed(body(cluster={"enabled": True}, group={"enabled": None}))
    assert model.worker_groups[0].profiling.enabled is True

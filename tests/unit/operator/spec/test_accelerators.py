"""GPUs, TPUs, custom resources and per-group images in the model (spec/accelerators.py): what
Ray is told for each group, and the contradictions that make a spec invalid."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from rayguard_operator.errors import SpecError
from rayguard_operator.settings import OperatorSettings
from rayguard_operator.spec.model import ClusterModel, parse_cluster
from tests.crd_schema import validate_against_crd
from tests.paths import REPO_ROOT

SETTINGS = OperatorSettings()


def minimal() -> dict[str, Any]:
    return yaml.safe_load((REPO_ROOT / "examples" / "raycluster-minimal.yaml").read_text())


def with_(head: dict[str, Any] | None = None, **worker: Any) -> dict[str, Any]:
    body = minimal()
    body["spec"]["head"].update(copy.deepcopy(head or {}))
    group = body["spec"]["workerGroups"][0]
    limits = worker.pop("limits", {})
    group["resources"]["limits"].update(limits)
    group.update(copy.deepcopy(worker))
    return body


def parsed(body: dict[str, Any]) -> ClusterModel:
    assert validate_against_crd(body) == [], validate_against_crd(body)
    return parse_cluster(body, SETTINGS)


def refused(body: dict[str, Any]) -> SpecError:
    with pytest.raises(SpecError) as caught:
        parse_cluster(body, SETTINGS)
    assert "\n" not in str(caught.value)
    return caught.value


# --- what Ray is told ----------------------------------------------------------------------

def test_without_accelerators_the_head_gets_no_gpus_and_workers_let_ray_count() -> None:
    cluster = parsed(minimal())
    assert (cluster.head.num_gpus, dict(cluster.head.ray_resources)) == (0, {})
    [worker] = cluster.worker_groups
    assert (worker.num_gpus, dict(worker.ray_resources)) == (None, {})


@pytest.mark.parametrize("limit", ["nvidia.com/gpu", "amd.com/gpu"])
def test_a_gpu_limit_is_the_workers_num_gpus(limit: str) -> None:
    cluster = parsed(with_(limits={limit: 2}))
    assert cluster.worker_groups[0].num_gpus == 2
    assert cluster.head.num_gpus == 0


def test_the_head_keeps_zero_gpus_with_a_gpu_limit_unless_num_gpus_says() -> None:
    head_limits = {"resources": {"limits": {"memory": "2Gi", "cpu": "1", "nvidia.com/gpu": "1"}}}
    assert parsed(with_(head_limits)).head.num_gpus == 0
    assert parsed(with_({**head_limits, "numGpus": 1})).head.num_gpus == 1


def test_ray_resources_and_a_tpu_limit_are_the_groups_resources() -> None:
    cluster = parsed(with_(limits={"google.com/tpu": 4}, rayResources={"fpga": 2, "example.com_license": 1}))
    assert dict(cluster.worker_groups[0].ray_resources) == {"fpga": 2, "example.com_license": 1, "TPU": 4}
    assert cluster.worker_groups[0].num_gpus is None  # TPUs are not GPUs


def test_a_head_tpu_limit_advertises_no_tpu_unless_told() -> None:
    limits = {"resources": {"limits": {"memory": "2Gi", "google.com/tpu": "4"}}}
    assert dict(parsed(with_(limits)).head.ray_resources) == {"TPU": 0}
    assert dict(parsed(with_({**limits, "rayResources": {"TPU": 4}})).head.ray_resources) == {"TPU": 4}


def test_agreeing_ray_start_params_are_taken_into_the_model_and_out_of_the_params() -> None:
    cluster = parsed(with_({"rayStartParams": {"num-gpus": 0, "log-style": "record"}},
                           limits={"nvidia.com/gpu": 1},
                           rayResources={"fpga": 2},
                           rayStartParams={"NUM_GPUS": "1", "resources": '{"fpga": 2, "disk": 1}'}))
    worker = cluster.worker_groups[0]
    assert worker.num_gpus == 1 and dict(worker.ray_resources) == {"fpga": 2, "disk": 1}
    assert dict(worker.ray_start_params) == {}
    assert dict(cluster.head.ray_start_params) == {"log-style": "record"} and cluster.head.num_gpus == 0


def test_ray_start_params_num_gpus_counts_where_no_limit_says() -> None:
    assert parsed(with_(rayStartParams={"num-gpus": 2})).worker_groups[0].num_gpus == 2


def test_group_images_override_the_clusters() -> None:
    body = with_({"image": "example.com/head:1"}, image="example.com/cuda-node:12")
    body["spec"]["workerGroups"].append(dict(copy.deepcopy(body["spec"]["workerGroups"][0]), name="cpu2"))
    del body["spec"]["workerGroups"][1]["image"]
    cluster = parsed(body)
    assert cluster.image_of(cluster.head) == "example.com/head:1"
    assert cluster.image_of(cluster.worker_groups[0]) == "example.com/cuda-node:12"
    assert cluster.image_of(cluster.worker_groups[1]) == cluster.image == SETTINGS.node_image


# --- contradictions and bad names: one line naming both fields -----------------------------

CONTRADICTIONS = [
    ("num-gpus vs gpu limit", with_(limits={"nvidia.com/gpu": 1}, rayStartParams={"num-gpus": 2}),
     "spec.workerGroups[0].rayStartParams.num-gpus", "spec.workerGroups[0].resources.limits.nvidia.com/gpu (1)"),
    ("num-gpus vs amd limit", with_(limits={"amd.com/gpu": 4}, rayStartParams={"--num_gpus": "1"}),
     "spec.workerGroups[0].rayStartParams.--num_gpus", "spec.workerGroups[0].resources.limits.amd.com/gpu (4)"),
    ("head num-gpus vs default", with_({"rayStartParams": {"num-gpus": 1}}),
     "spec.head.rayStartParams.num-gpus", "spec.head.numGpus (0, the default"),
    ("head num-gpus vs numGpus", with_({"numGpus": 2, "rayStartParams": {"num-gpus": 1}}),
     "spec.head.rayStartParams.num-gpus", "spec.head.numGpus (2)"),
    ("resources vs rayResources", with_(rayResources={"fpga": 1}, rayStartParams={"resources": '{"fpga": 2}'}),
     "spec.workerGroups[0].rayStartParams.resources", "spec.workerGroups[0].rayResources.fpga (1)"),
    ("resources vs tpu limit", with_(limits={"google.com/tpu": 4}, rayStartParams={"resources": '{"TPU": 8}'}),
     "spec.workerGroups[0].rayStartParams.resources", "spec.workerGroups[0].resources.limits.google.com/tpu (4)"),
    ("rayResources vs tpu limit", with_(limits={"google.com/tpu": 4}, rayResources={"TPU": 8}),
     "spec.workerGroups[0].rayResources.TPU", "spec.workerGroups[0].resources.limits.google.com/tpu (4)"),
    ("both gpu kinds", with_(limits={"nvidia.com/gpu": 1, "amd.com/gpu": 1}),
     "spec.workerGroups[0].resources.limits.amd.com/gpu", "spec.workerGroups[0].resources.limits.nvidia.com/gpu"),
]


@pytest.mark.parametrize("body,path,other", [c[1:] for c in CONTRADICTIONS], ids=[c[0] for c in CONTRADICTIONS])
def test_contradictions_name_both_fields(body: dict[str, Any], path: str, other: str) -> None:
    assert validate_against_crd(body) == []  # the API server cannot see these; the operator must
    error = refused(body)
    assert error.path == path and str(error).startswith(f"{path}: ") and other in str(error), str(error)


BAD = [
    ("reserved CPU", with_(rayResources={"CPU": 4}), "spec.workerGroups[0].rayResources.CPU", "numCpus"),
    ("reserved GPU", with_(rayResources={"GPU": 1}), "spec.workerGroups[0].rayResources.GPU", "nvidia.com/gpu"),
    ("reserved memory", with_(rayResources={"memory": 1}), "spec.workerGroups[0].rayResources.memory", "Ray sets"),
    ("node prefix", with_(rayResources={"node:10.0.0.1": 1}), "spec.workerGroups[0].rayResources.node:10.0.0.1",
     "resource name"),
    ("placement group name", with_(rayResources={"CPU_group_abc": 1}),
     "spec.workerGroups[0].rayResources.CPU_group_abc", "placement group"),
    ("space in name", with_(rayResources={"my fpga": 1}), "spec.workerGroups[0].rayResources.my fpga", "resource name"),
    ("not JSON", with_(rayStartParams={"resources": "{fpga: 1}"}), "spec.workerGroups[0].rayStartParams.resources",
     "not JSON"),
    ("JSON list", with_(rayStartParams={"resources": "[1]"}), "spec.workerGroups[0].rayStartParams.resources",
     "JSON object"),
    ("fractional count", with_(rayStartParams={"resources": '{"fpga": 0.5}'}),
     "spec.workerGroups[0].rayStartParams.resources", "whole number"),
    ("reserved in JSON", with_(rayStartParams={"resources": '{"GPU": 1}'}),
     "spec.workerGroups[0].rayStartParams.resources", "Ray sets GPU itself"),
    ("num-gpus not a number", with_(rayStartParams={"num-gpus": "two"}), "spec.workerGroups[0].rayStartParams.num-gpus",
     "whole number"),
    ("fractional gpu limit", with_(limits={"nvidia.com/gpu": "500m"}),
     "spec.workerGroups[0].resources.limits.nvidia.com/gpu", "whole number"),
    ("empty image", with_(image=""), "spec.workerGroups[0].image", "image reference"),
]


@pytest.mark.parametrize("body,path,word", [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_bad_resources_are_refused_by_name(body: dict[str, Any], path: str, word: str) -> None:
    error = refused(body)
    assert error.path == path and word in str(error), str(error)


@pytest.mark.parametrize("edit,text", [
    (lambda g: g.update(rayResources={"fpga": 1.5}), "spec.workerGroups[0].rayResources.fpga"),
    (lambda g: g.update(rayResources={"fpga": -1}), "must be at least 0"),
    (lambda g: g.update(numGpus=1), 'spec.workerGroups[0].numGpus: unknown field "numGpus"'),
    (lambda g: g.update(image=""), "spec.workerGroups[0].image"),
])
def test_the_crd_refuses_what_its_schema_can_see(edit: Any, text: str) -> None:
    body = minimal()
    edit(body["spec"]["workerGroups"][0])
    assert any(text in e for e in validate_against_crd(body)), validate_against_crd(body)

"""spec.autoscaling, spec.suspend and workerGroups[].workersToDelete: parsing, defaults equal to
the CRD's, the model's field-named errors, and what the CRD itself refuses."""

from __future__ import annotations

import copy
from typing import Any, Callable

import pytest
import yaml

from rayguard_node.contract.autoscaler import DEFAULT_LIMITS, UPSCALING_SPEED
from rayguard_operator.errors import SpecError
from rayguard_operator.settings import OperatorSettings
from rayguard_operator.spec.autoscaling import (
    IDLE_TIMEOUT_DEFAULT_S, MAX_WORKERS_TO_DELETE, UPSCALING_MODES, AutoscalingSpec, parse_autoscaling)
from rayguard_operator.spec.model import parse_cluster
from tests.crd_schema import crd_errors, defaulted, validate_against_crd, version_schema
from tests.paths import REPO_ROOT

SETTINGS = OperatorSettings()
MiB = 1024**2
EXAMPLE = REPO_ROOT / "examples" / "raycluster-autoscaling.yaml"


def minimal() -> dict[str, Any]:
    return yaml.safe_load((REPO_ROOT / "examples" / "raycluster-minimal.yaml").read_text())


def autoscaled() -> dict[str, Any]:
    return yaml.safe_load(EXAMPLE.read_text())


def _spec_schema() -> dict[str, Any]:
    return version_schema()["properties"]["spec"]["properties"]


# --- defaults --------------------------------------------------------------------------------

def test_off_by_default() -> None:
    model = parse_cluster(minimal(), SETTINGS)
    assert model.autoscaling == AutoscalingSpec() and not model.autoscaling.enabled
    assert model.suspend is False
    assert all(g.workers_to_delete == () for g in model.worker_groups)


def test_parser_defaults_are_the_crds() -> None:
    """Spelled out, so a changed default on either side fails here by name."""
    spec = defaulted(minimal())["spec"]
    assert spec["suspend"] is False
    assert spec["autoscaling"] == {
        "enabled": False, "idleTimeoutSeconds": IDLE_TIMEOUT_DEFAULT_S, "upscalingMode": "Default",
        "resources": {"limits": DEFAULT_LIMITS, "requests": DEFAULT_LIMITS}}
    assert parse_autoscaling(spec["autoscaling"]) == parse_autoscaling(None) == AutoscalingSpec()
    assert parse_autoscaling({}) == AutoscalingSpec()
    assert "workersToDelete" not in spec["workerGroups"][0]  # absent means none
    schema = _spec_schema()["autoscaling"]["properties"]
    assert tuple(schema["upscalingMode"]["enum"]) == UPSCALING_MODES
    assert set(UPSCALING_MODES) == set(UPSCALING_SPEED)
    group = _spec_schema()["workerGroups"]["items"]["properties"]["workersToDelete"]
    assert group["maxItems"] == MAX_WORKERS_TO_DELETE and group["x-kubernetes-list-type"] == "set"


def test_server_defaulted_and_written_parse_the_same() -> None:
    body = autoscaled()
    assert validate_against_crd(body) == []
    model = parse_cluster(body, SETTINGS)
    assert parse_cluster(defaulted(body), SETTINGS) == model
    assert model.autoscaling.enabled and model.autoscaling.idle_timeout_s == 30


def test_a_full_spec_parses() -> None:
    body = autoscaled()
    body["spec"]["suspend"] = True
    body["spec"]["autoscaling"] = {
        "enabled": True, "idleTimeoutSeconds": 0, "upscalingMode": "Conservative", "image": "reg/auto:1",
        "resources": {"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "250m", "memory": "768Mi"}}}
    body["spec"]["workerGroups"][0]["workersToDelete"] = ["autoscaling-worker-cpu-bcdfg", "x.y"]
    assert validate_against_crd(body) == []
    model = parse_cluster(body, SETTINGS)
    assert model.suspend is True
    assert model.autoscaling == AutoscalingSpec(
        enabled=True, idle_timeout_s=0, upscaling_mode="Conservative", image="reg/auto:1",
        limits={"cpu": "1", "memory": "1Gi"}, requests={"cpu": "250m", "memory": "768Mi"},
        memory_limit_bytes=1024 * MiB)
    assert model.autoscaling.upscaling_speed == 1.0
    assert model.worker_groups[0].workers_to_delete == ("autoscaling-worker-cpu-bcdfg", "x.y")


def test_requests_default_to_the_limits() -> None:
    spec = parse_autoscaling({"enabled": True, "resources": {"limits": {"memory": 256 * MiB}}})
    assert spec.limits == spec.requests == {"memory": str(256 * MiB)}
    assert spec.memory_limit_bytes == 256 * MiB


# --- the model's errors (render sees files no server checked) ---------------------------------

def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(body: dict[str, Any]) -> None:
        *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
        node: Any = body
        for p in parents:
            node = node[p]
        node[last] = value
    return mutate


def _head_template(spec: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
    return _set("spec.head.template", {"spec": spec})


MODEL_ERRORS = [
    ("unknown-field", _set("spec.autoscaling.idleTimeout", 5), "spec.autoscaling.idleTimeout", "unknown field"),
    ("enabled-not-bool", _set("spec.autoscaling.enabled", "yes"), "spec.autoscaling.enabled", "true or false"),
    ("negative-idle", _set("spec.autoscaling.idleTimeoutSeconds", -1), "spec.autoscaling.idleTimeoutSeconds",
     "at least 0"),
    ("bad-mode", _set("spec.autoscaling.upscalingMode", "Fast"), "spec.autoscaling.upscalingMode",
     "must be one of Default, Aggressive, Conservative"),
    ("empty-image", _set("spec.autoscaling.image", ""), "spec.autoscaling.image", "image reference"),
    ("no-memory-limit", _set("spec.autoscaling.resources", {"limits": {"cpu": "1"}}),
     "spec.autoscaling.resources.limits.memory", "is required"),
    ("bad-cpu", _set("spec.autoscaling.resources", {"limits": {"memory": "1Gi", "cpu": "lots"}}),
     "spec.autoscaling.resources.limits.cpu", ""),
    ("requests-above-limit", _set("spec.autoscaling.resources",
                                  {"limits": {"memory": "1Gi"}, "requests": {"memory": "2Gi"}}),
     "spec.autoscaling.resources.requests.memory", "must not exceed limits.memory"),
    ("suspend-not-bool", _set("spec.suspend", "true"), "spec.suspend", "true or false"),
    ("to-delete-not-a-list", _set("spec.workerGroups.0.workersToDelete", "pod-a"),
     "spec.workerGroups[0].workersToDelete", "expected a list"),
    ("to-delete-duplicate", _set("spec.workerGroups.0.workersToDelete", ["a", "b", "a"]),
     "spec.workerGroups[0].workersToDelete[2]", "duplicate pod name 'a'"),
    ("to-delete-not-a-name", _set("spec.workerGroups.0.workersToDelete", ["Pod_A"]),
     "spec.workerGroups[0].workersToDelete[0]", "expected a pod name"),
    ("to-delete-too-many", _set("spec.workerGroups.0.workersToDelete", [f"p{i}" for i in range(1001)]),
     "spec.workerGroups[0].workersToDelete", "at most 1000"),
    ("to-delete-on-the-head", _set("spec.head.workersToDelete", ["a"]), "spec.head.workersToDelete",
     "unknown field"),
    # What autoscaling needs of the rest of the spec.
    ("group-without-cpus", _set("spec.workerGroups.0.resources", {"limits": {"memory": "2Gi"}}),
     "spec.workerGroups[0].resources.limits.cpu", "the autoscaler must know how many CPUs"),
    ("head-service-account", _head_template({"serviceAccountName": "mine"}),
     "spec.head.template.spec.serviceAccountName", "the autoscaler's Role is bound"),
    ("head-automount", _head_template({"automountServiceAccountToken": True}),
     "spec.head.template.spec.automountServiceAccountToken", "is rayguard's"),
    ("head-container-named-autoscaler", _head_template({"containers": [{"name": "autoscaler", "image": "x"}]}),
     "spec.head.template.spec.containers[0].name", "the autoscaler sidecar's name"),
    ("head-volume-named-like-ours", _head_template({"volumes": [{"name": "rayguard-autoscaler", "emptyDir": {}}]}),
     "spec.head.template.spec.volumes[0].name", "is rayguard's"),
]


@pytest.mark.parametrize("mutate, path, text", [c[1:] for c in MODEL_ERRORS], ids=[c[0] for c in MODEL_ERRORS])
def test_the_model_names_the_field(mutate: Callable[[dict[str, Any]], None], path: str, text: str) -> None:
    body = autoscaled()
    parse_cluster(copy.deepcopy(body), SETTINGS)
    mutate(body)
    with pytest.raises(SpecError) as caught:
        parse_cluster(body, SETTINGS)
    assert caught.value.path == path and text in str(caught.value), str(caught.value)
    assert "\n" not in str(caught.value)


def test_cpus_from_num_cpus_are_enough() -> None:
    body = autoscaled()
    body["spec"]["workerGroups"][0]["resources"] = {"limits": {"memory": "2Gi"}}
    body["spec"]["workerGroups"][0]["numCpus"] = 3
    assert parse_cluster(body, SETTINGS).worker_groups[0].ray_num_cpus == 3


def test_the_head_overlay_is_free_while_autoscaling_is_off() -> None:
    body = minimal()
    body["spec"]["head"]["template"] = {"spec": {"containers": [{"name": "autoscaler", "image": "x"}]}}
    body["spec"]["workerGroups"][0]["resources"] = {"limits": {"memory": "2Gi"}}
    assert parse_cluster(body, SETTINGS).autoscaling.enabled is False


# --- what the CRD refuses (kubectl apply, and render before the model) ------------------------

CRD_REFUSALS = [
    ("duplicate-to-delete", _set("spec.workerGroups.0.workersToDelete", ["a", "a"]),
     "list-map", "spec.workerGroups[0].workersToDelete[1]", "Duplicate value: 'a'"),
    ("too-many-to-delete", _set("spec.workerGroups.0.workersToDelete", [f"p{i}" for i in range(1001)]),
     "schema", "spec.workerGroups[0].workersToDelete", "must have at most 1000 items (found 1001)"),
    ("to-delete-not-a-name", _set("spec.workerGroups.0.workersToDelete", ["Pod_A"]),
     "schema", "spec.workerGroups[0].workersToDelete[0]", "does not match"),
    ("bad-mode", _set("spec.autoscaling.upscalingMode", "Fast"),
     "schema", "spec.autoscaling.upscalingMode", "must be one of Default, Aggressive, Conservative"),
    ("negative-idle", _set("spec.autoscaling.idleTimeoutSeconds", -1),
     "schema", "spec.autoscaling.idleTimeoutSeconds", "must be at least 0"),
    ("sidecar-without-memory", _set("spec.autoscaling.resources", {"limits": {"cpu": "1"}}),
     "cel", "spec.autoscaling.resources", "resources.limits.memory is required"),
    ("suspend-not-bool", _set("spec.suspend", "yes"), "schema", "spec.suspend", "must be of type boolean"),
    ("unknown-autoscaling-field", _set("spec.autoscaling.maxWorkers", 3),
     "unknown-field", "spec.autoscaling.maxWorkers", "unknown field"),
    # With autoscaling on, the existing group rules still hold: min <= max, the cap, a memory limit.
    ("min-above-max", _set("spec.workerGroups.0.minReplicas", 3),
     "cel", "spec.workerGroups[0]", "minReplicas must not exceed maxReplicas"),
    ("max-above-cap", _set("spec.workerGroups.0.maxReplicas", 1001),
     "schema", "spec.workerGroups[0].maxReplicas", "must be at most 1000"),
    ("group-without-memory-limit", _set("spec.workerGroups.0.resources", {"limits": {"cpu": "1"}}),
     "cel", "spec.workerGroups[0].resources", "resources.limits.memory is required"),
]


@pytest.mark.parametrize("mutate, source, path, text", [c[1:] for c in CRD_REFUSALS],
                         ids=[c[0] for c in CRD_REFUSALS])
def test_the_crd_refuses(mutate: Callable[[dict[str, Any]], None], source: str, path: str, text: str) -> None:
    body = autoscaled()
    assert crd_errors(body) == []
    mutate(body)
    errors = crd_errors(body)
    assert [e for e in errors if e.source == source and e.path == path and text in e.message], errors


def test_the_set_check_can_pass() -> None:
    body = autoscaled()
    body["spec"]["workerGroups"][0]["workersToDelete"] = [f"autoscaling-worker-cpu-{i}" for i in range(1000)]
    assert validate_against_crd(body) == []

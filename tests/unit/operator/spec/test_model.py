"""Parsing a RayCluster into the operator's model: defaults, inheritance, and field-named errors."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from rayguard_node.sizing.plan import BudgetSettings, NodeFacts, make_plan
from rayguard_operator.errors import SpecError
from rayguard_operator.spec.model import parse_cluster
from rayguard_operator.settings import OperatorSettings
from tests.crd_schema import defaulted, validate_against_crd
from tests.paths import REPO_ROOT

REPO = REPO_ROOT
EXAMPLES = sorted((REPO / "examples").glob("raycluster*.yaml")) + [REPO / "tests/data/operator/sidecars.raycluster.yaml"]
SETTINGS = OperatorSettings()
GiB, MiB = 1024**3, 1024**2


def load(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def minimal() -> dict[str, Any]:
    return load(REPO / "examples" / "raycluster-minimal.yaml")


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_server_defaulted_and_written_parse_the_same(path: Path) -> None:
    """The model's defaults are the CRD's, so render (file as written) == operator (defaulted)."""
    body = load(path)
    assert validate_against_crd(body) == []
    assert parse_cluster(defaulted(body), SETTINGS) == parse_cluster(body, SETTINGS)


def test_crd_defaults_are_what_the_model_assumes() -> None:
    """Spelled out, so a changed CRD default fails here by name rather than as a plan drift."""
    spec = defaulted(minimal())["spec"]
    assert spec["head"]["numCpus"] == 0
    assert {k: spec["workerGroups"][0][k] for k in ("replicas", "minReplicas", "maxReplicas")} == \
        {"replicas": 1, "minReplicas": 0, "maxReplicas": 1000}
    assert spec["memory"] == {
        "usageThreshold": 0.95, "monitorRefreshMs": 250, "objectStoreFraction": 0.3,
        "objectStoreMaxBytes": "20Gi", "redisFraction": 0.3, "redisMaxBytes": "10Gi", "heapFraction": 0.5,
        "flushPolicy": {"flushWhenAtLeastBytes": "2Gi", "flushPeriodSecs": 10, "flushNumEntriesEachTime": 10000},
        "quota": {"enforcement": "Kill", "tolerance": 1.2, "graceSeconds": 5},
        "profiling": {"enabled": False, "match": ["*"], "maxBytes": "1Gi"}}


def test_plan_is_rayguard_nodes_for_the_pod() -> None:
    cluster = parse_cluster(minimal(), SETTINGS)
    facts = NodeFacts(limit_bytes=2 * GiB, limit_source="pod-spec", cpu_limit=1.0, ray_sees_limit=True)
    assert cluster.head.plan == make_plan("head", facts, BudgetSettings(num_cpus=0))
    assert cluster.worker_groups[0].plan == make_plan("worker", facts, BudgetSettings())
    assert cluster.head.plan.num_cpus == 0 and cluster.head.plan.guard_mode == "backstop"


def test_group_memory_overrides_field_by_field() -> None:
    body = load(REPO / "examples" / "raycluster.yaml")
    cluster = parse_cluster(body, SETTINGS)
    highmem = cluster.group("highmem")
    assert highmem is not None
    assert highmem.memory.object_store_fraction == 0.4       # the group's own
    assert highmem.memory.usage_threshold == 0.9              # spec.memory's
    assert highmem.memory.redis_fraction == 0.3               # the default
    assert highmem.memory.sources["object_store_fraction"] == "spec.workerGroups[1].memory.objectStoreFraction"
    assert highmem.plan.object_store_bytes == int(8 * GiB * 0.4)
    assert cluster.group("cpu").memory.object_store_fraction == 0.25  # type: ignore[union-attr]


def test_image_defaults_to_the_operators_node_image() -> None:
    settings = OperatorSettings(node_image="registry.local/node:7")
    assert parse_cluster(minimal(), settings).image == "registry.local/node:7"
    body = minimal()
    body["spec"]["image"] = "mine:1"
    assert parse_cluster(body, settings).image == "mine:1"


def test_requests_that_differ_from_limits_warn() -> None:
    body = minimal()
    body["spec"]["workerGroups"][0]["resources"]["requests"] = {"memory": "1Gi"}
    [warning] = parse_cluster(body, SETTINGS).worker_groups[0].warnings
    assert "spec.workerGroups[0].resources" in warning and "requests.memory" in warning


def test_worker_without_cpu_limit_gets_no_made_up_cpu_count() -> None:
    body = minimal()
    del body["spec"]["workerGroups"][0]["resources"]["limits"]["cpu"]
    group = parse_cluster(body, SETTINGS).worker_groups[0]
    assert any("no CPU limit" in w and "node it lands on" in w for w in group.warnings)
    assert not any("from the host" in w for w in group.plan.warnings)


Edit = Callable[[dict[str, Any]], None]


def _set(path: str, value: Any) -> Edit:
    def edit(body: dict[str, Any]) -> None:
        node = body
        keys = path.split(".")
        for key in keys[:-1]:
            node = node[int(key)] if key.isdigit() else node.setdefault(key, {})
        node[keys[-1]] = value
    return edit


# (edit, field path the error must name, a word the message must hold, CRD rejects it too)
INVALID: list[tuple[str, Edit, str, str, bool]] = [
    ("negative bytes", _set("spec.memory.redisMaxBytes", -5), "spec.memory.redisMaxBytes", "negative", False),
    ("negative group bytes", _set("spec.workerGroups.0.memory.objectStoreMaxBytes", -1),
     "spec.workerGroups[0].memory.objectStoreMaxBytes", "negative", False),
    ("fractions sum to 1", _set("spec.head.memory", {"objectStoreFraction": 0.6, "redisFraction": 0.5}),
     "spec.head.memory.objectStoreFraction", "below 1", False),
    ("inherited fractions", _set("spec.memory.redisFraction", 0.75), "spec.memory.redisFraction",
     "spec.memory.objectStoreFraction", False),
    ("float rayStartParams", _set("spec.head.rayStartParams", {"object-spilling-threshold": 0.8}),
     "spec.head.rayStartParams.object-spilling-threshold", "strings, integers or booleans", False),
    ("list rayStartParams", _set("spec.workerGroups.0.rayStartParams", {"resources": ["a"]}),
     "spec.workerGroups[0].rayStartParams.resources", "strings, integers or booleans", False),
    ("reserved flag", _set("spec.workerGroups.0.rayStartParams", {"--num-cpus": 4}),
     "spec.workerGroups[0].rayStartParams.--num-cpus", "rayguard sets this flag", False),
    ("fixed port", _set("spec.head.rayStartParams", {"dashboard-port": 9000}),
     "spec.head.rayStartParams.dashboard-port", "fixed ports", False),
    ("memory too small", _set("spec.workerGroups.0.resources.limits.memory", "256Mi"),
     "spec.workerGroups[0].resources.limits.memory", "below", False),
    ("head too small", _set("spec.head.resources.limits.memory", 512 * MiB),
     "spec.head.resources.limits.memory", "raise the head's memory limit", False),
    ("object store over limit", _set("spec.workerGroups.0.memory.objectStoreBytes", "2Gi"),
     "spec.workerGroups[0].memory.objectStoreBytes", "must fit", False),
    ("requests over limits", _set("spec.workerGroups.0.resources.requests", {"memory": "3Gi"}),
     "spec.workerGroups[0].resources.requests.memory", "must not exceed", False),
    ("redis cap too small", _set("spec.memory.redisMaxBytes", "1Mi"), "spec.memory.redisMaxBytes",
     "raise redisMaxBytes", False),
    ("redis fraction too small", _set("spec.head.memory", {"redisFraction": 0.001}),
     "spec.head.memory.redisFraction", "raise redisFraction", False),
    ("group named head", _set("spec.workerGroups.0.name", "head"), "spec.workerGroups[0].name", "head", False),
    ("reserved overlay label", _set("spec.workerGroups.0.template", {"metadata": {"labels": {"rayguard.dev/group": "x"}}}),
     "spec.workerGroups[0].template.metadata.labels.rayguard.dev/group", "belong to rayguard", False),
    ("overlay resources", _set("spec.head.template", {"spec": {"containers": [{"name": "ray-node", "resources": {}}]}}),
     "spec.head.template.spec.containers[0].resources", "resources field", False),
    ("overlay env", _set("spec.head.template", {"spec": {"containers": [
        {"name": "ray-node", "env": [{"name": "RAYGUARD_OBJECT_STORE_BYTES", "value": "1"}]}]}}),
     "spec.head.template.spec.containers[0].env[0].name", "set by rayguard", False),
    ("overlay shm volume", _set("spec.head.template", {"spec": {"volumes": [{"name": "dshm", "emptyDir": {}}]}}),
     "spec.head.template.spec.volumes[0].name", "rayguard's", False),
    ("overlay shm mount", _set("spec.head.template", {"spec": {"containers": [
        {"name": "ray-node", "volumeMounts": [{"name": "x", "mountPath": "/dev/shm/"}]}]}}),
     "spec.head.template.spec.containers[0].volumeMounts[0].mountPath", "rayguard's", False),
    ("sidecar without name", _set("spec.head.template", {"spec": {"containers": [{"image": "x"}]}}),
     "spec.head.template.spec.containers[0].name", "required", False),
    # The CRD rejects these; the model must too, because render sees files no server checked.
    ("no memory limit", _set("spec.head.resources", {"limits": {"cpu": "1"}}),
     "spec.head.resources.limits.memory", "required", True),
    ("replicas above max", _set("spec.workerGroups.0.maxReplicas", 0), "spec.workerGroups[0].replicas",
     "between", True),
    ("bad quantity", _set("spec.workerGroups.0.resources.limits.memory", "lots"),
     "spec.workerGroups[0].resources.limits.memory", "quantity", True),
    ("threshold above 1", _set("spec.memory.usageThreshold", 1.5), "spec.memory.usageThreshold", "(0, 1]", True),
    ("no head", lambda b: b["spec"].pop("head"), "spec.head", "required", True),
    ("misspelt group field", _set("spec.workerGroups.0.replica", 3), "spec.workerGroups[0].replica",
     "unknown field", True),
    ("misspelt memory field", _set("spec.memory.objectStoreFractions", 0.2), "spec.memory.objectStoreFractions",
     "unknown field", True),
    ("bad upgrade strategy", _set("spec.upgradeStrategy", {"type": "Rolling"}), "spec.upgradeStrategy.type",
     "must be one of RollingUpdate, Recreate, None", True),
    ("misspelt upgrade strategy field", _set("spec.upgradeStrategy", {"kind": "Recreate"}),
     "spec.upgradeStrategy.kind", "unknown field", True),
    ("upgrade strategy not an object", _set("spec.upgradeStrategy", "Recreate"), "spec.upgradeStrategy",
     "expected an object", True),
]


@pytest.mark.parametrize("edit,path,word,crd_rejects", [c[1:] for c in INVALID], ids=[c[0] for c in INVALID])
def test_invalid_specs_name_the_field(edit: Edit, path: str, word: str, crd_rejects: bool) -> None:
    body = copy.deepcopy(minimal())
    edit(body)
    # Which of these the API server would already refuse, so the split of work is explicit.
    assert bool(validate_against_crd(body)) is crd_rejects, validate_against_crd(body)
    with pytest.raises(SpecError) as caught:
        parse_cluster(body, SETTINGS)
    message = str(caught.value)
    assert caught.value.path == path and message.startswith(f"{path}: "), message
    assert word in message
    assert "\n" not in message


def test_duplicate_group_names() -> None:
    body = minimal()
    body["spec"]["workerGroups"].append(copy.deepcopy(body["spec"]["workerGroups"][0]))
    with pytest.raises(SpecError, match=r"^spec\.workerGroups\[1\]\.name: duplicate"):
        parse_cluster(body, SETTINGS)


@pytest.mark.parametrize("strategy", [None, {}, {"type": "RollingUpdate"}, {"type": "Recreate"}, {"type": "None"}])
def test_upgrade_strategy_defaults_to_rolling_update(strategy: dict[str, str] | None) -> None:
    body = minimal()
    if strategy is not None:
        body["spec"]["upgradeStrategy"] = strategy
    assert validate_against_crd(body) == []
    assert defaulted(body)["spec"]["upgradeStrategy"] == {"type": (strategy or {}).get("type", "RollingUpdate")}
    assert parse_cluster(body, SETTINGS).upgrade_strategy.type == (strategy or {}).get("type", "RollingUpdate")


@pytest.mark.parametrize("fault_tolerance, configured", [
    (None, False), ({}, False), ({"redisAddress": "redis.example:6379"}, True),
    ({"redisAddress": "redis:6379", "passwordSecret": {"name": "r", "key": "p"}}, True)])
def test_gcs_fault_tolerance_is_configured_when_it_names_a_redis(fault_tolerance: Any, configured: bool) -> None:
    body = minimal()
    if fault_tolerance is not None:
        body["spec"]["gcsFaultTolerance"] = fault_tolerance
    assert validate_against_crd(body) == []
    assert (parse_cluster(body, SETTINGS).gcs is not None) is configured

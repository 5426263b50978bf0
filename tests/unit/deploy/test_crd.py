"""The RayCluster CRD: one source, a structural schema, and rules that reject bad specs.

Unknown fields: the server prunes them, or rejects them under strict field validation (what
kubectl asks for by default). The helper takes the strict view, so an unknown field is an
error whose source is "unknown-field".
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any, Callable

import kubernetes_validate
import pytest
import yaml

from rayguard_operator.spec.crd_schema import crd_text
from rayguard_operator.spec.model import MAX_CLUSTER_WORKERS, MAX_GROUP_REPLICAS
from tests.crd_schema import (
    CHART_CRD_PATH,
    CRD_PATH,
    PACKAGE_CRD_PATH,
    REPO_ROOT,
    crd_errors,
    defaulted,
    iter_schema,
    load_crd,
    structural_errors,
    validate_against_crd,
    version_schema,
)

EXAMPLES = sorted((REPO_ROOT / "examples").glob("raycluster*.yaml"))


def _load(path: Path) -> dict[str, Any]:
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


def minimal() -> dict[str, Any]:
    return _load(REPO_ROOT / "examples" / "raycluster-minimal.yaml")


# --- the manifest itself ------------------------------------------------------------------

def test_chart_copy_is_byte_identical() -> None:
    assert CHART_CRD_PATH.read_bytes() == CRD_PATH.read_bytes(), (
        "charts/rayguard/crds/ must be a byte-identical copy of crds/: copy it again")


def test_operator_package_copy_is_byte_identical() -> None:
    """What `rayguard render` checks files against (package data, so an installed operator
    has it) is crds/ itself."""
    assert PACKAGE_CRD_PATH.read_bytes() == CRD_PATH.read_bytes(), (
        "operator/rayguard_operator/spec/ must hold a byte-identical copy of crds/: copy it again")
    assert crd_text() == CRD_PATH.read_text(encoding="utf-8")


def test_manifest_is_a_valid_crd_object() -> None:
    kubernetes_validate.validate(load_crd(), "1.30", strict=True)


def test_names_and_version() -> None:
    crd = load_crd()
    assert crd["metadata"]["name"] == "rayclusters.rayguard.dev"
    names = crd["spec"]["names"]
    assert (names["kind"], names["plural"], names["singular"]) == ("RayCluster", "rayclusters", "raycluster")
    assert "rgc" in names["shortNames"]
    [v1] = crd["spec"]["versions"]
    assert (v1["name"], v1["served"], v1["storage"]) == ("v1", True, True)
    assert v1["subresources"] == {"status": {}}


def test_printer_columns_point_at_status_fields_that_exist() -> None:
    [v1] = load_crd()["spec"]["versions"]
    schema_paths = {path for path, _ in iter_schema(version_schema())}
    columns = {c["name"]: c["jsonPath"] for c in v1["additionalPrinterColumns"]}
    assert {"Phase", "Head Ready", "Ready Workers", "Desired Workers", "OOM Kills", "Outdated Pods", "Age"} <= set(columns)
    for name, json_path in columns.items():
        if json_path != ".metadata.creationTimestamp":
            assert json_path.lstrip(".") in schema_paths, f"column {name} reads a field the schema lacks"


def test_schema_is_structural() -> None:
    assert structural_errors(version_schema()) == []


@pytest.mark.parametrize("breakage, expected", [
    (lambda s: s["properties"]["spec"]["properties"]["image"].pop("type"), "spec.image: type is required"),
    (lambda s: s["properties"]["spec"].update({"x-kubernetes-preserve-unknown-fields": True}),
     "spec: preserves unknown fields"),
    (lambda s: s["properties"]["spec"].update(additionalProperties={"type": "string"}),
     "spec: properties and additionalProperties"),
    (lambda s: s["properties"]["spec"]["properties"]["memory"]["properties"]["objectStoreBytes"].update(
        type="string"), "int-or-string must not set type"),
    (lambda s: s["properties"]["spec"]["properties"]["memory"]["properties"]["usageThreshold"].update(
        default=3), "default is invalid"),
])
def test_structural_checker_catches_breakage(breakage: Callable[[dict], Any], expected: str) -> None:
    schema = copy.deepcopy(version_schema())
    breakage(schema)
    assert any(expected in e for e in structural_errors(schema)), structural_errors(schema)


def test_overrides_have_the_cluster_shape_without_defaults() -> None:
    """head.memory and workerGroups[].memory: same fields as spec.memory (but quota, which is
    cluster-wide), and no defaults, so that an absent field means "inherit from spec.memory"."""
    spec = version_schema()["properties"]["spec"]["properties"]

    def strip(node: dict[str, Any]) -> dict[str, Any]:
        return {k: strip(v) if isinstance(v, dict) else v for k, v in node.items()
                if k not in ("default", "description")}

    cluster = strip(spec["memory"])
    assert cluster["properties"].pop("quota")["properties"].keys() == {"enforcement", "tolerance", "graceSeconds"}
    for override in (spec["head"]["properties"]["memory"],
                     spec["workerGroups"]["items"]["properties"]["memory"]):
        assert not [p for p, n in iter_schema(override) if "default" in n]
        assert strip(override) == cluster


def test_defaults_are_the_designed_ones() -> None:
    spec = defaulted(minimal())["spec"]
    assert spec["head"]["numCpus"] == 0
    group = spec["workerGroups"][0]
    assert (group["replicas"], group["minReplicas"], group["maxReplicas"]) == (1, 0, 1000)
    assert "numCpus" not in group, "a worker's numCpus comes from its CPU limit"
    assert "memory" not in spec["head"] and "memory" not in group
    assert spec["memory"] == {
        "usageThreshold": 0.95, "monitorRefreshMs": 250,
        "objectStoreFraction": 0.3, "objectStoreMaxBytes": "20Gi",
        "redisFraction": 0.3, "redisMaxBytes": "10Gi", "heapFraction": 0.5,
        "flushPolicy": {"flushWhenAtLeastBytes": "2Gi", "flushPeriodSecs": 10,
                        "flushNumEntriesEachTime": 10000},
        "quota": {"enforcement": "Kill", "tolerance": 1.2, "graceSeconds": 5},
        "profiling": {"enabled": False, "match": ["*"], "maxBytes": "1Gi"},
    }


def test_null_means_absent() -> None:
    obj = minimal()
    obj["spec"]["workerGroups"][0]["numCpus"] = None
    obj["spec"]["memory"] = {"objectStoreBytes": None}
    assert validate_against_crd(obj) == []
    assert "numCpus" not in defaulted(obj)["spec"]["workerGroups"][0]


# --- valid objects -------------------------------------------------------------------------

@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_are_accepted(path: Path) -> None:
    assert validate_against_crd(_load(path)) == []


def test_both_examples_exist() -> None:
    assert {p.name for p in EXAMPLES} >= {"raycluster.yaml", "raycluster-minimal.yaml"}


def test_demo_example_fits_a_small_machine() -> None:
    """examples/raycluster.yaml runs locally on a 24 GiB, 2-core machine."""
    spec = _load(REPO_ROOT / "examples" / "raycluster.yaml")["spec"]
    gib = {"2Gi": 2, "3Gi": 3, "4Gi": 4, "8Gi": 8}
    total = gib[spec["head"]["resources"]["limits"]["memory"]] + sum(
        g["replicas"] * gib[g["resources"]["limits"]["memory"]] for g in spec["workerGroups"])
    assert total <= 12


def test_full_status_is_accepted() -> None:
    obj = minimal()
    obj["status"] = {
        "phase": "Running", "observedGeneration": 3,
        "head": {"podName": "minimal-head", "podIP": "10.0.0.7", "serviceName": "minimal-head", "ready": True},
        "workerGroups": [{"name": "cpu", "desired": 1, "ready": 1}],
        "workersReady": 1, "workersDesired": 1, "outdatedPods": 1,
        "memoryPlan": {"head": {"limitBytes": 2147483648}, "cpu": {"objectStoreBytes": 644245094}},
        "oom": {"total": 2, "byKind": {"monitor_kill": 1, "kernel_oom_kill": 1},
                "lastTime": "2025-01-01T00:00:00Z", "lastMessage": "killed", "lastReportId": "1700000000000-0"},
        "conditions": [{"type": "Ready", "status": "True", "reason": "AllReady", "message": "",
                        "lastTransitionTime": "2025-01-01T00:00:00+00:00", "observedGeneration": 3}],
    }
    assert validate_against_crd(obj) == []


def test_status_mistakes_are_reported() -> None:
    """Status fields the schema lacks would be pruned silently by the server."""
    obj = minimal()
    obj["status"] = {"headReady": True, "conditions": [
        {"type": "Ready", "status": "yes", "reason": "", "message": "", "lastTransitionTime": "now"}]}
    errors = validate_against_crd(obj)
    assert any(e.startswith("status.headReady: unknown field") for e in errors)
    assert any(e.startswith("status.conditions[0].status") for e in errors)
    assert any(e.startswith("status.conditions[0].reason") for e in errors)
    assert any(e.startswith("status.conditions[0].lastTransitionTime") for e in errors)


# --- invalid objects -----------------------------------------------------------------------

def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """A mutation that sets a dotted path (list indexes as numbers) in the object."""
    def mutate(obj: dict[str, Any]) -> None:
        *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
        node: Any = obj
        for p in parents:
            node = node[p]
        node[last] = value
    return mutate


def _dup_group(obj: dict[str, Any]) -> None:
    obj["spec"]["workerGroups"].append(copy.deepcopy(obj["spec"]["workerGroups"][0]))


def _many_groups(obj: dict[str, Any]) -> None:
    group = obj["spec"]["workerGroups"][0]
    obj["spec"]["workerGroups"] = [dict(copy.deepcopy(group), name=f"g{i}") for i in range(33)]


def _groups(obj: dict[str, Any], replicas: list[int]) -> None:
    """One worker group per entry, with that many replicas."""
    group = obj["spec"]["workerGroups"][0]
    obj["spec"]["workerGroups"] = [dict(copy.deepcopy(group), name=f"g{i}", replicas=n, maxReplicas=max(n, 1))
                                   for i, n in enumerate(replicas)]


G0 = "spec.workerGroups.0"
CAP, TOTAL = MAX_GROUP_REPLICAS, MAX_CLUSTER_WORKERS

# (id, mutation, source that must reject it, path the error must name, text the message holds)
INVALID = [
    ("negative-replicas", _set(f"{G0}.replicas", -1), "schema", "spec.workerGroups[0].replicas",
     "must be at least 0 (found -1)"),
    ("min-above-replicas", lambda o: (_set(f"{G0}.minReplicas", 2)(o), _set(f"{G0}.maxReplicas", 5)(o)),
     "cel", "spec.workerGroups[0]", "replicas must lie between"),
    ("replicas-above-max", lambda o: (_set(f"{G0}.replicas", 5)(o), _set(f"{G0}.maxReplicas", 3)(o)),
     "cel", "spec.workerGroups[0]", "replicas must lie between"),
    ("min-above-max", lambda o: (_set(f"{G0}.minReplicas", 3)(o), _set(f"{G0}.maxReplicas", 2)(o)),
     "cel", "spec.workerGroups[0]", "minReplicas must not exceed maxReplicas"),
    ("duplicate-group-names", _dup_group, "list-map", "spec.workerGroups[1]", "Duplicate value"),
    ("head-without-memory-limit", _set("spec.head.resources", {"limits": {"cpu": "1"}}),
     "cel", "spec.head.resources", "resources.limits.memory is required"),
    ("head-without-resources", lambda o: o["spec"]["head"].pop("resources"),
     "schema", "spec.head.resources", "is required"),
    ("group-without-memory-limit", _set(f"{G0}.resources", {"requests": {"memory": "2Gi"}}),
     "cel", "spec.workerGroups[0].resources", "resources.limits.memory is required"),
    ("usage-threshold-zero", _set("spec.memory", {"usageThreshold": 0}),
     "schema", "spec.memory.usageThreshold", "must be above 0"),
    ("usage-threshold-above-one", _set("spec.memory", {"usageThreshold": 1.5}),
     "schema", "spec.memory.usageThreshold", "must be at most 1 (found 1.5)"),
    ("object-store-fraction-one", _set("spec.memory", {"objectStoreFraction": 1}),
     "schema", "spec.memory.objectStoreFraction", "must be below 1"),
    ("heap-fraction-zero", _set("spec.memory", {"heapFraction": 0}),
     "schema", "spec.memory.heapFraction", "must be above 0"),
    ("redis-fraction-negative", _set("spec.memory", {"redisFraction": -0.1}),
     "schema", "spec.memory.redisFraction", "must be above 0"),
    ("group-override-out-of-range", _set(f"{G0}.memory", {"usageThreshold": 2}),
     "schema", "spec.workerGroups[0].memory.usageThreshold", "must be at most 1"),
    ("group-name-not-a-dns-label", _set(f"{G0}.name", "Bad_Name"),
     "schema", "spec.workerGroups[0].name", "does not match"),
    ("group-name-too-long", _set(f"{G0}.name", "a" * 64),
     "schema", "spec.workerGroups[0].name", "must be at most 63 characters long"),
    ("negative-num-cpus", _set("spec.head.numCpus", -1), "schema", "spec.head.numCpus", "must be at least 0"),
    ("negative-monitor-refresh", _set("spec.memory", {"monitorRefreshMs": -5}),
     "schema", "spec.memory.monitorRefreshMs", "must be at least 0"),
    ("zero-flush-period", _set("spec.memory", {"flushPolicy": {"flushPeriodSecs": 0}}),
     "schema", "spec.memory.flushPolicy.flushPeriodSecs", "must be at least 1"),
    ("unknown-spec-field", _set("spec.replicaz", 3), "unknown-field", "spec.replicaz", "unknown field"),
    ("bad-memory-quantity", _set("spec.head.resources.limits.memory", "lots"),
     "schema", "spec.head.resources.limits.memory", "does not match"),
    ("milli-bytes", _set("spec.memory", {"objectStoreMaxBytes": "500m"}),
     "schema", "spec.memory.objectStoreMaxBytes", "does not match"),
    ("replicas-as-string", _set(f"{G0}.replicas", "2"), "schema", "spec.workerGroups[0].replicas",
     "must be of type integer (found '2')"),
    ("no-head", lambda o: o["spec"].pop("head"), "schema", "spec.head", "is required"),
    ("too-many-groups", _many_groups, "schema", "spec.workerGroups", "must have at most 32 items (found 33)"),
    ("too-many-ray-start-params", _set("spec.head.rayStartParams", {f"p{i}": i for i in range(65)}),
     "schema", "spec.head.rayStartParams", "must have at most 64 properties (found 65)"),
    # The scale caps (README, "Scale caps").
    ("replicas-above-cap", lambda o: (_set(f"{G0}.replicas", CAP + 1)(o), _set(f"{G0}.maxReplicas", CAP)(o)),
     "schema", "spec.workerGroups[0].replicas", f"must be at most {CAP} (found {CAP + 1})"),
    ("min-replicas-above-cap", _set(f"{G0}.minReplicas", CAP + 1),
     "schema", "spec.workerGroups[0].minReplicas", f"must be at most {CAP}"),
    ("max-replicas-above-cap", _set(f"{G0}.maxReplicas", CAP + 1),
     "schema", "spec.workerGroups[0].maxReplicas", f"must be at most {CAP}"),
    ("workers-above-cluster-cap", lambda o: _groups(o, [TOTAL // 2, TOTAL - TOTAL // 2, 1]),
     "cel", "spec.workerGroups", f"the sum of replicas over all worker groups must be at most {TOTAL}"),
    ("password-without-redis", _set("spec.gcsFaultTolerance", {"passwordSecret": {"name": "r", "key": "p"}}),
     "cel", "spec.gcsFaultTolerance", "passwordSecret needs redisAddress"),
    ("cluster-name-with-dot", _set("metadata.name", "my.cluster"), "schema", "metadata.name", "does not match"),
    ("unknown-upgrade-strategy", _set("spec.upgradeStrategy", {"type": "Rolling"}), "schema",
     "spec.upgradeStrategy.type", "must be one of RollingUpdate, Recreate, None"),
    ("template-unknown-top-level", _set(f"{G0}.template", {"nodeSelector": {"a": "b"}}),
     "unknown-field", "spec.workerGroups[0].template.nodeSelector", "unknown field"),
    ("wrong-api-version", _set("apiVersion", "rayguard.dev/v2"), "type-meta", "apiVersion", "rayguard.dev/v1"),
]


@pytest.mark.parametrize("mutate, source, path, text",
                         [case[1:] for case in INVALID], ids=[case[0] for case in INVALID])
def test_invalid_spec_is_rejected(mutate: Callable[[dict], Any], source: str, path: str, text: str) -> None:
    obj = minimal()
    assert crd_errors(obj) == []
    mutate(obj)
    errors = crd_errors(obj)
    matching = [e for e in errors if e.source == source and e.path == path and text in e.message]
    assert matching, f"expected a {source} error at {path} containing {text!r}, got {errors}"


def test_invalid_table_is_broad_enough() -> None:
    assert len(INVALID) >= 15
    assert {case[2] for case in INVALID} >= {"schema", "cel", "list-map", "unknown-field"}


# --- the scale caps ------------------------------------------------------------------------

@pytest.mark.parametrize("replicas", [[CAP], [TOTAL // 2] * 2, [TOTAL // 32] * 32, [0] * 32, []],
                         ids=["one-group-at-cap", "groups-at-cluster-cap", "32-groups-at-cluster-cap",
                              "32-empty-groups", "no-groups"])
def test_the_caps_accept_what_reaches_them(replicas: list[int]) -> None:
    obj = minimal()
    _groups(obj, replicas)
    assert sum(replicas) <= TOTAL
    assert validate_against_crd(obj) == []


def test_the_crd_caps_are_the_models() -> None:
    """spec.model enforces the same numbers on objects stored before the CRD had them."""
    group = version_schema()["properties"]["spec"]["properties"]["workerGroups"]
    for field in ("replicas", "minReplicas", "maxReplicas"):
        assert group["items"]["properties"][field]["maximum"] == CAP
    [rule] = group["x-kubernetes-validations"]
    assert rule["rule"] == f"self.map(g, g.replicas).sum() <= {TOTAL}"
    assert str(TOTAL) in rule["message"] and f"{TOTAL} workers" in group["description"]
    assert group["maxItems"] * CAP >= TOTAL  # the cluster cap, not the group count, is what binds


def test_list_rules_have_a_bounded_cost() -> None:
    """The API server refuses a CRD whose rules it cannot bound: a rule that walks a list
    (a macro or sum) must sit on a list with maxItems, so its estimated cost is small."""
    walking = re.compile(r"\.(map|all|exists|exists_one|filter|sum)\(")
    found = []
    for path, node in iter_schema(version_schema()):
        for rule in node.get("x-kubernetes-validations", []):
            if walking.search(rule["rule"]):
                found.append(path)
                assert node.get("type") == "array" and node.get("maxItems", 0) <= 64, path
    assert "spec.workerGroups" in found


# What the CRD cannot reject, and the operator's own validation must (SpecValid=False):
# - rayStartParams values that are not strings, integers or booleans: CEL cannot see into a
#   preserve-unknown-fields object;
# - negative integer byte quantities (a string quantity is caught by its pattern, an integer
#   can only be bounded by rules that would cost too much on these maps);
# - a plan that cannot work, e.g. objectStoreFraction + redisFraction >= 1 on the head, or a
#   heap below 100 MiB: it depends on the limit and on the overrides merged across levels.
KNOWN_GAPS = [
    ("ray-start-param-not-scalar", _set("spec.head.rayStartParams", {"resources": ["not", "scalar"]})),
    ("negative-integer-bytes", _set("spec.memory", {"objectStoreBytes": -1})),
    ("fractions-leave-no-heap", _set("spec.memory", {"objectStoreFraction": 0.6, "redisFraction": 0.5})),
]


@pytest.mark.parametrize("mutate", [c[1] for c in KNOWN_GAPS], ids=[c[0] for c in KNOWN_GAPS])
def test_known_gaps_are_left_to_the_operator(mutate: Callable[[dict], Any]) -> None:
    """If the CRD learns to reject one of these, move it to INVALID."""
    obj = minimal()
    mutate(obj)
    assert validate_against_crd(obj) == []

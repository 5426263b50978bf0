"""Validate RayCluster objects the way the API server would, with no API server.

The checks themselves live in the operator, `rayguard_operator.spec.crd_schema`, because
`rayguard render` runs them on every file (the steps are listed there); they read the CRD copy
shipped in that package, which tests/unit/deploy/test_crd.py keeps byte-identical to crds/.
This module re-exports them for the tests, and adds what only the tests need: the CRD read
from crds/ itself, and the structural-schema rules the API server applies to the CRD.

Operator tests reuse :func:`validate_against_crd` to prove that what they build, including
status patches, is something the real server would accept unchanged.
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any, Iterator

import yaml

from rayguard_operator.spec import crd_schema as _runtime
from rayguard_operator.spec.crd_schema import (  # noqa: F401 - re-exported for the tests
    CrdError,
    child_path as _child,
    crd_errors,
    defaulted,
    iter_values,
    schema_validator as _schema_validator,
    to_json_schema,
    validate_against_crd,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
CRD_PATH = REPO_ROOT / "crds" / "rayclusters.rayguard.dev.yaml"
CHART_CRD_PATH = REPO_ROOT / "charts" / "rayguard" / "crds" / "rayclusters.rayguard.dev.yaml"
PACKAGE_CRD_PATH = REPO_ROOT / "operator" / "rayguard_operator" / "spec" / _runtime.CRD_FILE

API_VERSION = "rayguard.dev/v1"
KIND = "RayCluster"

# Where the CRD deliberately keeps arbitrary content. Paths use "[]" for any list item.
PRESERVE_UNKNOWN_PATHS = frozenset({
    "spec.head.rayStartParams",
    "spec.head.template.spec",
    "spec.workerGroups[].rayStartParams",
    "spec.workerGroups[].template.spec",
    "status.memoryPlan",
})

_INT_OR_STRING_ANY_OF = [{"type": "integer"}, {"type": "string"}]
_JUNCTORS = ("allOf", "anyOf", "oneOf", "not")


def load_crd(path: Path = CRD_PATH) -> dict[str, Any]:
    """The CRD as crds/ holds it (the source; the operator reads its byte-identical copy)."""
    return copy.deepcopy(_load_crd(str(path)))


@functools.cache
def _load_crd(path: str) -> dict[str, Any]:
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


def version_schema(crd: dict[str, Any] | None = None, version: str = "v1") -> dict[str, Any]:
    """The openAPIV3Schema of one version of the CRD (crds/'s by default)."""
    return _runtime.version_schema(crd if crd is not None else load_crd(), version)


# --- walking -------------------------------------------------------------------------------

def _schema_children(node: dict[str, Any], path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Each sub-schema under properties, additionalProperties and items, with a schema path."""
    for name, sub in node.get("properties", {}).items():
        yield _child(path, name), sub
    extra = node.get("additionalProperties")
    if isinstance(extra, dict):
        yield f"{path}{{}}", extra
    if isinstance(node.get("items"), dict):
        yield f"{path}[]", node["items"]


def iter_schema(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema node reachable through properties/additionalProperties/items."""
    yield path, node
    for sub_path, sub in _schema_children(node, path):
        yield from iter_schema(sub, sub_path)


# --- structural schema ---------------------------------------------------------------------

def structural_errors(schema: dict[str, Any],
                      preserve_unknown_paths: frozenset[str] = PRESERVE_UNKNOWN_PATHS) -> list[str]:
    """Why ``schema`` is not a structural schema (empty when it is), plus misplaced
    preserve-unknown-fields. Follows the API server's rules for structural schemas."""
    errors: list[str] = []
    if schema.get("type") != "object":
        errors.append("root: type must be object")
    if "additionalProperties" in schema:
        errors.append("root: additionalProperties is not allowed at the root")
    meta = schema.get("properties", {}).get("metadata")
    if meta is not None:
        extra = set(meta.get("properties", {})) - {"name", "generateName"}
        if extra or set(meta) - {"type", "properties", "description"}:
            errors.append("metadata: only name and generateName may be restricted")
    for path, node in iter_schema(schema):
        where = path or "root"
        int_or_string = node.get("x-kubernetes-int-or-string") is True
        preserve = node.get("x-kubernetes-preserve-unknown-fields")
        if not node.get("type") and not int_or_string and preserve is not True:
            errors.append(f"{where}: type is required")
        if int_or_string:
            if "type" in node:
                errors.append(f"{where}: int-or-string must not set type")
            if "anyOf" in node and node["anyOf"] != _INT_OR_STRING_ANY_OF:
                errors.append(f"{where}: int-or-string anyOf must be [integer, string]")
            if preserve:
                errors.append(f"{where}: int-or-string cannot preserve unknown fields")
        if preserve is not None:
            if preserve is not True:
                errors.append(f"{where}: x-kubernetes-preserve-unknown-fields must be true or absent")
            elif path not in preserve_unknown_paths:
                errors.append(f"{where}: preserves unknown fields, which is not intended here")
        if "properties" in node and "additionalProperties" in node:
            errors.append(f"{where}: properties and additionalProperties are mutually exclusive")
        if node.get("nullable"):
            errors.append(f"{where}: nullable is not used by this CRD (absent means inherit)")
        for junctor in _JUNCTORS:
            if junctor not in node:
                continue
            if int_or_string and junctor == "anyOf":
                continue
            branches = node[junctor] if isinstance(node[junctor], list) else [node[junctor]]
            for branch in branches:
                bad = {"description", "type", "default", "additionalProperties", "nullable",
                       "properties", "items"} & set(branch)
                if bad:
                    errors.append(f"{where}: {junctor} must not set {sorted(bad)}")
        if node.get("x-kubernetes-list-type") == "map":
            items = node.get("items", {})
            for key in node.get("x-kubernetes-list-map-keys", []):
                key_node = items.get("properties", {}).get(key)
                if key_node is None:
                    errors.append(f"{where}: list-map key {key} is not a property of the items")
                elif key not in items.get("required", []) and "default" not in key_node:
                    errors.append(f"{where}: list-map key {key} must be required or defaulted")
        for rule in node.get("x-kubernetes-validations", []):
            if "\n" in rule.get("message", ""):
                errors.append(f"{where}: a rule message must be one line")
            try:
                _runtime.cel_program(rule["rule"])
            except Exception as exc:  # noqa: BLE001 - the parser's error is the report
                errors.append(f"{where}: rule {rule.get('rule')!r} does not compile: {exc}")
        if "default" in node:
            for err in _schema_validator(node).iter_errors(node["default"]):
                errors.append(f"{where}: default is invalid: {err.message}")
    return errors

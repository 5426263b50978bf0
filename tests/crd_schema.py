"""Validate RayCluster objects the way the API server would, with no API server.

The steps follow the server's order for a create with kubectl's default strict field
validation:

1. apiVersion and kind must name this CRD;
2. unknown fields are errors (the server would prune them silently for a client that does not
   ask for strict validation, which is worse: the user's setting vanishes);
3. null values of non-nullable fields are dropped, then schema defaults are applied;
4. the OpenAPI schema is checked with ``jsonschema`` (Draft 4, whose boolean
   ``exclusiveMinimum`` matches OpenAPI v3.0), after the ``x-kubernetes-*`` extensions are
   translated into plain JSON Schema;
5. ``x-kubernetes-list-type: map`` keys must be unique;
6. every ``x-kubernetes-validations`` CEL rule is evaluated with ``celpy`` at its node, ``self``
   bound to the node's value. Transition rules (those using ``oldSelf``) are skipped: there is
   no old object here.

Operator tests reuse :func:`validate_against_crd` to prove that what they build, including
status patches, is something the real server would accept unchanged.
"""

from __future__ import annotations

import copy
import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import celpy
import jsonschema
import yaml
from celpy import celtypes

REPO_ROOT = Path(__file__).resolve().parents[1]
CRD_PATH = REPO_ROOT / "crds" / "rayclusters.rayguard.dev.yaml"
CHART_CRD_PATH = REPO_ROOT / "charts" / "rayguard" / "crds" / "rayclusters.rayguard.dev.yaml"

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
_RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")


@dataclass(frozen=True)
class CrdError:
    """One rejection. ``source`` says which mechanism rejected it."""

    path: str
    source: str  # "type-meta" | "unknown-field" | "schema" | "list-map" | "cel"
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


def load_crd(path: Path = CRD_PATH) -> dict[str, Any]:
    return copy.deepcopy(_load_crd(str(path)))


@functools.cache
def _load_crd(path: str) -> dict[str, Any]:
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


def version_schema(crd: dict[str, Any] | None = None, version: str = "v1") -> dict[str, Any]:
    """The openAPIV3Schema of one version of the CRD."""
    crd = crd if crd is not None else load_crd()
    for v in crd["spec"]["versions"]:
        if v["name"] == version:
            return v["schema"]["openAPIV3Schema"]
    raise KeyError(f"CRD has no version {version}")


# --- walking -------------------------------------------------------------------------------

def _child(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


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


def iter_values(value: Any, node: dict[str, Any], path: str = ""
                ) -> Iterator[tuple[Any, dict[str, Any], str]]:
    """Every present value with the schema node that governs it."""
    yield value, node, path
    if isinstance(value, dict):
        props = node.get("properties", {})
        extra = node.get("additionalProperties")
        for key, item in value.items():
            if key in props:
                yield from iter_values(item, props[key], _child(path, key))
            elif isinstance(extra, dict):
                yield from iter_values(item, extra, _child(path, key))
    elif isinstance(value, list) and isinstance(node.get("items"), dict):
        for i, item in enumerate(value):
            yield from iter_values(item, node["items"], _child(path, i))


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
                _program(rule["rule"])
            except Exception as exc:  # noqa: BLE001 - the parser's error is the report
                errors.append(f"{where}: rule {rule.get('rule')!r} does not compile: {exc}")
        if "default" in node:
            for err in _schema_validator(node).iter_errors(node["default"]):
                errors.append(f"{where}: default is invalid: {err.message}")
    return errors


# --- translation to plain JSON Schema ------------------------------------------------------

def to_json_schema(node: dict[str, Any]) -> dict[str, Any]:
    """Translate one OpenAPI v3 CRD schema node (recursively) into Draft 4 JSON Schema."""
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key.startswith("x-kubernetes-") or key in ("default", "nullable", "description"):
            continue
        if key == "properties":
            out[key] = {name: to_json_schema(sub) for name, sub in value.items()}
        elif key in ("additionalProperties", "items", "not") and isinstance(value, dict):
            out[key] = to_json_schema(value)
        elif key in ("allOf", "anyOf", "oneOf"):
            out[key] = [to_json_schema(sub) for sub in value]
        else:
            out[key] = copy.deepcopy(value)
    if node.get("x-kubernetes-int-or-string") and "anyOf" not in out:
        out["anyOf"] = copy.deepcopy(_INT_OR_STRING_ANY_OF)
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    return out


_FORMATS = jsonschema.FormatChecker(formats=())


@_FORMATS.checks("date-time")
def _is_date_time(value: object) -> bool:
    return not isinstance(value, str) or bool(_RFC3339.match(value))


def _schema_validator(node: dict[str, Any]) -> jsonschema.Draft4Validator:
    return jsonschema.Draft4Validator(to_json_schema(node), format_checker=_FORMATS)


# --- defaulting ----------------------------------------------------------------------------

def _normalize(value: Any, node: dict[str, Any], path: str, errors: list[CrdError]) -> None:
    """In place: report unknown fields, drop nulls, apply defaults (nested ones too)."""
    if isinstance(value, dict):
        props = node.get("properties")
        extra = node.get("additionalProperties")
        for key in list(value):
            sub = props.get(key) if props is not None else extra if isinstance(extra, dict) else None
            if value[key] is None and sub is not None and not sub.get("nullable"):
                del value[key]
            elif props is not None and key not in props and path != "metadata" \
                    and not node.get("x-kubernetes-preserve-unknown-fields") \
                    and not isinstance(extra, dict):
                errors.append(CrdError(_child(path, key), "unknown-field", f'unknown field "{key}"'))
                del value[key]
        for key, sub in (props or {}).items():
            if key not in value and "default" in sub:
                value[key] = copy.deepcopy(sub["default"])
        for key, item in value.items():
            sub = (props or {}).get(key) or (extra if isinstance(extra, dict) else None)
            if sub is not None:
                _normalize(item, sub, _child(path, key), errors)
    elif isinstance(value, list) and isinstance(node.get("items"), dict):
        for i, item in enumerate(value):
            _normalize(item, node["items"], _child(path, i), errors)


def defaulted(obj: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``obj`` as the API server stores it: nulls dropped, schema defaults applied.
    Unknown fields are dropped (as the server prunes them)."""
    out = copy.deepcopy(obj)
    _normalize(out, version_schema(), "", [])
    return out


# --- CEL -----------------------------------------------------------------------------------

_CEL_ENV = celpy.Environment()


@functools.cache
def _program(rule: str) -> Any:
    return _CEL_ENV.program(_CEL_ENV.compile(rule))


def _to_cel(value: Any, node: dict[str, Any]) -> Any:
    """Convert with the schema's types, as the server does: `number` is always a double."""
    if isinstance(value, bool):
        return celtypes.BoolType(value)
    if node.get("type") == "number" and isinstance(value, (int, float)):
        return celtypes.DoubleType(float(value))
    if isinstance(value, dict):
        props = node.get("properties", {})
        extra = node.get("additionalProperties")
        return celtypes.MapType({
            celtypes.StringType(k): _to_cel(v, props.get(k) or (extra if isinstance(extra, dict) else {}))
            for k, v in value.items()
        })
    if isinstance(value, list):
        items = node.get("items") if isinstance(node.get("items"), dict) else {}
        return celtypes.ListType([_to_cel(v, items) for v in value])
    return celpy.json_to_cel(value)


_JSON_TYPES = {"object": dict, "array": list, "string": str, "boolean": bool,
               "integer": int, "number": (int, float)}


def _cel_errors(obj: dict[str, Any], schema: dict[str, Any]) -> list[CrdError]:
    errors: list[CrdError] = []
    for value, node, path in iter_values(obj, schema):
        rules = node.get("x-kubernetes-validations")
        expected = _JSON_TYPES.get(node.get("type", ""))
        if not rules or (expected and not isinstance(value, expected)):
            continue  # a type error is already reported by the schema check
        for rule in rules:
            text = rule["rule"]
            if "oldSelf" in text:
                continue
            message = rule.get("message") or f"failed rule: {text}"
            try:
                ok = _program(text).evaluate({"self": _to_cel(value, node)})
            except celpy.CELEvalError as exc:
                errors.append(CrdError(path, "cel", f"{message} (rule could not be evaluated: {exc})"))
                continue
            if not (isinstance(ok, celtypes.BoolType) and bool(ok)):
                errors.append(CrdError(path, "cel", message))
    return errors


# --- the entry points ----------------------------------------------------------------------

def _list_map_errors(obj: dict[str, Any], schema: dict[str, Any]) -> list[CrdError]:
    errors: list[CrdError] = []
    for value, node, path in iter_values(obj, schema):
        if node.get("x-kubernetes-list-type") != "map" or not isinstance(value, list):
            continue
        keys = node.get("x-kubernetes-list-map-keys", [])
        seen: set[tuple[Any, ...]] = set()
        for i, item in enumerate(value):
            if not isinstance(item, dict):
                continue
            key = tuple(repr(item.get(k)) for k in keys)
            if key in seen:
                shown = ", ".join(f"{k}: {item.get(k)}" for k in keys)
                errors.append(CrdError(_child(path, i), "list-map", f"Duplicate value: {{{shown}}}"))
            seen.add(key)
    return errors


def _json_path(parts: Any) -> str:
    path = ""
    for part in parts:
        path = _child(path, part)
    return path


_LIMIT_WORDS = {"maxItems": "items", "maxLength": "characters", "maxProperties": "properties"}


def _schema_message(err: jsonschema.ValidationError) -> str:
    """jsonschema's message, without echoing a whole oversized value."""
    if err.validator in _LIMIT_WORDS:
        return f"is too long: at most {err.validator_value} {_LIMIT_WORDS[err.validator]}"
    return err.message


def crd_errors(obj: dict[str, Any]) -> list[CrdError]:
    """Every reason the API server would reject ``obj``, with which mechanism rejects it."""
    errors: list[CrdError] = []
    if obj.get("apiVersion") != API_VERSION:
        errors.append(CrdError("apiVersion", "type-meta", f"must be {API_VERSION}"))
    if obj.get("kind") != KIND:
        errors.append(CrdError("kind", "type-meta", f"must be {KIND}"))
    schema = version_schema()
    value = copy.deepcopy(obj)
    _normalize(value, schema, "", errors)
    for err in sorted(_schema_validator(schema).iter_errors(value), key=lambda e: list(e.path)):
        errors.append(CrdError(_json_path(err.absolute_path), "schema", _schema_message(err)))
    errors.extend(_list_map_errors(value, schema))
    errors.extend(_cel_errors(value, schema))
    return errors


def validate_against_crd(obj: dict[str, Any]) -> list[str]:
    """Error messages, each led by the field path; empty when the server would accept ``obj``."""
    return [str(e) for e in crd_errors(obj)]

"""A RayCluster checked the way the API server checks it, with no API server.

`rayguard render` and `rayguard local up` read files that no server has seen; to refuse what
`kubectl apply` would refuse, they check them here first, against the CRD's own schema and
CEL rules, and only then hand them to the operator's model (`spec.model`). The steps follow
the server's order for a create under kubectl's default strict field validation:

1. apiVersion and kind must name this CRD;
2. unknown fields are errors (without strict validation the server prunes them silently,
   which is worse: the user's setting vanishes);
3. null values of non-nullable fields are dropped, then schema defaults are applied;
4. the OpenAPI schema is checked with ``jsonschema`` (Draft 4, whose boolean
   ``exclusiveMinimum`` matches OpenAPI v3.0), after the ``x-kubernetes-*`` extensions are
   translated into plain JSON Schema;
5. ``x-kubernetes-list-type: map`` keys and ``set`` items must be unique;
6. every ``x-kubernetes-validations`` CEL rule is evaluated with ``celpy`` at its node, ``self``
   bound to the node's value, with the Kubernetes list library's ``sum()`` (cel-python lacks
   it). Transition rules (those using ``oldSelf``) are skipped: there is no old object here.

The CRD is this package's copy, `rayclusters.rayguard.dev.yaml`, byte-identical to crds/ and
to the chart's (tests/unit/deploy/test_crd.py keeps the three equal), so an installed
operator finds it without the repository.
"""

from __future__ import annotations

import copy
import math
import functools
import importlib.resources
import re
from dataclasses import dataclass
from typing import Any, Iterator

import celpy
import jsonschema
import yaml
from celpy import celtypes

from rayguard_operator import names
from rayguard_operator.errors import SpecError

CRD_FILE = "rayclusters.rayguard.dev.yaml"
_INT_OR_STRING_ANY_OF = [{"type": "integer"}, {"type": "string"}]
_RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")


@dataclass(frozen=True)
class CrdError:
    """One rejection. ``source`` says which mechanism rejected it."""

    path: str
    source: str  # "type-meta" | "decode" | "unknown-field" | "schema" | "list-map" | "cel"
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


def crd_text() -> str:
    """The CRD file as shipped in this package."""
    return importlib.resources.files(__package__).joinpath(CRD_FILE).read_text(encoding="utf-8")


@functools.cache
def _crd() -> dict[str, Any]:
    return yaml.safe_load(crd_text())


def load_crd() -> dict[str, Any]:
    return copy.deepcopy(_crd())


def version_schema(crd: dict[str, Any] | None = None, version: str = names.VERSION) -> dict[str, Any]:
    """The openAPIV3Schema of one version of the CRD (the shipped one by default; not a copy)."""
    for v in (crd if crd is not None else _crd())["spec"]["versions"]:
        if v["name"] == version:
            return v["schema"]["openAPIV3Schema"]
    raise KeyError(f"CRD has no version {version}")


# --- walking -------------------------------------------------------------------------------

def child_path(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def iter_values(value: Any, node: dict[str, Any], path: str = ""
                ) -> Iterator[tuple[Any, dict[str, Any], str]]:
    """Every present value with the schema node that governs it."""
    yield value, node, path
    if isinstance(value, dict):
        props = node.get("properties", {})
        extra = node.get("additionalProperties")
        for key, item in value.items():
            if key in props:
                yield from iter_values(item, props[key], child_path(path, key))
            elif isinstance(extra, dict):
                yield from iter_values(item, extra, child_path(path, key))
    elif isinstance(value, list) and isinstance(node.get("items"), dict):
        for i, item in enumerate(value):
            yield from iter_values(item, node["items"], child_path(path, i))


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


def schema_validator(node: dict[str, Any]) -> jsonschema.Draft4Validator:
    return jsonschema.Draft4Validator(to_json_schema(node), format_checker=_FORMATS)


@functools.cache
def _version_validator() -> jsonschema.Draft4Validator:
    return schema_validator(version_schema())


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
                errors.append(CrdError(child_path(path, key), "unknown-field", f'unknown field "{key}"'))
                del value[key]
        for key, sub in (props or {}).items():
            if key not in value and "default" in sub:
                value[key] = copy.deepcopy(sub["default"])
        for key, item in value.items():
            sub = (props or {}).get(key) or (extra if isinstance(extra, dict) else None)
            if sub is not None:
                _normalize(item, sub, child_path(path, key), errors)
    elif isinstance(value, list) and isinstance(node.get("items"), dict):
        for i, item in enumerate(value):
            _normalize(item, node["items"], child_path(path, i), errors)


def defaulted(obj: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``obj`` as the API server stores it: nulls dropped, schema defaults applied.
    Unknown fields are dropped (as the server prunes them)."""
    out = copy.deepcopy(obj)
    _normalize(out, version_schema(), "", [])
    return out


# --- CEL -----------------------------------------------------------------------------------

def _cel_sum(values: Any) -> Any:
    """The Kubernetes list library's ``sum()``: 0 for an empty list, a double if any is one."""
    items = list(values)
    if all(isinstance(v, int) and not isinstance(v, bool) for v in items):
        return celtypes.IntType(sum(int(v) for v in items))
    return celtypes.DoubleType(sum(float(v) for v in items))


CEL_FUNCTIONS = {"sum": _cel_sum}
_CEL_ENV = celpy.Environment()


@functools.cache
def cel_program(rule: str) -> Any:
    """The compiled rule (a compile error raises celpy's own exception)."""
    return _CEL_ENV.program(_CEL_ENV.compile(rule), functions=CEL_FUNCTIONS)


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
                ok = cel_program(text).evaluate({"self": _to_cel(value, node)})
            except celpy.CELEvalError as exc:
                errors.append(CrdError(path, "cel", f"{message} (rule could not be evaluated: {exc})"))
                continue
            if not (isinstance(ok, celtypes.BoolType) and bool(ok)):
                errors.append(CrdError(path, "cel", message))
    return errors


def _list_map_errors(obj: dict[str, Any], schema: dict[str, Any]) -> list[CrdError]:
    errors: list[CrdError] = []
    for value, node, path in iter_values(obj, schema):
        if node.get("x-kubernetes-list-type") == "set" and isinstance(value, list):
            seen_items: set[str] = set()  # a set's items are scalars here; compared as JSON values
            for i, item in enumerate(value):
                if repr(item) in seen_items:
                    errors.append(CrdError(child_path(path, i), "list-map", f"Duplicate value: {item!r}"))
                seen_items.add(repr(item))
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
                errors.append(CrdError(child_path(path, i), "list-map", f"Duplicate value: {{{shown}}}"))
            seen.add(key)
    return errors


# --- schema messages -----------------------------------------------------------------------

def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


_COUNTED = {"maxItems": ("at most", "items"), "minItems": ("at least", "items"),
            "maxProperties": ("at most", "properties"), "minProperties": ("at least", "properties")}


def _schema_errors(err: jsonschema.ValidationError) -> list[CrdError]:
    """One line per failure, led by the field, never echoing a whole oversized value."""
    path, rule, limit, value = "", err.validator, err.validator_value, err.instance
    for part in err.absolute_path:
        path = child_path(path, part)
    if rule == "required":
        return [CrdError(child_path(path, key), "schema", "is required")
                for key in limit if isinstance(value, dict) and key not in value]
    if rule in _COUNTED:
        bound, what = _COUNTED[rule]
        message = f"must have {bound} {limit} {what} (found {len(value)})"
    elif rule in ("maxLength", "minLength"):
        message = f"must be {'at most' if rule == 'maxLength' else 'at least'} {limit} characters long" \
                  f" (found {len(value)})"
    elif rule in ("maximum", "minimum"):
        exclusive = err.schema.get("exclusiveMaximum" if rule == "maximum" else "exclusiveMinimum") is True
        bound = {("maximum", False): "at most", ("maximum", True): "below",
                 ("minimum", False): "at least", ("minimum", True): "above"}[(rule, exclusive)]
        message = f"must be {bound} {limit} (found {_shown(value)})"
    elif rule == "type":
        message = f"must be of type {limit} (found {_shown(value)})"
    elif rule == "anyOf" and err.schema.get("anyOf") == _INT_OR_STRING_ANY_OF:
        message = f"must be an integer or a string (found {_shown(value)})"
    elif rule == "pattern":
        message = f"{_shown(value)} does not match '{limit}'"
    elif rule == "enum":
        message = f"must be one of {', '.join(map(str, limit))} (found {_shown(value)})"
    else:
        message = err.message if len(err.message) <= 200 else err.message[:197] + "..."
    return [CrdError(path, "schema", message)]


# --- the entry points ----------------------------------------------------------------------

def _by_path(err: jsonschema.ValidationError) -> list[tuple[int, int, str]]:
    return [(0, p, "") if isinstance(p, int) else (1, 0, str(p)) for p in err.absolute_path]


INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def _unencodable(value: Any, path: str) -> list[CrdError]:
    """What a request body cannot carry to the API server: integers beyond 64 bits, NaN or
    infinities (YAML's .nan and .inf have no JSON form), and keys that are not strings."""
    if isinstance(value, bool):
        return []
    if isinstance(value, int) and not INT64_MIN <= value <= INT64_MAX:
        return [CrdError(path or "(object)", "decode", "integer out of range: at most 64 bits")]
    if isinstance(value, float) and not math.isfinite(value):
        return [CrdError(path or "(object)", "decode", f"{value} is not a number JSON can carry")]
    if isinstance(value, dict):
        odd = next((k for k in value if not isinstance(k, str)), None)
        if odd is not None:
            return [CrdError(path or "(object)", "decode", f"keys must be strings, found {odd!r}")]
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        found = _unencodable(item, child_path(path, key))
        if found:
            return found
    return []


def crd_errors(obj: dict[str, Any]) -> list[CrdError]:
    """Every reason the API server would reject ``obj``, in the order it checks them."""
    errors: list[CrdError] = []
    if obj.get("apiVersion") != names.API_VERSION:
        errors.append(CrdError("apiVersion", "type-meta", f"must be {names.API_VERSION}"))
    if obj.get("kind") != names.KIND:
        errors.append(CrdError("kind", "type-meta", f"must be {names.KIND}"))
    errors.extend(_unencodable(obj, ""))
    if errors and errors[-1].source == "decode":
        return errors  # the API server would not get past decoding the request
    schema = version_schema()
    value = copy.deepcopy(obj)
    _normalize(value, schema, "", errors)
    for err in sorted(_version_validator().iter_errors(value), key=_by_path):
        errors.extend(e for e in _schema_errors(err) if e not in errors)
    errors.extend(_list_map_errors(value, schema))
    errors.extend(_cel_errors(value, schema))
    return errors


def validate_against_crd(obj: dict[str, Any]) -> list[str]:
    """Error messages, each led by the field path; empty when the server would accept ``obj``."""
    return [str(e) for e in crd_errors(obj)]


def check_against_crd(obj: dict[str, Any]) -> None:
    """Raise a `SpecError` naming the first field the API server would refuse."""
    errors = crd_errors(obj)
    if errors:
        first = errors[0]
        raise SpecError(first.path or "(object)", first.message)

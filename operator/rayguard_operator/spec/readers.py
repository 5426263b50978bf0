"""Small typed readers of a RayCluster body: each returns the value or raises a SpecError
naming its field path."""

from __future__ import annotations

from typing import Any, Mapping

from rayguard_node.errors import InvalidSetting
from rayguard_node.sizing.quantity import parse_bytes, parse_cpus

from rayguard_operator.errors import SpecError


def _known(data: Mapping[str, Any], path: str, allowed: set[str]) -> None:
    for key in data:
        if key not in allowed:
            raise SpecError(f"{path}.{key}", "unknown field")


def _obj(value: Any, path: str, required: bool = False) -> dict[str, Any]:
    if value is None and not required:
        return {}
    if not isinstance(value, dict):
        raise SpecError(path, "is required" if value is None else f"expected an object, found {type(value).__name__}")
    return value


def _int(data: Mapping[str, Any], key: str, path: str, default: int | None, minimum: int = 0) -> int | None:
    value = data.get(key)
    if value is None:  # absent or null: the API server drops a null and applies the default
        value = default
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError(f"{path}.{key}", f"expected a whole number, found {value!r}")
    if value < minimum:
        raise SpecError(f"{path}.{key}", f"must be at least {minimum}, found {value}")
    return value


def _fraction(value: Any, path: str, upper_inclusive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SpecError(path, f"expected a number, found {value!r}")
    if not (0 < value <= 1 if upper_inclusive else 0 < value < 1):
        raise SpecError(path, f"must be in (0, 1{']' if upper_inclusive else ')'}, found {value}")
    return float(value)


def _bytes(value: Any, path: str) -> int:
    if isinstance(value, float):
        raise SpecError(path, f"expected a quantity such as 4Gi or a whole number, found {value!r}")
    try:
        return parse_bytes(value, path)
    except InvalidSetting as error:
        raise SpecError(path, str(error).split(": ", 1)[-1] + f" (found {value!r})") from None


def _cpus(value: Any, path: str) -> float:
    if isinstance(value, float):
        value = str(value)
    try:
        return parse_cpus(value, path)
    except InvalidSetting as error:
        raise SpecError(path, str(error).split(": ", 1)[-1] + f" (found {value!r})") from None

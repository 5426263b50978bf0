"""The checks every small spec section repeats: an object with known fields, a value from a
fixed set. Each raises a SpecError naming the field."""

from __future__ import annotations

from typing import Any, Collection, Mapping

from rayguard_operator.errors import SpecError


def known_object(data: Any, path: str, fields: Collection[str]) -> Mapping[str, Any]:
    """`data` as a mapping whose keys are all in `fields`."""
    if not isinstance(data, Mapping):
        raise SpecError(path, f"expected an object, found {type(data).__name__}")
    for key in data:
        if key not in fields:
            raise SpecError(f"{path}.{key}", f"unknown field; known: {', '.join(sorted(fields))}")
    return data


def one_of(value: Any, path: str, choices: Collection[str]) -> str:
    """`value`, when it is one of `choices` (listed in their order in the error)."""
    if value not in choices:
        raise SpecError(path, f"must be one of {', '.join(choices)}, found {value!r}")
    return str(value)

"""memory.profiling: memray profiles of a group's Ray worker processes (README, "Profiling").

spec.memory.profiling holds the cluster's values; head.memory.profiling and
workerGroups[].memory.profiling override them field by field, as the other memory knobs do.
Off unless `enabled`; the pod builder then sets the runtime's RAYGUARD_PROFILE* env.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping

from rayguard_node.errors import InvalidSetting
from rayguard_node.sizing.quantity import format_bytes, parse_bytes

from rayguard_operator.errors import SpecError

PROFILING_FIELDS = {"enabled", "match", "maxBytes"}
# The runtime's own bounds (rayguard_node.profiling.index), repeated: the operator imports only
# the node's shared layers.
MAX_GLOBS, MAX_GLOB_CHARS = 16, 128
MIN_MAX_BYTES = 64 << 20
DEFAULT_MAX_BYTES = "1Gi"
DEFAULTS: dict[str, Any] = {"enabled": False, "match": ["*"], "maxBytes": DEFAULT_MAX_BYTES}
_GLOB = re.compile(r"^[^,\s]+$")  # the env var is comma-separated


@dataclass(frozen=True)
class ProfilingSpec:
    enabled: bool = False
    match: tuple[str, ...] = ("*",)
    max_bytes: int = 1 << 30


def _enabled(value: Any, path: str) -> bool:
    if not isinstance(value, bool):
        raise SpecError(path, f"expected true or false, found {value!r}")
    return value


def _match(value: Any, path: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise SpecError(path, f"expected a list of globs such as ['hog*'], found {value!r}")
    if len(value) > MAX_GLOBS:
        raise SpecError(path, f"at most {MAX_GLOBS} globs, found {len(value)}")
    for index, glob in enumerate(value):
        if not isinstance(glob, str) or not _GLOB.match(glob) or len(glob) > MAX_GLOB_CHARS:
            raise SpecError(f"{path}[{index}]", f"expected a glob of 1 to {MAX_GLOB_CHARS} characters without"
                                                f" commas or spaces (use ? for one), found {glob!r}")
    return tuple(value)


def _max_bytes(value: Any, path: str) -> int:
    if isinstance(value, (bool, float)):
        raise SpecError(path, f"expected a quantity such as 1Gi, found {value!r}")
    try:
        parsed = parse_bytes(value, path)
    except InvalidSetting as error:
        raise SpecError(path, str(error).split(": ", 1)[-1] + f" (found {value!r})") from None
    if parsed < MIN_MAX_BYTES:
        raise SpecError(path, f"must be at least {format_bytes(MIN_MAX_BYTES)}, found {value!r}")
    return parsed


_READERS = {"enabled": _enabled, "match": _match, "maxBytes": _max_bytes}


def parse_profiling(layers: list[tuple[Any, str]]) -> ProfilingSpec:
    """`layers`: (a memory block, its path), the cluster's first; the last to set a field wins."""
    chosen = {key: (value, f"spec.memory.profiling.{key}") for key, value in DEFAULTS.items()}
    for memory, path in layers:
        data = memory.get("profiling") if isinstance(memory, Mapping) else None
        if data is None:
            continue
        path = f"{path}.profiling"
        if not isinstance(data, Mapping):
            raise SpecError(path, f"expected an object, found {type(data).__name__}")
        for key, value in data.items():
            if key not in PROFILING_FIELDS:
                raise SpecError(f"{path}.{key}", f"unknown field; known: {', '.join(sorted(PROFILING_FIELDS))}")
            if value is not None:  # a null inherits, as the API server drops it
                chosen[key] = (value, f"{path}.{key}")
    values = {key: _READERS[key](value, where) for key, (value, where) in chosen.items()}
    return ProfilingSpec(values["enabled"], values["match"], values["maxBytes"])

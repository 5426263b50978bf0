"""The `ray start` flags rayguard sets itself, and how a rayStartParams key names a flag.

rayStartParams (`RAYGUARD_RAY_START_PARAMS`) may not set the owned flags: the operator
refuses such a spec and the runtime such a setting, both through `flag_key_problems`, so
the two refuse the same keys with the same words.

How Ray 2.60's CLI reads a flag (`ray/scripts/scripts.py` declares `ray start`'s options
with click, and sets no `token_normalize_func`): click splits `--name=value` at the first
`=`, strips the `--` prefix and matches the name exactly, without abbreviations; the
option's own identity is its declared name lowercased with `-` and `_` equivalent
(`--num-cpus` is `num_cpus`). So `{"temp-dir=/tmp/evil": 1}` rendered as
`--temp-dir=/tmp/evil=1` *is* `--temp-dir`, and `NUM_CPUS` is the same option as
`num-cpus` in everything but click's spelling check. rayguard therefore checks and renders
every key in one canonical spelling (`normalize_flag`) and refuses keys that are not plain
flag names.
"""

from __future__ import annotations

import re
from typing import Collection, Iterable

# Sized by the memory plan (rayguard_node.sizing.plan).
PLAN_FLAGS = frozenset({"num-cpus", "memory", "object-store-memory"})
# Set by the supervisor from the pod's role and paths (rayguard_node.run.ray_command).
SUPERVISOR_FLAGS = frozenset({"head", "address", "block", "temp-dir"})
OWNED_FLAGS = PLAN_FLAGS | SUPERVISOR_FLAGS

# After the leading dashes: ASCII letters, digits, '-' and '_', starting with a letter or digit.
_FLAG_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
_SECRET_WORDS = ("password", "passwd", "token", "secret", "key", "credential")

NOT_A_STRING = "a flag name must be a string"
EMPTY = "a flag name is required"
NOT_A_NAME = ("a flag name is ASCII letters, digits, '-' and '_' only (no '=', spaces or"
              " newlines); put the value in the value")
OWNED = ("rayguard sets this flag itself (from resources, numCpus, memory or its fixed ports);"
         " remove it")


def normalize_flag(key: str) -> str:
    """The flag a key names, as Ray declares it: `--Num_Cpus` -> `num-cpus`."""
    return key.lstrip("-").replace("_", "-").lower()


def flag_key_problems(keys: Iterable[object], reserved: Collection[str] = OWNED_FLAGS
                      ) -> list[tuple[object, str]]:
    """Each key that may not be a rayStartParams key, with why; in the keys' order.

    A key must be a plain flag name (`node-name`, `--node-name`, `node_name`), must not
    name a flag in `reserved` in any spelling, and must not name the same flag as an
    earlier key.
    """
    problems: list[tuple[object, str]] = []
    seen: dict[str, object] = {}
    for key in keys:
        if not isinstance(key, str):
            problems.append((key, NOT_A_STRING))
            continue
        name = key.lstrip("-")
        if not name:
            problems.append((key, EMPTY))
        elif not _FLAG_NAME.fullmatch(name):
            problems.append((key, NOT_A_NAME))
        elif normalize_flag(key) in reserved:
            problems.append((key, OWNED))
        elif normalize_flag(key) in seen:
            problems.append((key, f"names the same flag as {seen[normalize_flag(key)]!r}; give it once"))
        else:
            seen[normalize_flag(key)] = key
    return problems


def flag_field(prefix: str, key: object) -> str:
    """How an error names one key: `rayStartParams.node-name`, or `rayStartParams['a b']`."""
    if isinstance(key, str) and _FLAG_NAME.fullmatch(key.lstrip("-")):
        return f"{prefix}.{key}"
    return f"{prefix}[{key!r}]"


def secret_looking(key: object) -> bool:
    """A key whose value must not be logged or shown in an error (`redis-password`, ...)."""
    return isinstance(key, str) and any(word in key.lower() for word in _SECRET_WORDS)


def shown_value(key: object, value: object) -> object:
    """The value as an error or a log line may show it."""
    return "<hidden>" if secret_looking(key) else value

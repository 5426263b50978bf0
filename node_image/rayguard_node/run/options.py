"""Options of `rayguard-node`: each contract setting as a flag and a `RAYGUARD_*` env var.

The names, meanings and defaults are the contract (`rayguard_node.contract.settings`); this
module adds how each is parsed. A flag wins over its env var. Values are parsed here, once,
into typed values; a bad one becomes an `InvalidSetting` naming both spellings.
"""

from __future__ import annotations

import argparse
import json
import math
import re
from pathlib import Path
from dataclasses import dataclass
from typing import Callable, Mapping

from rayguard_node.contract import settings as contract
from rayguard_node.contract.accelerators import parse_resources_json
from rayguard_node.contract.ray_flags import secret_looking
from rayguard_node.contract.settings import Setting
from rayguard_node.contract.reports import ENFORCEMENTS
from rayguard_node.errors import InvalidSetting
from rayguard_node.profiling.index import MAX_GLOB_CHARS, MAX_GLOBS
from rayguard_node.run.config import DEFAULT_PROCFS_ROOT, DEFAULT_SYSFS_ROOT
from rayguard_node.sizing.plan import ROLES
from rayguard_node.sizing.quantity import parse_bytes


# Plain ASCII numbers: no sign but '-', no spaces, no '_' separators, no nan or inf, which
# Python's float() and int() would all take.
_FLOAT = re.compile(r"-?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]{1,4})?")
_INT = re.compile(r"-?[0-9]{1,10}")
MAX_INT = 2**31 - 1  # ports, periods in ms, CPUs, entries: all far below it
HIDDEN = "<hidden>"


def _float(value: str, field: str) -> float:
    if not _FLOAT.fullmatch(value):
        raise InvalidSetting(field, value, "expected a plain number such as 0.5 (no nan, inf, '+' or spaces)")
    parsed = float(value)
    if not math.isfinite(parsed):
        raise InvalidSetting(field, value, "too large")
    return parsed


def _int(value: str, field: str) -> int:
    if not _INT.fullmatch(value) or abs(int(value)) > MAX_INT:
        raise InvalidSetting(field, value, f"expected a whole number from -{MAX_INT} to {MAX_INT}"
                                           " (digits only)")
    return int(value)


def _role(value: str, field: str) -> str:
    if value not in ROLES:
        raise InvalidSetting(field, value, "must be 'head' or 'worker'")
    return value


def _json_object(value: str, field: str) -> dict[str, object]:
    shown = HIDDEN if secret_looking(value) else value  # a password in it stays out of the error
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as error:
        raise InvalidSetting(field, shown, f"not JSON ({error.msg} at character {error.pos})") from None
    except RecursionError:
        raise InvalidSetting(field, shown[:40] + "...", "nested too deeply") from None
    if not isinstance(parsed, dict):
        raise InvalidSetting(field, shown, 'expected a JSON object such as {"dashboard-port": 8265}')
    return parsed


def _ray_resources(value: str, field: str) -> dict[str, int]:
    resources, why = parse_resources_json(value)
    if resources is None:
        raise InvalidSetting(field, value, why)
    return resources


def _enforcement(value: str, field: str) -> str:
    for mode in ENFORCEMENTS:
        if value.strip().lower() == mode.lower():
            return mode
    raise InvalidSetting(field, value, "must be Kill, Warn or Off")


def _text(value: str, field: str) -> str:
    return value


def _bool(value: str, field: str) -> bool:
    word = value.strip().lower()
    if word in ("true", "1"):
        return True
    if word in ("false", "0"):
        return False
    raise InvalidSetting(field, value, "must be true or false")


def _globs(value: str, field: str) -> tuple[str, ...]:
    """Comma-separated globs; a name holding a comma is matched with `?`."""
    globs = tuple(glob.strip() for glob in value.split(","))
    if not globs or any(not glob for glob in globs):
        raise InvalidSetting(field, value, "expected comma-separated globs such as hog*,Trainer (none empty)")
    if len(globs) > MAX_GLOBS or any(len(glob) > MAX_GLOB_CHARS for glob in globs):
        raise InvalidSetting(field, value, f"at most {MAX_GLOBS} globs of at most {MAX_GLOB_CHARS} characters")
    return globs


@dataclass(frozen=True)
class Option:
    """A contract setting with the parser that turns its text into a typed value."""

    setting: Setting
    parse: Callable[[str, str], object]

    @property
    def name(self) -> str:
        return self.setting.key

    @property
    def flag(self) -> str:
        return self.setting.flag

    @property
    def env_name(self) -> str:
        return self.setting.env

    @property
    def help(self) -> str:
        return f"{self.setting.meaning} (default: {self.setting.default})"


_PARSERS: dict[str, Callable[[str, str], object]] = {
    "role": _role,
    "limit_bytes": parse_bytes, "num_cpus": _int, "object_store_bytes": parse_bytes,
    "object_store_fraction": _float, "object_store_max_bytes": parse_bytes, "redis_fraction": _float,
    "redis_max_bytes": parse_bytes, "heap_fraction": _float, "usage_threshold": _float,
    "monitor_refresh_ms": _int, "guard_refresh_ms": _int, "guard_min_refresh_ms": _int,
    "guard_threshold": _float,
    "shm_bytes": parse_bytes,
    "head_address": _text, "ray_auth_token_file": _text, "redis_url": _text, "redis_port": _int,
    "redis_password_file": _text, "health_port": _int, "ray_temp_dir": _text, "cluster": _text,
    "group": _text, "pod_name": _text, "pod_namespace": _text, "grace_seconds": _float,
    "ray_start_params": _json_object, "num_gpus": _int, "ray_resources": _ray_resources, "flush_when_at_least_bytes": parse_bytes,
    "flush_period_secs": _float, "flush_num_entries_each_time": _int,
    "quota_enforcement": _enforcement, "quota_tolerance": _float, "quota_grace_seconds": _float,
    "dashboard_port": _int, "profile": _bool, "profile_match": _globs, "profile_max_bytes": parse_bytes,
    "gcs_redis_address": _text, "gcs_redis_password": _text, "gcs_redis_username": _text,
    "gcs_storage_namespace": _text, "external_autoscaler": _bool,
}

BUDGET_OPTIONS = tuple(Option(s, _PARSERS[s.key]) for s in contract.BUDGET)
RUN_OPTIONS = tuple(Option(s, _PARSERS[s.key]) for s in contract.RUN)
ROLE_OPTION = Option(contract.ROLE, _PARSERS["role"])

def add_roots(parser: argparse.ArgumentParser) -> None:
    """--sysfs-root and --procfs-root: where the kernel's files are (tests use fake trees)."""
    parser.add_argument("--sysfs-root", type=Path, default=DEFAULT_SYSFS_ROOT,
                        help="where sysfs is (tests use fake trees)")
    parser.add_argument("--procfs-root", type=Path, default=DEFAULT_PROCFS_ROOT, help="where procfs is")


def add_options(parser: argparse.ArgumentParser, options: tuple[Option, ...]) -> None:
    for option in options:
        parser.add_argument(option.flag, dest=option.name, default=None, metavar="VALUE",
                            help=f"{option.help} [env {option.env_name}]".replace("%", "%%"))


def resolve(options: tuple[Option, ...], args: argparse.Namespace,
            environ: Mapping[str, str]) -> dict[str, object]:
    """Flag, else env var, else absent; each value parsed and named on error."""
    resolved: dict[str, object] = {}
    for option in options:
        raw = getattr(args, option.name, None)
        field = option.flag
        if raw is None:
            raw = environ.get(option.env_name) or None
            field = option.env_name
        if raw is not None:
            resolved[option.name] = option.parse(raw, field)
    return resolved

"""Settings of `rayguard-node`: every option is a flag and a `RAYGUARD_*` env var.

The env names are a contract with the operator, which sets them in pods. A flag wins
over its env var. Values are parsed here, once, into typed values; a bad one becomes an
`InvalidSetting` naming both spellings.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from typing import Callable, Mapping

from rayguard_node.errors import InvalidSetting
from rayguard_node.sizing.plan import ROLES, BudgetSettings
from rayguard_node.sizing.quantity import parse_bytes


def _float(value: str, field: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise InvalidSetting(field, value, "expected a number such as 0.5") from None


def _int(value: str, field: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise InvalidSetting(field, value, "expected a whole number") from None


def _role(value: str, field: str) -> str:
    if value not in ROLES:
        raise InvalidSetting(field, value, "must be 'head' or 'worker'")
    return value


def _json_object(value: str, field: str) -> dict[str, object]:
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as error:
        raise InvalidSetting(field, value, f"not JSON ({error.msg})") from None
    if not isinstance(parsed, dict):
        raise InvalidSetting(field, value, 'expected a JSON object such as {"dashboard-port": 8265}')
    return parsed


def _text(value: str, field: str) -> str:
    return value


@dataclass(frozen=True)
class Option:
    name: str  # flag without dashes, and the key in resolved settings
    parse: Callable[[str, str], object]
    help: str
    env: str = ""

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env_name(self) -> str:
        return self.env or "RAYGUARD_" + self.name.upper()


BUDGET_OPTIONS = (
    Option("limit_bytes", parse_bytes, "memory limit to plan for (a quantity, e.g. 4Gi); default: detected"),
    Option("num_cpus", _int, "Ray --num-cpus; default 0 on the head, the CPU limit on workers"),
    Option("object_store_bytes", parse_bytes, "explicit object store size; wins over the fraction"),
    Option("object_store_fraction", _float, "object store share of the limit (default 0.3)"),
    Option("object_store_max_bytes", parse_bytes, "object store cap (default 20Gi)"),
    Option("redis_fraction", _float, "head Redis share of the limit (default 0.3)"),
    Option("redis_max_bytes", parse_bytes, "head Redis cap (default 10Gi)"),
    Option("heap_fraction", _float, "share of the rest given to Ray as --memory (default 0.5)"),
    Option("usage_threshold", _float, "Ray's memory monitor threshold (default 0.95)"),
    Option("monitor_refresh_ms", _int, "Ray's memory monitor period, 0 disables (default 250)"),
    Option("guard_refresh_ms", _int, "rayguard's guard period, 0 disables (default 50)"),
    Option("guard_threshold", _float, "rayguard's guard threshold (default: primary or backstop)"),
    Option("shm_bytes", parse_bytes, "free bytes in /dev/shm to plan for; default: measured"),
)

RUN_OPTIONS = (
    Option("head_address", _text, "host:port of the head's GCS (workers)"),
    Option("ray_auth_token_file", _text, "file holding the Ray auth token; default: generated"),
    Option("redis_url", _text, "external Redis (redis://host:port/db); the head then starts none"),
    Option("redis_port", _int, "port of the head's own redis-server (default 6380)"),
    Option("redis_password_file", _text, "file holding the Redis password; default: generated"),
    Option("health_port", _int, "port for /healthz, /readyz and /metrics (default 8079)"),
    Option("ray_temp_dir", _text, "Ray's --temp-dir"),
    Option("cluster", _text, "RayCluster name, copied into reports"),
    Option("group", _text, "worker group name, copied into reports"),
    Option("pod_name", _text, "pod name, copied into reports", env="POD_NAME"),
    Option("pod_namespace", _text, "pod namespace, copied into reports", env="POD_NAMESPACE"),
    Option("grace_seconds", _float, "SIGTERM grace period (default 25)"),
    Option("ray_start_params", _json_object, "JSON object of extra `ray start` flags"),
    Option("flush_when_at_least_bytes", parse_bytes, "head: flush the ledger once Redis holds this much (default 2Gi, at most 80%% of maxmemory)"),
    Option("flush_period_secs", _float, "head: ledger flush period (default 10)"),
    Option("flush_num_entries_each_time", _int, "head: ledger entries flushed each time (default 10000)"),
)

ROLE_OPTION = Option("role", _role, "head or worker")

BUDGET_FIELDS = {
    "num_cpus", "object_store_bytes", "object_store_fraction", "object_store_max_bytes",
    "redis_fraction", "redis_max_bytes", "heap_fraction", "usage_threshold",
    "monitor_refresh_ms", "guard_refresh_ms", "guard_threshold",
}


def add_options(parser: argparse.ArgumentParser, options: tuple[Option, ...]) -> None:
    for option in options:
        parser.add_argument(option.flag, dest=option.name, default=None, metavar="VALUE",
                            help=f"{option.help} [env {option.env_name}]")


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


def budget_settings(values: Mapping[str, object]) -> BudgetSettings:
    """The budget knobs among resolved values; range errors name the flag and env var."""
    try:
        return BudgetSettings(**{k: v for k, v in values.items() if k in BUDGET_FIELDS})
    except InvalidSetting as error:
        option = next((o for o in BUDGET_OPTIONS if o.name == error.field), None)
        if option is None:
            raise
        raise InvalidSetting(f"{option.flag} / {option.env_name}",
                             values[error.field], str(error).split(": ", 1)[1]) from None

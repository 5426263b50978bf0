"""Settings of `rayguard-node run`, parsed once into a frozen dataclass."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping
from urllib.parse import urlsplit

from rayguard_node.errors import InvalidSetting
from rayguard_node.sizing.plan import HEAD, WORKER
from rayguard_node.contract.ray_flags import (OWNED_FLAGS, flag_field, flag_key_problems, normalize_flag,
                                              shown_value)
from rayguard_node.contract.reports import KILL, Identity
from rayguard_node.contract.accelerators import parse_resources_json
from rayguard_node.contract.gcs import address_problem, key_prefix, namespace_problem
from rayguard_node.guard.quota import QuotaSettings
from rayguard_node.profiling.index import DEFAULT_MAX_BYTES, MIN_MAX_BYTES, ProfileSettings

DEFAULT_REDIS_PORT = 6380
DEFAULT_HEALTH_PORT = 8079
DEFAULT_GRACE_SECONDS = 25.0
DEFAULT_GCS_PORT = 6379
DEFAULT_DASHBOARD_PORT = 8265
DEFAULT_RAY_TEMP_DIR = Path("/tmp/ray")
DEFAULT_SYSFS_ROOT = Path("/sys")
DEFAULT_PROCFS_ROOT = Path("/proc")
FLUSH_KEYS = ("flush_when_at_least_bytes", "flush_period_secs", "flush_num_entries_each_time")


@dataclass(frozen=True)
class GcsRedis:
    """GCS fault tolerance on an external Redis (contract/gcs.py). The password is never shown."""

    address: str
    namespace: str
    password: str | None = field(default=None, repr=False)
    username: str | None = None

    @property
    def host(self) -> str:
        return self.address.rsplit(":", 1)[0]

    @property
    def port(self) -> int:
        return int(self.address.rsplit(":", 1)[1])

    @property
    def key_prefix(self) -> str:
        return key_prefix(self.namespace)


def gcs_redis(values: Mapping[str, object]) -> GcsRedis | None:
    address = values.get("gcs_redis_address")
    if not address:
        return None
    if (why := address_problem(str(address))) is not None:
        raise InvalidSetting("--gcs-redis-address / RAYGUARD_GCS_REDIS_ADDRESS", address, why)
    if values.get("redis_url"):
        raise InvalidSetting("--redis-url / RAYGUARD_REDIS_URL", "<set>", "reports go to the GCS's external"
                             " Redis (--gcs-redis-address); give one of the two")
    namespace = str(values.get("gcs_storage_namespace") or "")
    if (why := namespace_problem(namespace)) is not None:
        raise InvalidSetting("--gcs-storage-namespace / RAYGUARD_GCS_STORAGE_NAMESPACE", namespace,
                             why + " (required with --gcs-redis-address)")
    return GcsRedis(str(address), namespace, str(values.get("gcs_redis_password") or "") or None,
                    str(values.get("gcs_redis_username") or "") or None)


@dataclass(frozen=True)
class RunConfig:
    role: str
    head_address: str | None = None
    ray_auth_token_file: Path | None = None
    redis_url: str | None = None
    redis_port: int = DEFAULT_REDIS_PORT
    redis_password_file: Path | None = None
    health_port: int = DEFAULT_HEALTH_PORT
    ray_temp_dir: Path | None = None
    identity: Identity = Identity()
    grace_seconds: float = DEFAULT_GRACE_SECONDS
    ray_start_params: Mapping[str, object] = field(default_factory=dict)  # without num-gpus, resources
    num_gpus: int | None = None  # None: Ray counts the GPUs it sees
    ray_resources: Mapping[str, int] = field(default_factory=dict)
    flush_policy: Mapping[str, float] = field(default_factory=dict)
    quota: QuotaSettings = QuotaSettings()
    dashboard_port: int = DEFAULT_DASHBOARD_PORT
    profile: ProfileSettings = ProfileSettings()
    gcs: GcsRedis | None = None  # GCS fault tolerance: reports, ledger and Ray's GCS in this Redis
    external_autoscaler: bool = False  # head: the autoscaler sidecar runs Ray's autoscaler (--no-monitor)
    # Where the kernel's files are: the real ones in a pod, fake trees in tests.
    sysfs_root: Path = DEFAULT_SYSFS_ROOT
    procfs_root: Path = DEFAULT_PROCFS_ROOT

    @property
    def effective_temp_dir(self) -> Path:
        return self.ray_temp_dir or DEFAULT_RAY_TEMP_DIR

    @property
    def head_host(self) -> str:
        return (self.head_address or "127.0.0.1").rsplit(":", 1)[0]

    @property
    def gcs_port(self) -> int:
        if self.role == HEAD:
            return int(str(self.ray_start_params.get("port", DEFAULT_GCS_PORT)))
        return int(str(self.head_address).rsplit(":", 1)[1])


def run_config(values: Mapping[str, object]) -> RunConfig:
    role = values.get("role")
    if role is None:
        raise InvalidSetting("--role / RAYGUARD_ROLE", None, "required: head or worker")
    head_address = values.get("head_address")
    if role == WORKER:
        if not head_address:
            raise InvalidSetting("--head-address / RAYGUARD_HEAD_ADDRESS", head_address,
                                 "a worker needs the head's GCS address as host:port")
        host, _, port = str(head_address).rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise InvalidSetting("--head-address / RAYGUARD_HEAD_ADDRESS", head_address,
                                 "expected host:port, e.g. demo-head:6379")
    for name in ("redis_port", "health_port", "dashboard_port"):
        port_value = values.get(name)
        if port_value is not None and not 0 < int(port_value) < 65536:  # type: ignore[call-overload]
            raise InvalidSetting(f"--{name.replace('_', '-')} / RAYGUARD_{name.upper()}", port_value,
                                 "not a TCP port")
    grace = float(values.get("grace_seconds", DEFAULT_GRACE_SECONDS))  # type: ignore[arg-type]
    if not math.isfinite(grace) or grace < 0:
        raise InvalidSetting("--grace-seconds / RAYGUARD_GRACE_SECONDS", grace,
                             "must be a finite number of seconds, not negative")
    redis_url = str(values["redis_url"]) if values.get("redis_url") else None
    if redis_url is not None:
        check_redis_url(redis_url, "--redis-url / RAYGUARD_REDIS_URL")
    params = ray_start_params(dict(values.get("ray_start_params") or {}))  # type: ignore[call-overload]
    num_gpus, ray_resources = accelerators(str(role), values, params)

    for key in FLUSH_KEYS:
        value = values.get(key)
        if value is not None and (not math.isfinite(value) or value < 0  # type: ignore[arg-type, operator]
                                  or (key == "flush_num_entries_each_time" and value < 1)):  # type: ignore[operator]
            raise InvalidSetting(f"--{key.replace('_', '-')} / RAYGUARD_{key.upper()}", value,
                                 "must be a finite number, not negative")

    tolerance = float(values.get("quota_tolerance", 1.2))  # type: ignore[arg-type]
    if not math.isfinite(tolerance) or tolerance < 1:
        raise InvalidSetting("--quota-tolerance / RAYGUARD_QUOTA_TOLERANCE", tolerance,
                             "must be a number of at least 1 (1.2 allows 20% over the quota)")
    quota_grace = float(values.get("quota_grace_seconds", 5.0))  # type: ignore[arg-type]
    if not math.isfinite(quota_grace) or quota_grace < 0:
        raise InvalidSetting("--quota-grace-seconds / RAYGUARD_QUOTA_GRACE_SECONDS", quota_grace,
                             "must be a finite number of seconds, not negative")
    quota = QuotaSettings(str(values.get("quota_enforcement") or KILL), tolerance, quota_grace)
    profile = ProfileSettings(bool(values.get("profile", False)),
                              tuple(values.get("profile_match") or ("*",)),  # type: ignore[arg-type]
                              int(values.get("profile_max_bytes", DEFAULT_MAX_BYTES)))  # type: ignore[call-overload]
    if profile.max_bytes < MIN_MAX_BYTES:
        raise InvalidSetting("--profile-max-bytes / RAYGUARD_PROFILE_MAX_BYTES", profile.max_bytes,
                             f"must be at least {MIN_MAX_BYTES >> 20}Mi (a worker's file starts at about 1.5 MiB)")

    def path(name: str) -> Path | None:
        value = values.get(name)
        return Path(str(value)) if value else None

    return RunConfig(
        role=str(role),
        head_address=str(head_address) if head_address else None,
        ray_auth_token_file=path("ray_auth_token_file"),
        redis_url=redis_url,
        redis_port=int(values.get("redis_port", DEFAULT_REDIS_PORT)),  # type: ignore[call-overload]
        redis_password_file=path("redis_password_file"),
        health_port=int(values.get("health_port", DEFAULT_HEALTH_PORT)),  # type: ignore[call-overload]
        ray_temp_dir=path("ray_temp_dir"),
        identity=Identity(*(str(values.get(k) or "") for k in ("cluster", "pod_namespace", "pod_name", "group")),
                          role=str(role)),
        grace_seconds=grace,
        ray_start_params=params,
        num_gpus=num_gpus,
        ray_resources=ray_resources,
        flush_policy={k: values[k] for k in FLUSH_KEYS if k in values},  # type: ignore[misc]
        quota=quota,
        dashboard_port=int(values.get("dashboard_port", DEFAULT_DASHBOARD_PORT)),  # type: ignore[call-overload]
        profile=profile,
        gcs=gcs_redis(values),
        external_autoscaler=bool(values.get("external_autoscaler", False)),
        sysfs_root=Path(str(values.get("sysfs_root") or DEFAULT_SYSFS_ROOT)),
        procfs_root=Path(str(values.get("procfs_root") or DEFAULT_PROCFS_ROOT)),
    )


PARAMS_FIELD = "--ray-start-params / rayStartParams"


def ray_start_params(given: Mapping[object, object]) -> dict[str, object]:
    """rayStartParams with each key in Ray's own spelling (`--Num_Cpus` is `num-cpus`).

    The keys are refused as the operator refuses them (`contract.ray_flags`); the runtime
    allows `port` (the head's GCS port), which the operator fixes itself.
    """
    for key, why in flag_key_problems(given, OWNED_FLAGS):  # the first one
        raise InvalidSetting(flag_field(PARAMS_FIELD, key), shown_value(key, given[key]), why)
    params = {normalize_flag(str(k)): v for k, v in given.items()}
    for key, value in params.items():
        if value is not None and not isinstance(value, (str, int, float, bool)):
            raise InvalidSetting(f"{PARAMS_FIELD}.{key}", shown_value(key, value),
                                 "values must be strings, numbers, booleans or null")
        if isinstance(value, float) and not math.isfinite(value):
            raise InvalidSetting(f"{PARAMS_FIELD}.{key}", value, "must be a finite number")
    port = params.get("port")
    if port is not None and not (re.fullmatch(r"[0-9]{1,5}", str(port)) and 0 < int(str(port)) < 65536):
        raise InvalidSetting(f"{PARAMS_FIELD}.port", port, "not a TCP port")
    return params


def accelerators(role: str, values: Mapping[str, object], params: dict[str, object]
                 ) -> tuple[int | None, dict[str, int]]:
    """`--num-gpus` and `--resources` for Ray: the settings, with what rayStartParams says of them
    taken out of `params` (each flag is given once). rayStartParams may repeat a setting, not
    contradict it; the head gets `--num-gpus=0` unless told (it takes no tasks by default)."""
    num_gpus = values.get("num_gpus")
    if num_gpus is not None and int(num_gpus) < 0:  # type: ignore[call-overload]
        raise InvalidSetting("--num-gpus / RAYGUARD_NUM_GPUS", num_gpus, "must not be negative")
    resources = dict(values.get("ray_resources") or {})  # type: ignore[call-overload]
    if "num-gpus" in params:
        given = params.pop("num-gpus")
        if isinstance(given, bool) or not re.fullmatch(r"[0-9]{1,10}", str(given)):
            raise InvalidSetting(f"{PARAMS_FIELD}.num-gpus", given, "expected a whole number of GPUs")
        if num_gpus is not None and int(str(given)) != num_gpus:
            raise InvalidSetting(f"{PARAMS_FIELD}.num-gpus", given,
                                 f"contradicts --num-gpus / RAYGUARD_NUM_GPUS ({num_gpus}); give it once")
        num_gpus = int(str(given))
    if "resources" in params:
        given = params.pop("resources")
        extra, why = parse_resources_json(given) if isinstance(given, str) else (None, "expected a JSON object in a string")
        if extra is None:
            raise InvalidSetting(f"{PARAMS_FIELD}.resources", given, why)
        for name in sorted(extra):
            if name in resources and resources[name] != extra[name]:
                raise InvalidSetting(f"{PARAMS_FIELD}.resources", given,
                                     f"{name}: {extra[name]} contradicts --ray-resources / RAYGUARD_RAY_RESOURCES"
                                     f" ({resources[name]}); give it once")
        resources.update(extra)
    if num_gpus is None and role == HEAD:
        num_gpus = 0
    return num_gpus, resources  # type: ignore[return-value]


def redact_url(url: str) -> str:
    """The URL without its password: `redis://:pw@host:6379/0` -> `redis://host:6379/0`."""
    scheme, sep, rest = url.partition("://")
    authority, slash, tail = rest.partition("/")
    userinfo, at, host = authority.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    user = userinfo.split(":", 1)[0]
    return f"{scheme}{sep}{user + '@' if user else ''}{host}{slash}{tail}"


def check_redis_url(url: str, field: str) -> None:
    """Refuse at start what redis-py would refuse (or misread) at the first report."""
    shown = redact_url(url)

    def refuse(why: str) -> None:
        raise InvalidSetting(field, shown, why + "; expected redis://[:password@]host[:port][/db]"
                                                 " or rediss://...")

    if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in url):
        refuse("spaces and control characters are not allowed")
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss"):
        refuse("the scheme must be redis:// or rediss://")
    if not parts.hostname:
        refuse("a host is required")
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0 or (port is None and parts.netloc.rstrip("]").endswith(":")):
        refuse("the port must be a number from 1 to 65535")
    if not re.fullmatch(r"(/[0-9]{0,9})?/?", parts.path):
        refuse("the path is the database number, e.g. /0")
    import redis  # what redis.Redis.from_url will make of it, without connecting

    try:
        redis.ConnectionPool.from_url(url).make_connection()
    except (ValueError, TypeError, redis.RedisError) as error:
        refuse(f"redis-py cannot use it ({error})".replace(url, shown))

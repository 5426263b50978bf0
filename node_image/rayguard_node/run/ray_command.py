"""The `ray start` command line and environment for a plan (pure functions)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

from rayguard_node.contract.accelerators import resources_json
from rayguard_node.contract.ray_flags import normalize_flag, secret_looking
from rayguard_node.contract.gcs import (RAY_REDIS_ADDRESS_ENV, RAY_STORAGE_NAMESPACE_ENV, REDIS_PASSWORD_FLAG,
                                        REDIS_USERNAME_FLAG)
from rayguard_node.contract.settings import GCS_REDIS_PASSWORD, GCS_REDIS_USERNAME, REDIS_URL
from rayguard_node.run.config import GcsRedis, RunConfig, redact_url
from rayguard_node.sizing.plan import HEAD, MemoryPlan

# Variables that could make Ray pick up a token other than ours.
FOREIGN_AUTH_VARS = ("RAY_AUTH_TOKEN",)
HIDDEN = "<hidden>"


def render_params(params: Mapping[str, object]) -> list[str]:
    """rayStartParams as flags: `{"dashboard-port": 8265}` -> `--dashboard-port=8265`.

    Booleans become `true`/`false` values, and null makes a bare flag.
    """
    args = []
    for key, value in params.items():
        flag = "--" + normalize_flag(key)
        if value is None:
            args.append(flag)
        elif isinstance(value, bool):
            args.append(f"{flag}={'true' if value else 'false'}")
        else:
            args.append(f"{flag}={value}")
    return args


def ray_start_argv(config: RunConfig, plan: MemoryPlan, ray_executable: str = "ray") -> list[str]:
    argv = [ray_executable, "start", "--block", "--disable-usage-stats"]
    params = dict(config.ray_start_params)
    if config.role == HEAD:
        argv += ["--head", f"--port={config.gcs_port}"]
        params.pop("port", None)
        params.setdefault("dashboard-host", "0.0.0.0")
        if config.external_autoscaler:  # the sidecar runs Ray's autoscaler; Ray's own monitor must not
            argv.append("--no-monitor")
    else:
        argv.append(f"--address={config.head_address}")
    if config.ray_temp_dir is not None:
        argv.append(f"--temp-dir={config.ray_temp_dir}")
    argv += plan.ray_start_args
    argv += accelerator_args(config)
    argv += render_params(params)
    if config.role == HEAD and config.gcs is not None:  # Ray 2.60 takes these as flags only
        argv += gcs_credential_args(config.gcs)
    return argv


def gcs_credential_args(gcs: GcsRedis) -> list[str]:
    """`--redis-password` and `--redis-username` for the head's `ray start` (contract/gcs.py)."""
    args = [f"{REDIS_PASSWORD_FLAG}={gcs.password}"] if gcs.password else []
    return args + ([f"{REDIS_USERNAME_FLAG}={gcs.username}"] if gcs.username else [])


def gcs_environment(gcs: GcsRedis) -> dict[str, str]:
    """The head's environment for Ray's GCS fault tolerance (contract/gcs.py)."""
    return {RAY_REDIS_ADDRESS_ENV: gcs.address, RAY_STORAGE_NAMESPACE_ENV: gcs.namespace}


def accelerator_args(config: RunConfig) -> list[str]:
    """`--num-gpus` (none: Ray counts the GPUs it sees) and `--resources`, as Ray 2.60 takes
    them: a whole number, and one JSON object (TPU chips are its `TPU` key)."""
    args = [] if config.num_gpus is None else [f"--num-gpus={config.num_gpus}"]
    if config.ray_resources:
        args.append(f"--resources={resources_json(config.ray_resources)}")
    return args


def ray_environment(plan: MemoryPlan, token_path: Path,
                    base: Mapping[str, str] | None = None, gcs: GcsRedis | None = None,
                    head: bool = False) -> dict[str, str]:
    """The environment for Ray: the plan's monitor settings and our token, nobody else's; on a
    fault-tolerant head, Ray's external Redis. The Redis password and user never reach Ray's
    processes through it (every worker process inherits it)."""
    env = dict(os.environ if base is None else base)
    for name in FOREIGN_AUTH_VARS + (GCS_REDIS_PASSWORD.env, GCS_REDIS_USERNAME.env, RAY_REDIS_ADDRESS_ENV,
                                     RAY_STORAGE_NAMESPACE_ENV):
        env.pop(name, None)
    if gcs is not None and head:
        env.update(gcs_environment(gcs))
    if env.get(REDIS_URL.env):  # every Ray process gets this environment: no password in it
        env[REDIS_URL.env] = redact_url(env[REDIS_URL.env])
    env.update(plan.ray_env)
    env["RAY_AUTH_MODE"] = "token"
    env["RAY_AUTH_TOKEN_PATH"] = str(token_path)
    return env


def loggable_argv(argv: list[str]) -> list[str]:
    """The argv as a log line may show it: secret-looking flags' values hidden."""
    shown = []
    for arg in argv:
        flag, equals, _value = arg.partition("=")
        shown.append(f"{flag}={HIDDEN}" if equals and flag.startswith("--") and secret_looking(flag) else arg)
    return shown

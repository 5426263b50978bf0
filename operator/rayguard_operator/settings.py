"""Operator settings, read from the environment once into a frozen dataclass.

The chart sets these variables on the operator's Deployment; `rayguard operator` and
`rayguard render` read them the same way, so a render shows what this operator would build.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Mapping

from rayguard_node.errors import RayguardError

DEFAULT_NODE_IMAGE = "rayguard/node:0.1.0"
DEFAULT_RESYNC_SECONDS = 60.0
LOG_FORMATS = ("json", "plain")
# The Pod Security Standard every pod the operator builds must pass (spec/pod_security.py).
POD_SECURITY_LEVELS = ("restricted", "baseline", "privileged")
DEFAULT_POD_SECURITY = "restricted"
# Threads for the OOM path's blocking API calls (status.oom, Events), shared by every cluster's
# report follower: one report's status write and Events take about five calls, and reports
# to 50 clusters at once should not queue behind each other (bench/oom_events.py).
DEFAULT_OOM_THREADS = 32
MAX_OOM_THREADS = 1024

ENV_NODE_IMAGE = "RAYGUARD_OPERATOR_NODE_IMAGE"
ENV_NAMESPACES = "RAYGUARD_OPERATOR_NAMESPACES"
ENV_RESYNC_SECONDS = "RAYGUARD_OPERATOR_RESYNC_SECONDS"
ENV_LOG_FORMAT = "RAYGUARD_OPERATOR_LOG_FORMAT"
ENV_POD_SECURITY = "RAYGUARD_OPERATOR_POD_SECURITY"
ENV_OOM_THREADS = "RAYGUARD_OPERATOR_OOM_THREADS"
ENV_METRICS_PORT = "RAYGUARD_OPERATOR_METRICS_PORT"
# The operator's Prometheus /metrics (metrics.py); 0 turns it off.
DEFAULT_METRICS_PORT = 9100

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


class SettingsError(RayguardError):
    """An operator env var holds a value the operator cannot use; str() is one line."""


@dataclass(frozen=True)
class OperatorSettings:
    node_image: str = DEFAULT_NODE_IMAGE
    # Empty: every namespace.
    namespaces: tuple[str, ...] = ()
    resync_seconds: float = DEFAULT_RESYNC_SECONDS
    log_format: str = "json"
    # A group's template overlay that would make its pods break this level is an invalid spec.
    pod_security: str = DEFAULT_POD_SECURITY
    # Most OOM reports (of different clusters) counted and posted at the same time.
    oom_threads: int = DEFAULT_OOM_THREADS
    metrics_port: int = DEFAULT_METRICS_PORT

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "OperatorSettings":
        env = os.environ if environ is None else environ
        image = env.get(ENV_NODE_IMAGE, "").strip() or DEFAULT_NODE_IMAGE
        namespaces = tuple(n.strip() for n in env.get(ENV_NAMESPACES, "").split(",") if n.strip())
        for namespace in namespaces:
            if not _DNS_LABEL.match(namespace) or len(namespace) > 63:
                raise SettingsError(f"{ENV_NAMESPACES}: {namespace!r} is not a namespace name")
        raw_resync = env.get(ENV_RESYNC_SECONDS, "").strip()
        try:
            resync = float(raw_resync) if raw_resync else DEFAULT_RESYNC_SECONDS
        except ValueError:
            raise SettingsError(f"{ENV_RESYNC_SECONDS}={raw_resync!r}: expected seconds, e.g. 60") from None
        if not resync > 0:
            raise SettingsError(f"{ENV_RESYNC_SECONDS}={raw_resync!r}: must be above 0")
        log_format = env.get(ENV_LOG_FORMAT, "").strip().lower() or "json"
        if log_format not in LOG_FORMATS:
            raise SettingsError(f"{ENV_LOG_FORMAT}={log_format!r}: expected json or plain")
        pod_security = env.get(ENV_POD_SECURITY, "").strip().lower() or DEFAULT_POD_SECURITY
        if pod_security not in POD_SECURITY_LEVELS:
            raise SettingsError(f"{ENV_POD_SECURITY}={pod_security!r}: expected restricted, baseline or privileged")
        return cls(node_image=image, namespaces=tuple(dict.fromkeys(namespaces)),
                   resync_seconds=resync, log_format=log_format, pod_security=pod_security,
                   oom_threads=_oom_threads(env.get(ENV_OOM_THREADS, "").strip()),
                   metrics_port=_metrics_port(env.get(ENV_METRICS_PORT, "").strip()))


def _metrics_port(raw: str) -> int:
    if not raw:
        return DEFAULT_METRICS_PORT
    if not (raw.isascii() and raw.isdigit()) or int(raw) > 65535:
        raise SettingsError(f"{ENV_METRICS_PORT}={raw!r}: expected a TCP port, or 0 for no metrics")
    return int(raw)


def _oom_threads(raw: str) -> int:
    if not raw:
        return DEFAULT_OOM_THREADS
    # ASCII digits only: int() would also take "+8", "1_000" and other scripts' digits.
    if not (raw.isascii() and raw.isdigit()):
        raise SettingsError(f"{ENV_OOM_THREADS}={raw!r}: expected a whole number of threads,"
                            f" e.g. {DEFAULT_OOM_THREADS}")
    threads = int(raw)
    if not 1 <= threads <= MAX_OOM_THREADS:
        raise SettingsError(f"{ENV_OOM_THREADS}={raw!r}: must be from 1 to {MAX_OOM_THREADS}")
    return threads

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

ENV_NODE_IMAGE = "RAYGUARD_OPERATOR_NODE_IMAGE"
ENV_NAMESPACES = "RAYGUARD_OPERATOR_NAMESPACES"
ENV_RESYNC_SECONDS = "RAYGUARD_OPERATOR_RESYNC_SECONDS"
ENV_LOG_FORMAT = "RAYGUARD_OPERATOR_LOG_FORMAT"
ENV_POD_SECURITY = "RAYGUARD_OPERATOR_POD_SECURITY"

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
                   resync_seconds=resync, log_format=log_format, pod_security=pod_security)

"""The operator's errors. Each str() is one line a user can act on."""

from __future__ import annotations

from rayguard_node.errors import RayguardError


class SpecError(RayguardError):
    """A RayCluster field the operator cannot use. `path` names it, e.g.
    `spec.workerGroups[1].resources.limits.memory`; the message starts with it."""

    def __init__(self, path: str, why: str) -> None:
        super().__init__(f"{path}: {why}")
        self.path = path


class KubeApiError(RayguardError):
    """The API server refused or failed a request. The message never holds a request body."""

    def __init__(self, verb: str, what: str, status: int | None, reason: str, message: str = "") -> None:
        detail = f": {message}" if message else ""
        super().__init__(f"{verb} {what} failed ({status} {reason}){detail}")
        self.status = status
        self.reason = reason

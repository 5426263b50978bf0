"""What a pass saw (`Observed`) and one write it plans (`Action`): the planners' common types."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from rayguard_operator.manifests import events


@dataclass(frozen=True)
class Observed:
    """What exists now: the Secret, the head Service, every pod with the cluster's label, and
    the autoscaler's children that were read (kind -> object, or None when it does not exist;
    a kind that is not a key was not read: `reconcile/autoscaler.py`)."""

    secret: dict[str, Any] | None
    service: dict[str, Any] | None
    pods: tuple[dict[str, Any], ...] = ()
    autoscaler: Mapping[str, dict[str, Any] | None] = field(default_factory=dict)


@dataclass(frozen=True)
class Action:
    verb: str  # create | patch | delete
    kind: str  # Secret | Service | Pod | ServiceAccount | Role | RoleBinding | ConfigMap
    name: str
    body: dict[str, Any] | None = field(default=None, repr=False)  # object or merge patch
    why: str = ""

    @property
    def note(self) -> events.EventNote:
        """The Normal event posted on the RayCluster once the action succeeded."""
        reason = {"create": events.CREATED, "patch": events.UPDATED, "delete": events.DELETED}[self.verb]
        return events.EventNote(events.NORMAL, reason,
                                f"{reason} {self.kind} {self.name}{': ' + self.why if self.why else ''}")

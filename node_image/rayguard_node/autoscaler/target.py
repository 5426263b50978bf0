"""The seam the provider scales through: a `ScaleTarget`. Which one a provider uses, the
provider config says (provider.py, `load_target`)."""

from __future__ import annotations

from typing import AbstractSet, Mapping, Protocol

from ray.autoscaler.batching_node_provider import NodeData

class TargetUnavailable(Exception):
    """The target could not be read or written now (API server gone, refused, conflicts without
    end). The provider then decides nothing: no update of the autoscaler acts on a blind read."""


class ScaleTarget(Protocol):
    def nodes(self) -> dict[str, NodeData]:
        """Every node now, by pod name: the head and the workers (not those being deleted).
        Raises TargetUnavailable when it cannot tell."""

    def unconsumed_deletions(self) -> frozenset[str]:
        """Pods named for deletion that the cluster manager has not finished with, as of the
        last `nodes()`: while there are any, the autoscaler waits."""

    def submit(self, desired: Mapping[str, int], to_delete: AbstractSet[str], reasons: Mapping[str, str]) -> None:
        """Scale: the desired worker count of each group, the pods to delete (each of a group
        `nodes()` reported) and why each group changes. Raises TargetUnavailable on failure."""

"""`RayguardNodeProvider`: the node provider Ray 2.60's autoscaler loads for a rayguard cluster.

It is a `BatchingNodeProvider` (Ray's base for providers backed by an external cluster manager,
which KubeRay's own provider also uses): at the start of each autoscaler update it reads every
node once (`get_node_data`), and at the end it submits one scale request (desired workers per
group, the pods to delete). Nodes are pods, by name. What it reads and writes is a ScaleTarget
(target.py): the RayCluster through the API server, or local mode's own.

Two guards keep it from acting on a guess: an update stops when the target cannot be read
(nothing is scaled down because a read failed), and no update runs while pods named for
deletion are still listed in the RayCluster or still exist (the operator has not finished;
scaling again would launch twice or delete twice).

`provider_config["target"]` picks the target: `"kubernetes"` (the default: `kube_target`) or
`"module:callable"`, a factory called as `callable(provider_config, cluster_name)` that returns
a ScaleTarget (local mode passes its own that way; the node package never imports the
operator). Ray caches providers by the JSON of their config: a target is named, not passed.
"""

from __future__ import annotations

import importlib
import logging
import time
from collections import Counter
from typing import Any, Callable, Mapping, cast

from ray.autoscaler.batching_node_provider import BatchingNodeProvider, NodeData, ScaleRequest

from rayguard_node.autoscaler.scaling import reasons_for
from rayguard_node.autoscaler.target import ScaleTarget, TargetUnavailable

log = logging.getLogger(__name__)

TARGET_KEY = "target"
KUBERNETES = "kubernetes"

BACKOFF_FIRST_S, BACKOFF_MAX_S = 1.0, 60.0


def load_target(provider_config: Mapping[str, Any], cluster_name: str) -> ScaleTarget:
    spec = str(provider_config.get(TARGET_KEY) or KUBERNETES)
    if spec == KUBERNETES:
        from rayguard_node.autoscaler.kube_target import kube_target  # the kubernetes client: only here

        return kube_target(provider_config, cluster_name)
    module_name, colon, attribute = spec.partition(":")
    if not colon or not module_name or not attribute:
        raise ValueError(f"provider.{TARGET_KEY}: {spec!r} is neither {KUBERNETES!r} nor 'module:callable'")
    factory = getattr(importlib.import_module(module_name), attribute, None)
    if not callable(factory):
        raise ValueError(f"provider.{TARGET_KEY}: {spec!r} names nothing callable")
    return cast(Callable[[Mapping[str, Any], str], ScaleTarget], factory)(provider_config, cluster_name)


class RayguardNodeProvider(BatchingNodeProvider):  # type: ignore[misc]
    def __init__(self, provider_config: Mapping[str, Any], cluster_name: str,
                 target: ScaleTarget | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        BatchingNodeProvider.__init__(self, dict(provider_config), cluster_name)
        self.target = target if target is not None else load_target(provider_config, cluster_name)
        self._clock = clock
        self._submitted_deletions: frozenset[str] = frozenset()
        self._failures = 0
        self._retry_at = 0.0
        log.info("rayguard node provider for cluster %s: target %s", cluster_name, type(self.target).__name__)

    # -- reads

    def get_node_data(self) -> dict[str, NodeData]:
        """Every node, or TargetUnavailable (which ends this update: Ray's autoscaler then
        launches and terminates nothing). After a failure, reads back off exponentially."""
        now = self._clock()
        if now < self._retry_at:
            raise TargetUnavailable(f"backing off for {self._retry_at - now:.1f}s more after"
                                    f" {self._failures} failed read(s)")
        try:
            nodes = self.target.nodes()
        except TargetUnavailable as error:
            self._failures += 1
            delay = min(BACKOFF_FIRST_S * 2 ** (self._failures - 1), BACKOFF_MAX_S)
            self._retry_at = now + delay
            log.warning("cannot read the cluster (%s); nothing is scaled; next read in %.0fs", error, delay)
            raise
        if self._failures:
            log.info("the cluster can be read again after %d failed read(s)", self._failures)
        self._failures, self._retry_at = 0, 0.0
        return nodes

    def safe_to_scale(self) -> bool:
        listed = self.target.unconsumed_deletions()
        alive = (listed | self._submitted_deletions) & set(self.node_data_dict)
        if listed or alive:
            log.info("waiting for the operator to delete %s%s", ", ".join(sorted(listed | alive)),
                     " (still listed in workersToDelete)" if listed else "")
            return False
        self._submitted_deletions = frozenset()
        return True

    # -- writes

    def submit_scale_request(self, scale_request: ScaleRequest) -> None:
        current = dict(self.cur_num_workers())
        deleted = Counter(self.node_data_dict[pod].type for pod in scale_request.workers_to_delete
                          if pod in self.node_data_dict)
        desired = {group: count for group, count in scale_request.desired_num_workers.items()}
        reasons = reasons_for(current, desired, deleted)
        log.info("scale request: desired %s (now %s), delete %s", dict(sorted(desired.items())),
                 dict(sorted(current.items())), sorted(scale_request.workers_to_delete) or "nothing")
        self.target.submit(desired, frozenset(scale_request.workers_to_delete), reasons)
        self._submitted_deletions = frozenset(scale_request.workers_to_delete)

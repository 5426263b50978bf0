"""Autoscaling in local mode: Ray's own autoscaler, the head pod's sidecar's code, run in this
process against local pods.

The sidecar in a head pod runs `rayguard_node.autoscaler` with a provider whose ScaleTarget is
the RayCluster in the API server. Here the same autoscaler thread (`AutoscalerThread`) reads
the same config (the ConfigMap `rayguard render` makes) and scales a `LocalTarget`: its
requests are applied by `LocalScaler.step`, on the thread that owns the pods, as the operator
applies a patched RayCluster: named pods are stopped (SIGTERM: the runtime stops Ray in
order), then pods are started until each group has its desired count. The autoscaler's
thread only reads a snapshot and queues requests.

Ray's autoscaler (v1) matches its provider's nodes to Ray's nodes by IP, so every local pod of
an autoscaling cluster gets its own loopback address (`node_ip`): the head 127.0.0.1, workers
127.0.0.2 and up.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, AbstractSet, Any, Callable, Mapping

from rayguard_node.autoscaler.monitor import AutoscalerOptions, AutoscalerThread
from rayguard_node.contract import autoscaler as A

from rayguard_operator import names

if TYPE_CHECKING:
    from ray.autoscaler.batching_node_provider import NodeData

# Ray's node status words (BatchingNodeProvider's NodeData docstring).
STATUS_UP, STATUS_FAILED, STATUS_PENDING = "up-to-date", "update-failed", "pending"
TARGET = "rayguard_operator.local.autoscaling:local_target"  # provider_config["target"]

_TARGETS: dict[str, LocalTarget] = {}
_TARGETS_LOCK = threading.Lock()


def local_target(provider_config: Mapping[str, Any], cluster_name: str) -> LocalTarget:
    """The provider's target factory: the LocalTarget registered for this cluster."""
    with _TARGETS_LOCK:
        target = _TARGETS.get(cluster_name)
    if target is None:
        raise LookupError(f"no local cluster {cluster_name!r} is autoscaling in this process")
    return target


def node_ip(index: int) -> str:
    """The loopback address of the index-th pod of an autoscaling local cluster (0: the head)."""
    number = index + 1
    if not 0 < number < 256 * 256:
        raise ValueError(f"no loopback address for pod {index}")
    return f"127.0.{number // 256}.{number % 256}"


@dataclass(frozen=True)
class LocalNodeState:
    """What the pod owner tells the autoscaler of one pod."""

    name: str
    group: str  # the worker group, or names.HEAD_GROUP
    head: bool
    ip: str
    status: str  # STATUS_UP, STATUS_FAILED or STATUS_PENDING


@dataclass(frozen=True)
class ScaleRequest:
    desired: Mapping[str, int]
    to_delete: frozenset[str]
    reasons: Mapping[str, str] = field(default_factory=dict)


class LocalTarget:
    """A ScaleTarget (rayguard_node.autoscaler.target) over local pods. Thread-safe: the
    autoscaler thread calls nodes/unconsumed_deletions/submit, the pod owner publish/take."""

    def __init__(self, cluster_name: str) -> None:
        self.cluster_name = cluster_name
        self._lock = threading.Lock()
        self._states: dict[str, LocalNodeState] = {}
        self._requests: list[ScaleRequest] = []
        self._deleting: set[str] = set()  # submitted for deletion, still running

    # -- the pod owner's side
    def publish(self, states: list[LocalNodeState]) -> None:
        with self._lock:
            self._states = {s.name: s for s in states}
            self._deleting &= set(self._states)  # a stopped pod is done with

    def take(self) -> list[ScaleRequest]:
        with self._lock:
            requests, self._requests = self._requests, []
        return requests

    # -- the autoscaler's side (ScaleTarget)
    def nodes(self) -> dict[str, NodeData]:
        from ray.autoscaler.batching_node_provider import NodeData
        from ray.autoscaler.tags import NODE_KIND_HEAD, NODE_KIND_WORKER

        with self._lock:
            states = [s for s in self._states.values() if s.name not in self._deleting]
        return {s.name: NodeData(kind=NODE_KIND_HEAD if s.head else NODE_KIND_WORKER,
                                 type=A.HEAD_NODE_TYPE if s.head else s.group, ip=s.ip, status=s.status)
                for s in states}

    def unconsumed_deletions(self) -> frozenset[str]:
        with self._lock:
            return frozenset(self._deleting)

    def submit(self, desired: Mapping[str, int], to_delete: AbstractSet[str], reasons: Mapping[str, str]) -> None:
        with self._lock:
            self._requests.append(ScaleRequest(dict(desired), frozenset(to_delete), dict(reasons)))
            self._deleting |= set(to_delete) & set(self._states)


@dataclass(frozen=True)
class ScalePlan:
    """What one request means for the pods: which to stop, how many to start per group, and
    the (group, old, new, why) of each group whose count changes."""

    stop: tuple[str, ...]
    start: Mapping[str, int]
    changes: tuple[tuple[str, int, int, str], ...]


def plan_request(request: ScaleRequest, running: Mapping[str, list[str]], bounds: Mapping[str, tuple[int, int]]
                 ) -> ScalePlan:
    """Pure: `running` is each worker group's pods now; `bounds` its (min, max). Names of
    unknown pods are ignored; a desired count outside the group's bounds is clamped."""
    known = {pod: group for group, pods in running.items() for pod in pods}
    stop = tuple(sorted(p for p in request.to_delete if p in known))
    start: dict[str, int] = {}
    changes = []
    for group, pods in sorted(running.items()):
        low, high = bounds.get(group, (0, len(pods)))
        old = len(pods)
        left = old - sum(1 for p in stop if known[p] == group)
        new = min(max(request.desired.get(group, left), low), high)
        if new > left:
            start[group] = new - left
        if new != old:
            changes.append((group, old, new, request.reasons.get(group)
                            or (A.REASON_PENDING if new > old else A.REASON_IDLE)))
    return ScalePlan(stop, start, tuple(changes))


class LocalScaler:
    """Applies the autoscaler's requests to a local cluster, from the cluster's own loop."""

    def __init__(self, target: LocalTarget, bounds: Mapping[str, tuple[int, int]],
                 running: Callable[[], Mapping[str, list[str]]], stop_pod: Callable[[str], None],
                 start_pod: Callable[[str], None], event: Callable[[str, str], None]) -> None:
        self.target = target
        self.bounds = dict(bounds)
        self._running, self._stop_pod, self._start_pod, self._event = running, stop_pod, start_pod, event

    def step(self, states: list[LocalNodeState]) -> None:
        self.target.publish(states)
        for request in self.target.take():
            plan = plan_request(request, self._running(), self.bounds)
            for pod in plan.stop:
                self._stop_pod(pod)
            for group, count in plan.start.items():
                for _ in range(count):
                    self._start_pod(group)
            for group, old, new, why in plan.changes:
                self._event("ScaledUp" if new > old else "ScaledDown", f"group {group}: {old} -> {new} ({why})")

    def register(self) -> None:
        with _TARGETS_LOCK:
            _TARGETS[self.target.cluster_name] = self.target

    def unregister(self) -> None:
        with _TARGETS_LOCK:
            if _TARGETS.get(self.target.cluster_name) is self.target:
                del _TARGETS[self.target.cluster_name]


def config_from_items(items: list[Mapping[str, Any]], cluster_name: str) -> dict[str, Any] | None:
    """The autoscaler config in the rendered ConfigMap (None: the cluster does not autoscale)."""
    for item in items:
        if item.get("kind") == "ConfigMap" and item["metadata"]["name"] == A.autoscaler_name(cluster_name):
            return dict(json.loads(item["data"][A.CONFIG_KEY]))
    return None


def bounds_of(config: Mapping[str, Any]) -> dict[str, tuple[int, int]]:
    """Each worker group's (min, max) workers, as the config tells the autoscaler."""
    return {name: (int(t["min_workers"]), int(t["max_workers"]))
            for name, t in config["available_node_types"].items() if name != A.HEAD_NODE_TYPE}


class LocalAutoscaling:
    """The autoscaler thread and the scaler of one local cluster, started once its head is ready."""

    def __init__(self, config: Mapping[str, Any], config_path: Path, scaler: LocalScaler) -> None:
        self.config_path = config_path
        config_path.parent.mkdir(parents=True, exist_ok=True)
        config_path.write_text(json.dumps(config, sort_keys=True))
        self.scaler = scaler
        self.thread: AutoscalerThread | None = None
        self._saved_loggers: list[tuple[logging.Logger, list[logging.Handler], bool, int]] = []

    def start(self, gcs_address: str, token_file: Path) -> None:
        self._log_to_file()
        self.scaler.register()
        self.thread = AutoscalerThread(AutoscalerOptions(
            gcs_address=gcs_address, config_path=self.config_path, cluster_name=self.scaler.target.cluster_name,
            token_file=token_file, provider_overrides={"target": TARGET})).start()

    def step(self, states: list[LocalNodeState]) -> None:
        self.scaler.step(states)

    @property
    def log_path(self) -> Path:
        return self.config_path.parent / "autoscaler.log"

    def _log_to_file(self) -> None:
        """Ray's autoscaler logs a status table every update: to a file, as the sidecar's
        `kubectl logs` would hold it, not into the cluster's console. Ray configures its
        loggers on import, so it is imported first."""
        import ray  # noqa: F401

        handler = logging.FileHandler(self.log_path)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        for name in ("ray", "rayguard_node"):
            logger = logging.getLogger(name)
            self._saved_loggers.append((logger, logger.handlers[:], logger.propagate, logger.level))
            logger.handlers, logger.propagate = [handler], False
            logger.setLevel(logging.INFO)

    def stop(self) -> None:
        if self.thread is not None:
            self.thread.stop()
        self.scaler.unregister()
        for logger, handlers, propagate, level in self._saved_loggers:
            for handler in logger.handlers:
                handler.close()
            logger.handlers, logger.propagate = handlers, propagate
            logger.setLevel(level)
        self._saved_loggers.clear()


def group_templates(body: Mapping[str, Any], render: Callable[[dict[str, Any]], list[dict[str, Any]]]
                    ) -> dict[str, dict[str, Any]]:
    """A pod manifest per worker group that may scale above 0, to start more pods from: the
    cluster rendered once with at least one replica of each such group."""
    copy = json.loads(json.dumps(body))
    for group in copy["spec"].get("workerGroups") or []:
        if int(group.get("maxReplicas", 1000)) >= 1:
            group["replicas"] = max(int(group.get("replicas", 1)), 1)
    templates: dict[str, dict[str, Any]] = {}
    for item in render(copy):
        labels = item.get("metadata", {}).get("labels", {})
        if item.get("kind") == "Pod" and labels.get(names.LABEL_NODE_TYPE) == names.WORKER:
            templates.setdefault(labels[names.LABEL_GROUP], item)
    return templates

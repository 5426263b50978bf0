"""One reconcile of one RayCluster: read, parse, plan, apply, then status and events.

Every trigger (create, update, resume, the resync timer, a pod event) ends here with just a
namespace and a name. The cluster is read fresh, so a pass always compares against the
latest status and spec, and a pass over an unchanged cluster reads but never writes.
A per-cluster lock keeps two passes over one cluster from planning against the same
snapshot (kopf runs timers, change handlers and pod events concurrently).
A pass creates pods in one bounded batch (`actions.MAX_POD_CREATES_PER_PASS`); the events of
the pods it created queue the passes that create the rest, and the status each pass writes
counts the pods as they become ready.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from rayguard_node.contract import rfc3339

from rayguard_operator.manifests import events
from rayguard_operator import names
from rayguard_operator.errors import KubeApiError, SpecError
from rayguard_operator.kube.protocols import SyncerApi
from rayguard_operator.locks import ClusterLocks
from rayguard_operator.spec.model import ClusterModel, parse_cluster
from rayguard_operator.reconcile.actions import Action, Observed, plan_actions
from rayguard_operator.settings import OperatorSettings
from rayguard_operator.reconcile.status import READY, compute_status, invalid_status, merge_patch, spec_condition

log = logging.getLogger(__name__)


def random_name(prefix: str) -> str:
    return prefix + "".join(secrets.choice(names.SUFFIX_ALPHABET) for _ in range(names.SUFFIX_LENGTH))


def random_secrets() -> tuple[str, str]:
    return secrets.token_urlsafe(32), secrets.token_urlsafe(32)


@dataclass(frozen=True)
class SyncResult:
    valid: bool
    actions: tuple[Action, ...] = ()
    status_patched: bool = False
    error: str | None = None  # the spec error, or the write the server refused


def _ready_condition(status: Mapping[str, Any]) -> tuple[Any, ...] | None:
    for condition in status.get("conditions") or []:
        if condition.get("type") == READY:
            return condition.get("status"), condition.get("reason"), condition.get("message")
    return None


class Syncer:
    """Reconciles clusters through one API client (`KubeApi`, or a fake in tests). Clock and
    randomness can be replaced in tests."""

    def __init__(self, api: SyncerApi, settings: OperatorSettings, now: Callable[[], str] = rfc3339.now_seconds,
                 new_name: Callable[[str], str] = random_name,
                 new_secrets: Callable[[], tuple[str, str]] = random_secrets,
                 count_ooms: Callable[[str, str, tuple[dict[str, Any], ...]], int] | None = None) -> None:
        self.api, self.settings = api, settings
        self.count_ooms = count_ooms
        self.now, self.new_name, self.new_secrets = now, new_name, new_secrets
        self.locks = ClusterLocks()

    def sync(self, namespace: str, name: str) -> SyncResult | None:
        """None when the cluster is gone or being deleted (its children go with it)."""
        with self.locks(namespace, name):
            body = self.api.get_cluster(namespace, name)
            if body is None or body["metadata"].get("deletionTimestamp"):
                return None
            try:
                cluster = parse_cluster(body, self.settings)
            except SpecError as error:
                return self._invalid(body, str(error))
            return self._reconcile(body, cluster)

    def drain(self, namespace: str, name: str) -> None:
        """Wait for a pass over this cluster that is under way. The cluster is already marked
        for deletion, and each pass reads it under the lock, so later passes stop at once."""
        with self.locks(namespace, name):
            pass

    def _invalid(self, body: dict[str, Any], message: str) -> SyncResult:
        meta, current = body["metadata"], body.get("status") or {}
        desired = invalid_status(int(meta.get("generation") or 0), message, current, self.now())
        patched = self._write_status(body, current, desired)
        if spec_condition(current) != ("False", message):
            log.info("RayCluster %s/%s: invalid spec: %s", meta["namespace"], meta["name"], message)
            self._event(body, events.EventNote(events.WARNING, events.INVALID_SPEC, message))
        return SyncResult(valid=False, status_patched=patched, error=message)

    def _reconcile(self, body: dict[str, Any], cluster: ClusterModel) -> SyncResult:
        ns, selector = cluster.namespace, names.cluster_selector(cluster.name)
        observed = Observed(
            secret=self.api.get_secret(ns, names.secret_name(cluster.name)),
            service=self.api.get_service(ns, names.head_service_name(cluster.name)),
            pods=tuple(self.api.list_pods(ns, selector)))
        if self.count_ooms is not None:
            # Before any pod is replaced: a Failed pod that Kubernetes OOMKilled is counted first.
            try:
                self.count_ooms(ns, cluster.name, observed.pods)
            except KubeApiError as error:
                log.warning("RayCluster %s/%s: could not count OOM kills yet: %s", ns, cluster.name, error)
        actions = plan_actions(cluster, observed, self.new_name, self.new_secrets)
        done, failure = [], None
        for action in actions:
            try:
                changed = self._apply(cluster, action)
            except KubeApiError as error:
                failure = str(error)
                break
            if changed:  # not when a create met an existing object, or a delete a gone one
                done.append(action)
                log.info("RayCluster %s/%s: %s", ns, cluster.name, action.note.message)
                self._event(body, action.note)
        pods = observed.pods
        if actions:  # read again; the stale list goes first, so a pass holds one list of pods
            del observed, pods
            pods = tuple(self.api.list_pods(ns, selector))
        current = body.get("status") or {}
        desired = compute_status(cluster, pods, current, self.now(), failure)
        patched = self._write_status(body, current, desired)
        if failure and _ready_condition(current) != _ready_condition(desired):
            log.warning("RayCluster %s/%s: %s", ns, cluster.name, failure)
            self._event(body, events.EventNote(events.WARNING, events.RECONCILE_FAILED, failure))
        return SyncResult(valid=True, actions=tuple(done), status_patched=patched, error=failure)

    def _apply(self, cluster: ClusterModel, action: Action) -> bool:
        if action.verb == "create":
            return self.api.create(action.body or {}) is not None
        if action.verb == "patch":
            self.api.patch(action.kind, cluster.namespace, action.name, action.body or {})
            return True
        return self.api.delete_pod(cluster.namespace, action.name)

    def _write_status(self, body: dict[str, Any], current: Mapping[str, Any], desired: Mapping[str, Any]) -> bool:
        patch = merge_patch(current, desired)
        if not patch:
            return False
        self.api.patch_cluster_status(body["metadata"]["namespace"], body["metadata"]["name"], patch)
        return True

    def _event(self, body: dict[str, Any], note: events.EventNote) -> None:
        """Best effort: a refused event is logged, never a reason to stop reconciling."""
        name = f"{body['metadata']['name']}.{secrets.token_hex(8)}"
        try:
            self.api.create(events.build_event(body, note, name, self.now()))
        except KubeApiError as error:
            log.warning("could not post event %s: %s", note.reason, error)

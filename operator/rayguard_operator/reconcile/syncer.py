"""One reconcile of one RayCluster: read, parse, plan, apply, then status and events.

Every trigger (create, update, resume, the resync timer, a pod event) ends here with just a
namespace and a name. A pass reads the cluster and its pods from the cache the watches keep
(`reconcile/cache.py`), and from the API only what no watch delivers and the syncer has not
learned yet (the Secret and the head Service, once per cluster). The resync timer's pass
(`fresh=True`) reads everything from the API, the safety net against a missed watch event
(`reconcile/observe.py` says what each pass reads).
Without a cache (`cache.ENABLED` off) every pass reads the API, and reads the pods again
after acting. Either way a pass over an unchanged cluster writes nothing.
A per-cluster lock keeps two passes over one cluster from planning against the same
snapshot (kopf runs timers, change handlers and pod events concurrently).
A pass creates pods in one bounded batch (`actions.MAX_POD_CREATES_PER_PASS`); the events of
the pods it created queue the passes that create the rest, and the status each pass writes
counts the pods as they become ready.
Once the pods a group's workersToDelete names are deleted, the pass clears that list with a
merge patch of the spec carrying the resourceVersion it read (`scale.clear_patch`). On a 409
(the cluster was written since: a status write, the autoscaler, anyone) it reads the cluster
again and clears on that read if the lists are the ones it consumed; new names are left to the
next pass, which that write's watch event brings. The pass then writes the status, and posts the
ScaledUp/ScaledDown and Suspended/Resumed Events its change from the last status implies.
"""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from rayguard_node.contract import rfc3339

from rayguard_operator.manifests import events
from rayguard_operator import names
from rayguard_operator.errors import KubeApiError, SpecError
from rayguard_operator.kube.caller import RECONCILE, RESYNC, calling_as
from rayguard_operator.kube.protocols import SyncerApi
from rayguard_operator.locks import ClusterLocks
from rayguard_operator.manifests.service import FIELD_MANAGER, needs_recreate
from rayguard_operator.metrics import OperatorMetrics
from rayguard_operator.reconcile.cache import ClusterCache, overlay
from rayguard_operator.spec.model import ClusterModel, parse_cluster
from rayguard_operator.reconcile.actions import Action, plan_actions
from rayguard_operator.reconcile.autoscaler import KINDS as AUTOSCALER_KINDS
from rayguard_operator.reconcile.observe import observe
from rayguard_operator.reconcile.scale import Named, clear_patch, named_pods, scale_notes, scale_reasons
from rayguard_operator.settings import OperatorSettings
from rayguard_operator.reconcile.status import (READY, compute_status, head_outdated_note, invalid_status, merge_patch,
                                               spec_condition, suspend_note)

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


def _to_delete(body: Mapping[str, Any]) -> dict[str, Any]:
    return {g.get("name"): g.get("workersToDelete") for g in (body.get("spec") or {}).get("workerGroups") or []}


def _ready_condition(status: Mapping[str, Any]) -> tuple[Any, ...] | None:
    for condition in status.get("conditions") or []:
        if condition.get("type") == READY:
            return condition.get("status"), condition.get("reason"), condition.get("message")
    return None


class Syncer:
    """Reconciles clusters through one API client (`KubeApi`, or a fake in tests), reading from
    `cache` when given one. Clock and randomness can be replaced in tests."""

    def __init__(self, api: SyncerApi, settings: OperatorSettings, now: Callable[[], str] = rfc3339.now_seconds,
                 new_name: Callable[[str], str] = random_name,
                 new_secrets: Callable[[], tuple[str, str]] = random_secrets,
                 count_ooms: Callable[[str, str, tuple[dict[str, Any], ...]], int] | None = None,
                 cache: ClusterCache | None = None, metrics: OperatorMetrics | None = None) -> None:
        self.api, self.settings, self.cache, self.metrics = api, settings, cache, metrics
        self.count_ooms = count_ooms
        self.now, self.new_name, self.new_secrets = now, new_name, new_secrets
        self.locks = ClusterLocks()

    def sync(self, namespace: str, name: str, fresh: bool = False,
             started: Callable[[], None] | None = None) -> SyncResult | None:
        """None when the cluster is gone or being deleted (its children go with it). `fresh`:
        read everything from the API (the resync timer's pass). `started` is called once the
        pass holds the cluster's lock, before it reads."""
        with self.locks(namespace, name), calling_as(RESYNC if fresh else RECONCILE):
            if started is not None:
                started()
            if self.metrics is None:
                return self._sync(namespace, name, fresh)
            began, failed = time.monotonic(), True
            try:
                result = self._sync(namespace, name, fresh)
                failed = result is not None and result.valid and result.error is not None
                return result
            finally:
                self.metrics.observe_reconcile(time.monotonic() - began, failed)

    def _sync(self, namespace: str, name: str, fresh: bool) -> SyncResult | None:
        """The pass itself, under the cluster's lock (see `sync`)."""
        body = None if fresh or self.cache is None else self.cache.cluster(namespace, name)
        cached = body is not None
        if body is None:
            body = self.api.get_cluster(namespace, name)
            if body is None and self.cache is not None:
                self.cache.forget_cluster(namespace, name)  # deleted while a watch was down
        mode = "cached" if cached else "fresh" if self.cache is not None else "uncached"
        if body is None or body["metadata"].get("deletionTimestamp"):
            log.debug("RayCluster %s/%s: %s pass: gone", namespace, name, mode)
            return None
        current = self._current_status(body, cached)
        try:
            cluster = parse_cluster(body, self.settings)
        except SpecError as error:
            result = self._invalid(body, current, str(error))
        else:
            result = self._reconcile(body, cluster, current, cached)
        log.debug("RayCluster %s/%s: %s pass: %d actions, %d pod creates", namespace, name, mode,
                  len(result.actions), sum(1 for a in result.actions if a.verb == "create" and a.kind == "Pod"))
        return result

    def drain(self, namespace: str, name: str) -> None:
        """Wait for a pass over this cluster that is under way. The cluster is already marked
        for deletion, and each pass reads it under the lock, so later passes stop at once."""
        with self.locks(namespace, name):
            if self.metrics is not None:  # its series go with it
                self.metrics.forget_cluster(namespace, name)

    def _current_status(self, body: dict[str, Any], cached: bool) -> dict[str, Any]:
        """The status as it is: read with the body, or, from the cache, as the syncer last wrote
        it (only the syncer writes what it compares; the watch may not have delivered it yet)."""
        meta = body["metadata"]
        status = body.get("status") or {}
        if self.cache is not None:
            if cached:
                known = self.cache.known(meta["namespace"], meta["name"], meta.get("uid", "")).status
                return status if known is None else known
            self.cache.learn(meta["namespace"], meta["name"], meta.get("uid", ""), status=status)
        return status

    def _invalid(self, body: dict[str, Any], current: dict[str, Any], message: str) -> SyncResult:
        meta = body["metadata"]
        desired = invalid_status(int(meta.get("generation") or 0), message, current, self.now())
        patched = self._write_status(body, current, desired)
        if self.metrics is not None:
            self.metrics.set_phase(meta["namespace"], meta["name"], str(desired.get("phase") or ""))
        if spec_condition(current) != ("False", message):
            log.info("RayCluster %s/%s: invalid spec: %s", meta["namespace"], meta["name"], message)
            self._event(body, events.EventNote(events.WARNING, events.INVALID_SPEC, message))
        return SyncResult(valid=False, status_patched=patched, error=message)

    def _reconcile(self, body: dict[str, Any], cluster: ClusterModel, current: dict[str, Any],
                   cached: bool) -> SyncResult:
        ns, uid = cluster.namespace, body["metadata"].get("uid", "")
        observed = observe(self.api, self.cache, cluster, uid, cached)
        named = named_pods(cluster, observed.pods)
        if self.count_ooms is not None:
            # Before any pod is replaced: a Failed pod that Kubernetes OOMKilled is counted first.
            try:
                self.count_ooms(ns, cluster.name, observed.pods)
            except KubeApiError as error:
                log.warning("RayCluster %s/%s: could not count OOM kills yet: %s", ns, cluster.name, error)
        actions = plan_actions(cluster, observed, self.new_name, self.new_secrets)
        done, failure = [], None
        created: dict[str, dict[str, Any]] = {}
        deleted: dict[str, str] = {}
        for action in actions:
            try:
                changed, obj = self._apply(cluster, action, body, observed.service)
            except KubeApiError as error:
                failure = str(error)
                break
            self._remember(cluster, uid, action, obj, created, deleted)
            if changed:  # not when a create met an existing object, or a delete a gone one
                done.append(action)
                log.info("RayCluster %s/%s: %s", ns, cluster.name, action.note.message)
                self._event(body, action.note)
        if failure is None and named:
            failure = self._consume(body, cluster, named)
        pods = observed.pods
        if actions and self.cache is None:  # read again; the stale list goes first: one list at a time
            del observed, pods
            pods = tuple(self.api.list_pods(ns, names.cluster_selector(cluster.name)))
        elif actions:  # what this pass did, laid over what it saw, as a list read now would show
            pods = overlay({p["metadata"]["name"]: p for p in pods}, created, deleted)
        desired = compute_status(cluster, pods, current, self.now(), failure)
        patched = self._write_status(body, current, desired)
        if self.metrics is not None:
            self.metrics.set_phase(ns, cluster.name, str(desired.get("phase") or ""))
        if failure and _ready_condition(current) != _ready_condition(desired):
            log.warning("RayCluster %s/%s: %s", ns, cluster.name, failure)
            self._event(body, events.EventNote(events.WARNING, events.RECONCILE_FAILED, failure))
        note = head_outdated_note(current, desired)
        if note is not None:  # once: the status just written holds the same condition
            log.warning("RayCluster %s/%s: %s", ns, cluster.name, note.message)
            self._event(body, note)
        # Once each: the status just written holds the new counts and the Suspended condition.
        notes = scale_notes(current, desired, scale_reasons(body), cluster.autoscaling.enabled)
        for note in [*notes, suspend_note(current, desired)]:
            if note is not None:
                log.info("RayCluster %s/%s: %s", ns, cluster.name, note.message)
                self._event(body, note)
        return SyncResult(valid=True, actions=tuple(done), status_patched=patched, error=failure)

    def _apply(self, cluster: ClusterModel, action: Action, body: dict[str, Any],
               service: dict[str, Any] | None) -> tuple[bool, dict[str, Any] | None]:
        """(whether it changed anything, the object the server returned)."""
        if action.kind == "Service":  # created or drifted: applied either way
            return True, self._apply_service(cluster, action, body, service)
        if action.verb == "create":
            obj = self.api.create(action.body or {})
            return obj is not None, obj
        if action.verb == "patch":
            return True, self.api.patch(action.kind, cluster.namespace, action.name, action.body or {})
        if action.kind == "Pod":
            return self.api.delete_pod(cluster.namespace, action.name), None
        return self.api.delete(action.kind, cluster.namespace, action.name), None

    def _consume(self, body: dict[str, Any], cluster: ClusterModel, named: dict[str, Named]) -> str | None:
        """The named pods are deleted: clear those workersToDelete lists, then post the Event
        for names that were not the group's (with the clear, so once). On a 409 the cluster is
        read again: if those lists are still what this pass consumed (a status write came in
        between, say), the clear is sent once more on that read; else (new names) the next
        pass, which that write brings, handles them. Any other refusal is the pass's failure."""
        ns, name = cluster.namespace, cluster.name
        for attempt in range(2):
            patch = clear_patch(body, set(named))
            if patch is None:
                return None
            try:
                self.api.patch_cluster(ns, name, patch)
                break
            except KubeApiError as error:
                if error.status != 409:
                    return str(error)
            fresh = self.api.get_cluster(ns, name) if attempt == 0 else None
            if fresh is None or _to_delete(fresh) != _to_delete(body):
                log.info("RayCluster %s/%s: written since this pass read it; workersToDelete is left to"
                         " the next pass", ns, name)
                return None
            body = fresh
        log.info("RayCluster %s/%s: cleared workersToDelete of %s", cluster.namespace, cluster.name,
                 ", ".join(sorted(named)))
        for group in sorted(named):
            note = named[group].note
            if note is not None:
                log.info("RayCluster %s/%s: %s", cluster.namespace, cluster.name, note.message)
                self._event(body, note)
        return None

    # --- the head Service: server-side apply, and delete first for a headless switch ---------

    def _apply_service(self, cluster: ClusterModel, action: Action, body: dict[str, Any],
                       actual: dict[str, Any] | None) -> dict[str, Any]:
        """Server-side apply of the head Service as field manager `rayguard`, forced: the
        server keeps what other managers own, and drops what rayguard applied before and no
        longer does (manifests/service.py). clusterIP is immutable, so switching
        spec.head.service.headless deletes the Service (that very one, by uid) first."""
        desired = action.body or {}
        if needs_recreate(desired, actual):
            assert actual is not None
            self.api.delete_service(cluster.namespace, action.name, actual["metadata"].get("uid"))
            note = events.EventNote(events.NORMAL, events.DELETED,
                                    f"Deleted Service {action.name}: spec.head.service.headless changed and"
                                    " clusterIP is immutable; it is created again")
            log.info("RayCluster %s/%s: %s", cluster.namespace, cluster.name, note.message)
            self._event(body, note)
        return self.api.apply(desired, FIELD_MANAGER)

    def _remember(self, cluster: ClusterModel, uid: str, action: Action, obj: dict[str, Any] | None,
                  created: dict[str, dict[str, Any]], deleted: dict[str, str]) -> None:
        """What a write taught: the child it wrote, or the pod the watch will deliver."""
        ns, name = cluster.namespace, cluster.name
        if action.kind == "Pod" and action.verb == "create" and obj is not None:
            created[action.name] = obj
        elif action.kind == "Pod" and action.verb == "delete":
            deleted[action.name] = self.now()  # gone already (404) or going
        if self.cache is None:
            return
        if action.kind == "Secret":
            self.cache.learn(ns, name, uid, secret=True)  # created, or it existed (409)
        elif action.kind == "Service":  # as written; after a 409, not known
            self.cache.learn(ns, name, uid, service=obj, service_known=obj is not None)
        elif action.kind in AUTOSCALER_KINDS:  # as written, gone; after a 409 (or a failure), not known
            children = dict(self.cache.known(ns, name, uid).autoscaler)
            if action.verb == "delete":
                children[action.kind] = None
            elif obj is not None:
                children[action.kind] = obj
            else:
                children.pop(action.kind, None)
            self.cache.learn(ns, name, uid, autoscaler=children)
        elif action.verb == "create" and obj is not None:  # a pod: count it as there until delivered
            self.cache.expect_created(ns, name, uid, obj)
        elif action.verb == "delete":  # a pod: count it as terminating until the watch says so
            self.cache.expect_deleted(ns, name, uid, action.name, deleted[action.name])

    def _write_status(self, body: dict[str, Any], current: Mapping[str, Any], desired: Mapping[str, Any]) -> bool:
        meta = body["metadata"]
        patch = merge_patch(current, desired)
        try:
            if patch:
                self.api.patch_cluster_status(meta["namespace"], meta["name"], patch)
        except KubeApiError:
            if self.cache is not None:  # it may have been written: read it again
                self.cache.learn(meta["namespace"], meta["name"], meta.get("uid", ""), status=None)
            raise
        if self.cache is not None:  # the status now, as a merge patch leaves it
            self.cache.learn(meta["namespace"], meta["name"], meta.get("uid", ""), status={**current, **desired})
        return bool(patch)

    def post_event(self, body: dict[str, Any], note: events.EventNote) -> None:
        """An Event about the RayCluster `body`, for the handlers; best effort, as `_event`."""
        self._event(body, note)

    def _event(self, body: dict[str, Any], note: events.EventNote) -> None:
        """Best effort: a refused event is logged, never a reason to stop reconciling."""
        name = f"{body['metadata']['name']}.{secrets.token_hex(8)}"
        try:
            self.api.create(events.build_event(body, note, name, self.now()))
        except KubeApiError as error:
            log.warning("could not post event %s: %s", note.reason, error)

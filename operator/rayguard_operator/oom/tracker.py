"""Counting OOM kills into `status.oom` and Events, from both sources, once each.

Two sources write `status.oom`: the pod-status check (run by reconcile and before a
Failed pod is replaced) and the report-stream daemon. A lock per cluster makes each
read-modify-write whole. Status is written before Events: if the operator dies between
the two, the counters are still exact and only an Event is missing.

Both sources are this tracker, so what it last wrote is what `status.oom` holds. With the
watches' cache it reads nothing on the way: the RayCluster (for its uid and for the Events'
`involvedObject`) and the reports' pods come from the cache, and `status.oom` from its own last
write, for as long as the cached RayCluster has the uid it wrote to. Otherwise (the first write
after a start, a cluster not delivered yet, a write that failed) it reads the API as before.
"""

from __future__ import annotations

import logging
from typing import Any, Iterable, Mapping

from rayguard_node.contract.reports import Report

from rayguard_operator.manifests import events
from rayguard_operator import names
from rayguard_operator.kube.protocols import TrackerApi
from rayguard_operator.locks import ClusterLocks
from rayguard_operator.metrics import OperatorMetrics
from rayguard_operator.oom.events import EventAggregator
from rayguard_operator.oom.messages import (CONTAINER_OOM_KIND, REASON_BY_KIND, AggregationKey, container_message,
                           report_key, report_message)
from rayguard_operator.oom.counts import ContainerOom, OomCount, counted_annotation_patch, tally, uncounted
from rayguard_operator.reconcile.cache import ClusterCache

log = logging.getLogger(__name__)


def _pod_limit_bytes(pod: Mapping[str, Any], container: str) -> int | None:
    from rayguard_node.errors import RayguardError
    from rayguard_node.sizing.quantity import parse_bytes

    for spec in pod.get("spec", {}).get("containers", []):
        if spec["name"] == container:
            limit = (spec.get("resources") or {}).get("limits", {}).get("memory")
            try:
                return parse_bytes(limit, "limits.memory") if limit is not None else None
            except RayguardError:
                return None
    return None


class OomTracker:
    def __init__(self, api: TrackerApi, aggregator: EventAggregator,
                 metrics: OperatorMetrics | None = None, cache: ClusterCache | None = None) -> None:
        self.api = api
        self.aggregator = aggregator
        self.metrics = metrics
        self.cache = cache
        self.locks = ClusterLocks()
        # (namespace, name) -> (uid, status.oom as this tracker last wrote it); under the locks
        self._written: dict[tuple[str, str], tuple[str, dict[str, Any]]] = {}

    def _add_counts(self, namespace: str, name: str, counts: list[OomCount]) -> dict[str, Any] | None:
        key = (namespace, name)
        cluster = self.cache.cluster(namespace, name) if self.cache is not None else None
        written = self._written.get(key)
        if cluster is not None and written is not None and written[0] == cluster["metadata"].get("uid"):
            current = written[1]
        else:
            cluster = self.api.get_cluster(namespace, name)
            if cluster is None:
                self._written.pop(key, None)
                return None
            current = (cluster.get("status") or {}).get("oom")
        oom = tally(current, counts)
        self._written.pop(key, None)  # a write that fails may still have landed: read it next time
        self.api.patch_cluster_status(namespace, name, {"oom": oom})
        self._written[key] = (str(cluster["metadata"].get("uid", "")), oom)
        return cluster

    def forget(self, namespace: str, name: str) -> None:
        """The cluster's follower has stopped: drop what was kept for it. (A count still running
        may keep it again; what it keeps is still what status.oom holds.)"""
        self._written.pop((namespace, name), None)

    def _pod(self, namespace: str, cluster: str, name: str) -> Mapping[str, Any] | None:
        """A report's pod: from the watches' cache, else from the API."""
        if self.cache is not None:
            pod = self.cache.pod(namespace, cluster, name)
            if pod is not None:
                return pod
        return self.api.get_pod(namespace, name)

    # -- containers Kubernetes OOMKilled ---------------------------------------------
    def count_pod_ooms(self, namespace: str, name: str, pods: Iterable[Mapping[str, Any]]) -> int:
        """Count every OOMKilled termination not yet counted; returns how many."""
        found: list[tuple[Mapping[str, Any], list[ContainerOom]]] = []
        for pod in pods:
            kills = uncounted(pod)
            if kills:
                found.append((pod, kills))
        if not found:
            if self.aggregator.pending_count:  # held back by the rate limit: the budget may have refilled
                self._flush(name)
            return 0
        with self.locks(namespace, name):
            counts, notes = [], []
            for pod, kills in found:
                labels = pod["metadata"].get("labels") or {}
                for kill in kills:
                    message = container_message(kill.pod, labels.get(names.LABEL_GROUP, ""), kill.container,
                                                _pod_limit_bytes(pod, kill.container), kill.exit_code,
                                                labels.get(names.LABEL_NODE_TYPE, ""))
                    counts.append(OomCount(CONTAINER_OOM_KIND, kill.finished_at, message))
                    notes.append((pod, AggregationKey(name, kill.pod, events.OOM_KILLED, kill.container), message))
            cluster = self._add_counts(namespace, name, counts)
            if cluster is not None and self.metrics is not None:
                for pod, kills in found:
                    group = (pod["metadata"].get("labels") or {}).get(names.LABEL_GROUP, "")
                    self.metrics.count_oom_kill(namespace, name, group, events.OOM_KILLED, len(kills))
            for pod, kills in found:  # after status: a crash in between counts again rather than never
                self.api.patch("Pod", namespace, pod["metadata"]["name"], counted_annotation_patch(pod, kills))
        if cluster is not None:
            for pod, key, message in notes:
                note = events.EventNote(events.WARNING, events.OOM_KILLED, message)
                self.aggregator.add(name, _involved(cluster), key, note)
                self.aggregator.add(name, _involved(pod), key, note)
            self._flush(name)
        return len(counts)

    # -- runtime reports ---------------------------------------------------------------
    def count_reports(self, namespace: str, name: str, entries: list[tuple[str, Report]]) -> bool:
        """Count reports read from the stream (`lastReportId` moves to the last entry), then post
        their Events on the RayCluster. The Events on their pods are `post_pod_events`, a call of
        its own: it reads each pod first, and the RayCluster's Events should not wait for that,
        nor for other clusters' pods when reports reach many clusters at once."""
        if not entries:
            return True
        notes = [(report_key(report), _note(report)) for _stream_id, report in entries]
        with self.locks(namespace, name):
            counts = [OomCount(report.kind, report.time, note.message, stream_id)
                      for (stream_id, report), (_key, note) in zip(entries, notes)]
            cluster = self._add_counts(namespace, name, counts)
        if cluster is None:
            return False
        if self.metrics is not None:
            for _stream_id, report in entries:
                self.metrics.count_oom_kill(namespace, name, report.identity.group, REASON_BY_KIND[report.kind])
        # After the status write nothing may raise, or the batch would count twice.
        for key, note in notes:
            self.aggregator.add(name, _involved(cluster), key, note)
        self._flush(name)
        return True

    def post_pod_events(self, namespace: str, name: str, entries: list[tuple[str, Report]]) -> None:
        """After `count_reports` counted `entries`: the Event on each report's pod (each pod read
        once). Never raises: a pod that cannot be read costs only its Event."""
        try:
            pods: dict[str, Mapping[str, Any] | None] = {}
            for _stream_id, report in entries:
                pod_name = report.identity.pod
                if pod_name and pod_name not in pods:
                    try:
                        pods[pod_name] = self._pod(namespace, name, pod_name)
                    except Exception as error:  # noqa: BLE001
                        log.warning("no Event on pod %s this time: %s", pod_name, error)
                        pods[pod_name] = None
                pod = pods.get(pod_name)
                if pod:
                    self.aggregator.add(name, _involved(pod), report_key(report), _note(report))
        except Exception as error:  # noqa: BLE001 (the reports are counted: an Event is not worth a crash)
            log.warning("RayCluster %s/%s: no Events on pods this time: %s", namespace, name, error)
        self._flush(name)

    def flush_events(self, cluster: str, final: bool = False) -> None:
        """Write held-back Events; `final` (the operator is stopping) writes all of them."""
        self._flush(cluster, force=final)

    def _flush(self, cluster: str, force: bool = False) -> None:
        try:
            self.aggregator.flush(cluster, force=force)
        except Exception as error:  # noqa: BLE001 (an Event is worth a retry, not a crash)
            log.warning("could not write OOM events for %s yet: %s", cluster, error)


def _note(report: Report) -> events.EventNote:
    return events.EventNote(events.WARNING, REASON_BY_KIND[report.kind], report_message(report))


def _involved(obj: Mapping[str, Any]) -> dict[str, Any]:
    kind = obj.get("kind") or ("Pod" if "containers" in (obj.get("spec") or {}) else names.KIND)
    api_version = obj.get("apiVersion") or ("v1" if kind == "Pod" else names.API_VERSION)
    return {"apiVersion": api_version, "kind": kind, "metadata": obj["metadata"]}

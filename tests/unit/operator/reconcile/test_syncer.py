"""Syncer: one reconcile pass against an in-memory fake API that records every call in order."""

from __future__ import annotations

import copy
import inspect
import itertools
from typing import Any

import yaml

from rayguard_operator import names
from rayguard_operator.kube.api import KubeApi
from rayguard_operator.kube.protocols import EventApi, SyncerApi, TrackerApi
from rayguard_operator.reconcile.actions import MAX_POD_CREATES_PER_PASS
from rayguard_operator.reconcile.syncer import Syncer, SyncResult
from rayguard_operator.spec.model import MAX_GROUP_REPLICAS
from rayguard_operator.settings import OperatorSettings
from tests.paths import REPO_ROOT
from tests.unit.operator.reconcile.fake_api import NOW, NS, FakeApi

__all__ = ["CPU_POD", "HEAD_POD", "NAME", "NOW", "NS", "SECRET", "SERVICE", "FakeApi", "cluster_body", "fixed_name"]

NAME = "demo"
SECRET, SERVICE = names.secret_name(NAME), names.head_service_name(NAME)
HEAD_POD, CPU_POD = f"{names.head_pod_prefix(NAME)}p0001", f"{names.worker_pod_prefix(NAME, 'cpu')}p0001"


def cluster_body() -> dict[str, Any]:
    """examples/raycluster.yaml as the API server returns it: head, cpu x1, highmem x0."""
    data = yaml.safe_load((REPO_ROOT / "examples" / "raycluster.yaml").read_text())
    data["metadata"].update(namespace=NS, uid="uid-demo", generation=1)
    return data


def fixed_name(prefix: str) -> str:
    """The same suffix every pass, so that a repeated failure reads the same."""
    return prefix + "p0001"


def make(cluster: dict[str, Any] | None = None, **kwargs: Any) -> tuple[FakeApi, Syncer]:
    api = FakeApi(cluster_body() if cluster is None else cluster)
    return api, Syncer(api, OperatorSettings(), now=lambda: NOW, new_name=fixed_name,
                       new_secrets=lambda: ("tok-XYZZY", "pw-XYZZY"), **kwargs)


def conditions(status: dict[str, Any]) -> dict[str, tuple[str, str, str]]:
    return {c["type"]: (c["status"], c["reason"], c["message"]) for c in status["conditions"]}


# --- a first pass, then a resync ----------------------------------------------------------

def test_first_pass_reads_then_creates_each_child_with_its_event_then_writes_status() -> None:
    api, syncer = make()
    result = syncer.sync(NS, NAME)
    assert api.calls == [
        ("get_cluster", NAME), ("get_secret", SECRET), ("get_service", SERVICE),
        ("list_pods", f"{names.LABEL_CLUSTER}={NAME}"),
        # Each applied action is followed at once by its Normal event.
        ("create", "Secret", SECRET), ("event", "Normal", "Created"),
        ("apply", "Service", SERVICE), ("event", "Normal", "Created"),
        ("create", "Pod", HEAD_POD), ("event", "Normal", "Created"),
        ("create", "Pod", CPU_POD), ("event", "Normal", "Created"),
        # Pods are read again after the actions, and status is written last.
        ("list_pods", f"{names.LABEL_CLUSTER}={NAME}"),
        ("patch_cluster_status", NAME),
    ]
    assert result is not None and result.valid and result.status_patched and result.error is None
    assert [(a.verb, a.kind, a.name) for a in result.actions] == [
        ("create", "Secret", SECRET), ("create", "Service", SERVICE),
        ("create", "Pod", HEAD_POD), ("create", "Pod", CPU_POD)]
    assert [e["message"] for e in api.events] == [
        f"Created Secret {SECRET}", f"Created Service {SERVICE}", f"Created Pod {HEAD_POD}",
        f"Created Pod {CPU_POD}"]
    assert {e["involvedObject"]["kind"] for e in api.events} == {"RayCluster"}
    status = api.cluster["status"]
    assert (status["phase"], status["observedGeneration"]) == ("Pending", 1)
    assert status["head"] == {"serviceName": SERVICE, "ready": False, "podName": HEAD_POD}
    assert conditions(status)["Ready"] == ("False", "HeadNotReady", f"pod {HEAD_POD} is Pending and not ready")
    assert conditions(status)["SpecValid"][0] == "True"


def test_resync_of_an_unchanged_cluster_reads_but_writes_nothing() -> None:
    api, syncer = make()
    syncer.sync(NS, NAME)
    before = copy.deepcopy(api.cluster)
    api.calls.clear()
    result = syncer.sync(NS, NAME)
    assert result == SyncResult(valid=True, actions=(), status_patched=False, error=None)
    assert api.calls == [("get_cluster", NAME), ("get_secret", SECRET), ("get_service", SERVICE),
                         ("list_pods", f"{names.LABEL_CLUSTER}={NAME}")]
    assert api.writes() == [] and api.cluster == before


def test_a_failed_pod_is_counted_before_it_is_deleted_then_replaced() -> None:
    def count_ooms(namespace: str, name: str, pods: tuple[dict[str, Any], ...]) -> int:
        failed = [p["metadata"]["name"] for p in pods if (p.get("status") or {}).get("phase") == "Failed"]
        api.calls.append(("count_ooms", name, *failed))  # into the API's log, to see the order
        return 0

    api, syncer = make(count_ooms=count_ooms)
    syncer.sync(NS, NAME)
    api.objects[("Pod", CPU_POD)]["status"] = {"phase": "Failed"}
    api.calls.clear()
    syncer.new_name = lambda prefix: prefix + "p0002"
    result = syncer.sync(NS, NAME)
    new_pod = f"{names.worker_pod_prefix(NAME, 'cpu')}p0002"
    assert api.calls[:5] == [("get_cluster", NAME), ("get_secret", SECRET), ("get_service", SERVICE),
                             ("list_pods", f"{names.LABEL_CLUSTER}={NAME}"), ("count_ooms", NAME, CPU_POD)]
    assert api.writes() == [
        ("delete_pod", CPU_POD), ("event", "Normal", "Deleted"),
        ("create", "Pod", new_pod), ("event", "Normal", "Created"),
    ]  # no status write: a Failed worker and its Pending replacement are both "0/1 ready"
    assert api.calls[-1] == ("list_pods", f"{names.LABEL_CLUSTER}={NAME}")
    assert result is not None and not result.status_patched
    assert [(a.verb, a.name) for a in result.actions] == [("delete", CPU_POD), ("create", new_pod)]
    assert api.events[-2]["message"] == f"Deleted Pod {CPU_POD}: phase Failed, replacing it"


def test_a_create_that_meets_an_existing_object_is_not_reported() -> None:
    api, syncer = make()
    api.objects[("Secret", SECRET)] = {"kind": "Secret", "metadata": {"name": SECRET, "labels": {}}}
    api.unseen.add(("Secret", SECRET))  # a stale read: the create meets it (409)
    result = syncer.sync(NS, NAME)
    assert ("create", "Secret", SECRET) in api.calls
    assert result is not None and ("create", "Secret") not in [(a.verb, a.kind) for a in result.actions]
    assert [e["message"] for e in api.events][0] == f"Created Service {SERVICE}"


# --- a refused write ----------------------------------------------------------------------

QUOTA = 'pods "demo-head-p0001" is forbidden: exceeded quota'


def refused_message(pod: str = HEAD_POD) -> str:
    return f"create Pod {NS}/{pod} failed (403 Forbidden): {QUOTA}"


def test_a_refused_write_stops_the_pass_writes_failed_status_then_one_warning() -> None:
    api, syncer = make()
    api.refuse[("create", "Pod")] = QUOTA
    result = syncer.sync(NS, NAME)
    assert api.writes() == [
        ("create", "Secret", SECRET), ("event", "Normal", "Created"),
        ("apply", "Service", SERVICE), ("event", "Normal", "Created"),
        ("create", "Pod", HEAD_POD),  # refused: the worker pod after it is not tried
        ("patch_cluster_status", NAME),
        ("event", "Warning", "ReconcileFailed"),
    ]
    assert api.calls[-3] == ("list_pods", f"{names.LABEL_CLUSTER}={NAME}")  # status from a fresh read
    assert result is not None and result.valid and result.status_patched
    assert result.error == refused_message()
    assert [(a.verb, a.kind) for a in result.actions] == [("create", "Secret"), ("create", "Service")]
    status = api.cluster["status"]
    assert status["phase"] == "Failed"
    assert conditions(status)["Ready"] == ("False", "ReconcileFailed", refused_message())
    assert api.events[-1]["message"] == refused_message()
    assert api.events[-1]["type"] == "Warning"


def test_the_same_refusal_again_retries_but_neither_rewrites_status_nor_repeats_the_warning() -> None:
    api, syncer = make()
    api.refuse[("create", "Pod")] = QUOTA
    syncer.sync(NS, NAME)
    api.calls.clear()
    result = syncer.sync(NS, NAME)
    assert api.writes() == [("create", "Pod", HEAD_POD)]
    assert result == SyncResult(valid=True, actions=(), status_patched=False, error=refused_message())


def test_once_the_write_is_allowed_the_next_pass_recovers_without_a_warning() -> None:
    api, syncer = make()
    api.refuse[("create", "Pod")] = QUOTA
    syncer.sync(NS, NAME)
    del api.refuse[("create", "Pod")]
    api.calls.clear()
    result = syncer.sync(NS, NAME)
    assert api.writes() == [("create", "Pod", HEAD_POD), ("event", "Normal", "Created"),
                            ("create", "Pod", CPU_POD), ("event", "Normal", "Created"),
                            ("patch_cluster_status", NAME)]
    assert result is not None and result.error is None
    assert api.cluster["status"]["phase"] == "Pending"
    assert conditions(api.cluster["status"])["Ready"][1] == "HeadNotReady"


def test_a_refused_event_is_logged_and_the_pass_goes_on() -> None:
    api, syncer = make()
    api.refuse[("create", "Event")] = "events are forbidden"
    result = syncer.sync(NS, NAME)
    assert result is not None and result.error is None and len(result.actions) == 4
    assert api.writes()[-1] == ("patch_cluster_status", NAME)
    assert api.events == []


# --- an invalid spec ----------------------------------------------------------------------

def invalid_body() -> dict[str, Any]:
    body = cluster_body()
    body["spec"]["head"]["resources"]["limits"]["memory"] = "lots"
    return body


def test_an_invalid_spec_writes_status_and_one_warning_and_touches_no_child() -> None:
    api, syncer = make(invalid_body())
    result = syncer.sync(NS, NAME)
    assert api.calls == [("get_cluster", NAME), ("patch_cluster_status", NAME), ("event", "Warning", "InvalidSpec")]
    assert api.objects == {}
    assert result is not None and not result.valid and result.status_patched and result.actions == ()
    assert result.error is not None and result.error.startswith("spec.head.resources.limits.memory: ")
    status = api.cluster["status"]
    assert (status["phase"], status["observedGeneration"]) == ("Invalid", 1)
    assert conditions(status)["SpecValid"] == ("False", "InvalidSpec", result.error)
    [event] = api.events
    assert (event["message"], event["involvedObject"]["name"]) == (result.error, NAME)


def test_an_invalid_spec_seen_again_writes_nothing() -> None:
    api, syncer = make(invalid_body())
    syncer.sync(NS, NAME)
    api.calls.clear()
    result = syncer.sync(NS, NAME)
    assert api.calls == [("get_cluster", NAME)]
    assert result is not None and not result.valid and not result.status_patched


def test_a_stored_spec_above_the_scale_caps_is_invalid_and_touches_no_child() -> None:
    """Stored before the CRD had the caps: the model refuses it as the CRD now would."""
    body = cluster_body()
    body["spec"]["workerGroups"][0].update(replicas=MAX_GROUP_REPLICAS + 1, maxReplicas=MAX_GROUP_REPLICAS + 1)
    api, syncer = make(body)
    result = syncer.sync(NS, NAME)
    assert result is not None and not result.valid and api.objects == {}
    assert result.error is not None and result.error.startswith("spec.workerGroups[0].replicas: must be at most")
    assert conditions(api.cluster["status"])["SpecValid"][:2] == ("False", "InvalidSpec")


# --- bounded batches ----------------------------------------------------------------------

def test_a_large_group_is_created_one_batch_per_pass_and_status_follows() -> None:
    body = cluster_body()
    body["spec"]["workerGroups"][0].update(replicas=120, maxReplicas=120)
    api, syncer = make(body)
    counter = itertools.count()
    syncer.new_name = lambda prefix: f"{prefix}{next(counter):05d}"
    per_pass = []
    for _ in range(6):
        result = syncer.sync(NS, NAME)
        assert result is not None and result.valid and result.error is None
        per_pass.append(sum(1 for a in result.actions if a.kind == "Pod"))
        if not result.actions:
            break
    assert MAX_POD_CREATES_PER_PASS == 50 and per_pass == [50, 50, 21, 0]  # 121 pods: the head, 120 workers
    assert sum(1 for kind, _ in api.objects if kind == "Pod") == 121
    status = api.cluster["status"]
    assert (status["workersDesired"], status["workersReady"]) == (120, 0)
    assert conditions(status)["WorkersReady"][2] == "cpu: 0/120 ready"


# --- a cluster gone or going --------------------------------------------------------------

def test_a_cluster_being_deleted_is_read_and_nothing_else() -> None:
    body = cluster_body()
    body["metadata"]["deletionTimestamp"] = NOW
    api, syncer = make(body)
    assert syncer.sync(NS, NAME) is None
    assert api.calls == [("get_cluster", NAME)]


def test_a_cluster_that_is_gone_is_read_and_nothing_else() -> None:
    api, syncer = make()
    api.cluster = None
    assert syncer.sync(NS, NAME) is None
    assert api.calls == [("get_cluster", NAME)]


# --- the Protocols ------------------------------------------------------------------------

def protocol_methods(protocol: type) -> list[str]:
    return [n for n, v in vars(protocol).items() if inspect.isfunction(v) and not n.startswith("_")]


def test_kube_api_and_the_fake_satisfy_the_protocols_with_the_same_parameters() -> None:
    assert protocol_methods(SyncerApi) == ["get_cluster", "patch_cluster", "patch_cluster_status", "get_secret",
                                           "get_service", "list_pods", "get", "create", "patch", "delete_pod",
                                           "delete", "apply", "delete_service"]
    for protocol in (SyncerApi, TrackerApi, EventApi):
        assert issubclass(KubeApi, protocol)
        for method in protocol_methods(protocol):
            wanted = list(inspect.signature(getattr(protocol, method)).parameters)
            assert list(inspect.signature(getattr(KubeApi, method)).parameters) == wanted, (protocol, method)
    assert isinstance(FakeApi(None), SyncerApi)
    for method in protocol_methods(SyncerApi):
        assert (list(inspect.signature(getattr(FakeApi, method)).parameters)
                == list(inspect.signature(getattr(SyncerApi, method)).parameters)), method

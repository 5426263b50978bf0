"""Autoscaling, workersToDelete and suspend under kopf, against the API emulator (issue 10).

One emulator and one operator per chart mode serve the whole module (each test has its own
cluster): the operator runs as the chart's ServiceAccount under the rules `helm template`
renders, so the rights it needs to make each cluster's autoscaler ServiceAccount, Role,
RoleBinding and ConfigMap (and the API server's escalation check on that Role) are exercised
in both modes. What the autoscaler sidecar's provider does to the RayCluster is done here with
a token of that very ServiceAccount, so the Role the operator made is what lets it through.

The emulator has no kubelet: pods stay Pending until a test marks them ready.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes.client
import pytest
import yaml
from kubernetes.client.exceptions import ApiException

from rayguard_node.contract.autoscaler import ANNOTATION_SCALE_REASON, CONFIG_KEY, autoscaler_name
from tests.integration.conftest import OperatorHarness, operator_under_chart_rbac
from testkit.kube import (ADMIN_TOKEN, CHART_MODES, EmulatorServer, KubeApi, api_client, rayguard_emulator,
                          run_kopf, write_kubeconfig)

REPO = Path(__file__).resolve().parents[2]
NS = "default"
MERGE = "application/merge-patch+json"
GROUP, VERSION, PLURAL = "rayguard.dev", "v1", "rayclusters"

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module", params=sorted(CHART_MODES))
def operator(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorHarness]:
    """One emulator and `kopf run -m rayguard_operator.handlers` (0.5 s resync) per chart mode,
    shared by the module's tests; at the end, no request of the operator was refused (the
    autoscaler's ServiceAccount is refused once, on purpose)."""
    mode = CHART_MODES[request.param]
    directory = tmp_path_factory.mktemp(f"autoscaling-{mode.name}")
    with pytest.MonkeyPatch.context() as patch, EmulatorServer(rayguard_emulator()) as server:
        kubeconfig = write_kubeconfig(directory / "kubeconfig", server.url, token=ADMIN_TOKEN)
        patch.setenv("KUBECONFIG", str(kubeconfig))
        patch.setenv("RAYGUARD_OPERATOR_RESYNC_SECONDS", "0.5")
        patch.setenv("RAYGUARD_OPERATOR_NODE_IMAGE", "rayguard/node:test")
        client = api_client(server.url, token=ADMIN_TOKEN)
        api = KubeApi(url=server.url, kubeconfig_path=kubeconfig, emulator=server.emulator, server=server,
                      client=client)
        harness = OperatorHarness(api)
        try:
            with run_kopf(operator_under_chart_rbac(api, mode, directory, patch), timeout=30) as runner:
                harness.runner = runner
                yield harness
            assert runner.exception is None, runner.exception
            assert runner.exit_code == 0, runner.output
            authorizer = api.emulator.authorizer
            assert authorizer is not None and authorizer.served.get(mode.user(), 0) > 0
            refused = [f"{d.code} {d.attrs.verb} {d.attrs.path}: {d.status['message']}"
                       for d in api.emulator.refused() if d.user == mode.user()]
            assert refused == [], "\n".join(refused)
        finally:
            client.close()


def autoscaled(name: str, replicas: int = 0, enabled: bool = True) -> dict[str, Any]:
    body = yaml.safe_load((REPO / "examples" / "raycluster-minimal.yaml").read_text())
    body["metadata"]["name"] = name
    body["spec"]["autoscaling"] = {"enabled": enabled, "idleTimeoutSeconds": 60}
    body["spec"]["workerGroups"][0].update(replicas=replicas, minReplicas=0, maxReplicas=4)
    return body


class Autoscaler:
    """What the sidecar's provider does to its RayCluster, with its ServiceAccount's token: read
    it, then one merge patch of spec.workerGroups and the reason annotation, carrying the
    resourceVersion it read; a 409 (the operator wrote the status in between) is read again."""

    def __init__(self, operator: OperatorHarness, cluster: str) -> None:
        self.cluster = cluster
        token = operator.api.token_for(NS, autoscaler_name(cluster))
        self.client = api_client(operator.api.url, token=token)
        self.custom = kubernetes.client.CustomObjectsApi(self.client)
        self.core = kubernetes.client.CoreV1Api(self.client)

    def read(self, name: str | None = None) -> dict[str, Any]:
        return json.loads(self.custom.get_namespaced_custom_object(
            GROUP, VERSION, NS, PLURAL, name or self.cluster, _preload_content=False).data)

    def scale(self, replicas: int, reason: str, to_delete: tuple[str, ...] = ()) -> None:
        for _ in range(20):
            body = self.read()
            groups = body["spec"]["workerGroups"]
            if groups[0]["replicas"] == replicas and groups[0].get("workersToDelete", []) == list(to_delete):
                return  # a write answered 5xx had been applied
            groups[0]["replicas"] = replicas
            if to_delete:
                groups[0]["workersToDelete"] = list(to_delete)
            patch = {"metadata": {"resourceVersion": body["metadata"]["resourceVersion"],
                                  "annotations": {ANNOTATION_SCALE_REASON: json.dumps({"cpu": reason})}},
                     "spec": {"workerGroups": groups}}
            try:
                self.custom.patch_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, self.cluster, patch,
                                                           _content_type=MERGE)
                return
            except ApiException as error:
                if error.status != 409 and (error.status or 0) < 500:
                    raise
            time.sleep(0.05)
        raise AssertionError(f"the autoscaler's patch of {self.cluster} kept conflicting")

    def close(self) -> None:
        self.client.close()


def children(operator: OperatorHarness, cluster: str) -> dict[str, dict[str, Any] | None]:
    """The cluster's autoscaler ServiceAccount, Role, RoleBinding and ConfigMap (None: missing)."""
    name, client = autoscaler_name(cluster), operator.api.client
    core, rbac = kubernetes.client.CoreV1Api(client), kubernetes.client.RbacAuthorizationV1Api(client)
    reads = {"ServiceAccount": core.read_namespaced_service_account, "ConfigMap": core.read_namespaced_config_map,
             "Role": rbac.read_namespaced_role, "RoleBinding": rbac.read_namespaced_role_binding}
    found: dict[str, dict[str, Any] | None] = {}
    for kind, read in reads.items():
        try:
            found[kind] = json.loads(read(name, NS, _preload_content=False).data)
        except ApiException as error:
            if error.status != 404:
                raise
            found[kind] = None
    return found


def messages(operator: OperatorHarness, reason: str, cluster: str) -> list[str]:
    return sorted(e["message"] for e in operator.events(reason=reason, cluster=cluster))


def ready_all(operator: OperatorHarness, cluster: str) -> None:
    for pod in operator.pods(cluster):
        if (pod.get("status") or {}).get("phase") != "Running":
            operator.set_ready(pod["metadata"]["name"])


def group_status(operator: OperatorHarness, cluster: str) -> dict[str, Any]:
    return (operator.status(cluster).get("workerGroups") or [{}])[0]


def test_the_autoscaler_scales_up_and_down_by_naming_pods(operator: OperatorHarness) -> None:
    operator.create(autoscaled("up"))
    operator.wait(lambda: len(operator.pods("up")) == 1, "the head pod")
    made = children(operator, "up")
    assert all(made.values()), made
    [head] = operator.pods("up")
    assert head["spec"]["serviceAccountName"] == autoscaler_name("up")
    config = json.loads(made["ConfigMap"]["data"][CONFIG_KEY])  # type: ignore[index]
    assert config["available_node_types"]["cpu"]["max_workers"] == 4

    # The token first, then a write: the emulator takes in a new token with its next write.
    autoscaler = Autoscaler(operator, "up")
    ready_all(operator, "up")
    try:
        # The Role the operator made lets the sidecar read pods, and its cluster only.
        assert autoscaler.core.list_namespaced_pod(NS, label_selector="rayguard.dev/cluster=up").items
        with pytest.raises(ApiException) as refused:
            autoscaler.custom.patch_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "another", {},
                                                             _content_type=MERGE)
        assert refused.value.status == 403

        autoscaler.scale(3, "pending demand")
        operator.wait(lambda: len(operator.pod_names("up", "cpu")) == 3, "three workers")
        operator.wait(lambda: messages(operator, "ScaledUp", "up") == ["group cpu: 0 -> 3 (pending demand)"],
                      "one ScaledUp")
        assert group_status(operator, "up")["desired"] == 3
        ready_all(operator, "up")
        operator.wait(lambda: group_status(operator, "up").get("ready") == 3, "ready 3 of 3")

        # Scale-down: exactly the named pod goes; a bogus name is ignored with a Normal Event.
        first, second, third = sorted(operator.pod_names("up", "cpu"))
        autoscaler.scale(2, "idle", to_delete=(second, "up-worker-cpu-bogus"))
        operator.wait(lambda: operator.pod_names("up", "cpu") == {first, third}, "the named pod gone")
        operator.wait(lambda: "workersToDelete" not in operator.cluster("up")["spec"]["workerGroups"][0],
                      "workersToDelete cleared")
        operator.wait(lambda: operator.events(reason="WorkersToDeleteIgnored", cluster="up"), "the Event")
        operator.wait(lambda: "group cpu: 3 -> 2 (idle)" in messages(operator, "ScaledDown", "up"), "ScaledDown")
        [ignored] = operator.events(reason="WorkersToDeleteIgnored", cluster="up")  # once
        assert ignored["type"] == "Normal" and "up-worker-cpu-bogus (no such pod)" in ignored["message"]
        assert group_status(operator, "up") == {"name": "cpu", "desired": 2, "ready": 2}
        assert operator.cluster("up")["spec"]["workerGroups"][0]["replicas"] == 2

        # Lowering replicas without naming a pod deletes nothing: the autoscaler names them.
        autoscaler.scale(0, "idle")
        operator.wait(lambda: group_status(operator, "up").get("desired") == 0, "desired 0")
        operator.wait_reconciles("up", passes=3)
        assert operator.pod_names("up", "cpu") == {first, third}
        assert messages(operator, "ScaledDown", "up") == ["group cpu: 2 -> 0 (idle)", "group cpu: 3 -> 2 (idle)"]
        assert len(operator.events(reason="ScaledUp", cluster="up")) == 1  # once per change
    finally:
        autoscaler.close()


def test_a_resync_writes_nothing_and_a_config_change_patches_the_config_map(operator: OperatorHarness) -> None:
    operator.create(autoscaled("steady", replicas=1))
    operator.wait(lambda: len(operator.pods("steady")) == 2, "the head and a worker")
    ready_all(operator, "steady")
    operator.wait(lambda: operator.status("steady").get("phase") == "Ready", "phase Ready")
    operator.settle("steady")
    since = operator.api.emulator.mark()
    operator.wait_reconciles("steady", passes=3)
    assert operator.api.emulator.count_writes(since) == 0

    before = children(operator, "steady")
    spec = autoscaled("steady", replicas=1)["spec"]
    spec["autoscaling"]["idleTimeoutSeconds"] = 120
    operator.patch_spec("steady", spec)

    def idle_minutes() -> float:
        config_map = children(operator, "steady")["ConfigMap"]
        return json.loads(config_map["data"][CONFIG_KEY])["idle_timeout_minutes"]  # type: ignore[index]

    operator.wait(lambda: idle_minutes() == 2.0, "the new config")
    after = children(operator, "steady")
    for kind in ("ServiceAccount", "Role", "RoleBinding"):  # the same objects, untouched
        then, now = before[kind]["metadata"], after[kind]["metadata"]  # type: ignore[index]
        assert (now["uid"], now["resourceVersion"]) == (then["uid"], then["resourceVersion"])

    # Turned off: the four go (the head is then outdated; RollingUpdate keeps it: no GCS FT).
    spec["autoscaling"]["enabled"] = False
    operator.patch_spec("steady", spec)
    operator.wait(lambda: not any(children(operator, "steady").values()), "the children gone")
    assert len(operator.events(reason="Deleted", cluster="steady")) >= 4


def test_suspend_deletes_every_pod_and_resume_brings_them_back(operator: OperatorHarness) -> None:
    body = autoscaled("sleepy", replicas=2, enabled=False)
    operator.create(body)
    operator.wait(lambda: len(operator.pods("sleepy")) == 3, "the head and two workers")
    ready_all(operator, "sleepy")
    operator.wait(lambda: operator.status("sleepy").get("phase") == "Ready", "phase Ready")
    secret, service = operator.secret("sleepy-secret"), operator.service("sleepy-head")

    operator.patch_spec("sleepy", {"suspend": True})
    operator.wait(lambda: not operator.pods("sleepy"), "every pod gone, the head too")
    operator.wait(lambda: operator.status("sleepy").get("phase") == "Suspended", "phase Suspended")
    ready = operator.condition("sleepy", "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "Suspended")
    assert operator.secret("sleepy-secret")["metadata"]["uid"] == secret["metadata"]["uid"]
    assert operator.service("sleepy-head")["metadata"]["uid"] == service["metadata"]["uid"]
    assert operator.cluster("sleepy")["spec"]["workerGroups"][0]["replicas"] == 2
    operator.wait_reconciles("sleepy", passes=2)
    assert operator.pods("sleepy") == []
    [suspended] = operator.events(reason="Suspended", cluster="sleepy")
    assert suspended["type"] == "Normal"

    operator.patch_spec("sleepy", {"suspend": False})
    operator.wait(lambda: len(operator.pods("sleepy")) == 3, "the pods back")
    ready_all(operator, "sleepy")
    operator.wait(lambda: operator.status("sleepy").get("phase") == "Ready", "phase Ready again")
    assert [e["type"] for e in operator.events(reason="Resumed", cluster="sleepy")] == ["Normal"]
    assert len(operator.events(reason="Suspended", cluster="sleepy")) == 1
    assert operator.condition("sleepy", "Suspended")["status"] == "False"

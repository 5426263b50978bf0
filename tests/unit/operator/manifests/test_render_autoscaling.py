"""`rayguard render` of an autoscaling cluster: the sidecar in the head pod, its ServiceAccount,
Role, RoleBinding and ConfigMap; none of them without autoscaling; a suspended cluster has no
pods; and the head is rolled only by the autoscaling settings its pod holds, never by scaling."""

from __future__ import annotations

import copy
from typing import Any

import kubernetes_validate
import pytest
import yaml

from rayguard_node.contract import autoscaler as A
from rayguard_node.contract import settings as S
from rayguard_operator import names
from rayguard_operator.manifests.parts import AUTOSCALING, changed_parts, read_parts
from rayguard_operator.manifests.pod import pod_template
from rayguard_operator.manifests.render import load_cluster, render_list
from rayguard_operator.settings import OperatorSettings
from rayguard_operator.spec.model import parse_cluster
from rayguard_operator.spec.pod_security import RESTRICTED, check_pod
from tests.paths import REPO_ROOT

SETTINGS = OperatorSettings()
EXAMPLE = REPO_ROOT / "examples" / "raycluster-autoscaling.yaml"
AUTOSCALER_KINDS = ["ServiceAccount", "Role", "RoleBinding", "ConfigMap"]


def example() -> dict[str, Any]:
    return load_cluster(EXAMPLE)


def items(body: dict[str, Any]) -> list[dict[str, Any]]:
    return render_list(body, SETTINGS)["items"]


def by_kind(listing: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [i for i in listing if i["kind"] == kind]


def head_pod(listing: list[dict[str, Any]]) -> dict[str, Any]:
    [head] = [p for p in by_kind(listing, "Pod") if p["metadata"]["labels"][names.LABEL_NODE_TYPE] == names.HEAD]
    return head


def container(pod: dict[str, Any], name: str) -> dict[str, Any]:
    [found] = [c for c in pod["spec"]["containers"] if c["name"] == name]
    return found


def env(c: dict[str, Any]) -> dict[str, str | None]:
    return {e["name"]: e.get("value") for e in c["env"]}


def test_the_autoscaler_children_come_before_the_pods() -> None:
    body = example()
    body["spec"]["workerGroups"][0]["replicas"] = 1
    kinds = [i["kind"] for i in items(body)]
    assert kinds == ["Secret", "Service", *AUTOSCALER_KINDS, "Pod", "Pod"]


def test_the_children_are_owned_labelled_and_narrow() -> None:
    listing = items(example())
    name = A.autoscaler_name("autoscaling")
    for kind in AUTOSCALER_KINDS:
        [child] = by_kind(listing, kind)
        assert child["metadata"]["name"] == name and child["metadata"]["namespace"] == "default"
        assert child["metadata"]["labels"] == names.cluster_labels("autoscaling")
        assert [o["kind"] for o in child["metadata"]["ownerReferences"]] == ["RayCluster"]
        kubernetes_validate.validate(child, "1.30", strict=True)
    [role] = by_kind(listing, "Role")
    assert role["rules"] == [
        {"apiGroups": ["rayguard.dev"], "resources": ["rayclusters"], "resourceNames": ["autoscaling"],
         "verbs": ["get", "patch"]},
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}]
    [binding] = by_kind(listing, "RoleBinding")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": name, "namespace": "default"}]
    [config_map] = by_kind(listing, "ConfigMap")
    assert set(config_map["data"]) == {A.CONFIG_KEY}


def test_the_head_pod_runs_the_sidecar() -> None:
    head = head_pod(items(example()))
    kubernetes_validate.validate(head, "1.30", strict=True)
    spec = head["spec"]
    assert [c["name"] for c in spec["containers"]] == [names.CONTAINER, A.CONTAINER]
    sidecar = container(head, A.CONTAINER)
    assert sidecar["command"] == list(A.COMMAND)
    assert sidecar["image"] == container(head, names.CONTAINER)["image"]
    assert sidecar["resources"] == {"limits": A.DEFAULT_LIMITS, "requests": A.DEFAULT_LIMITS}
    assert env(sidecar) == {
        A.CLUSTER_ENV: "autoscaling", A.NAMESPACE_ENV: "default", A.CONFIG_ENV: A.CONFIG_PATH,
        A.GCS_ADDRESS_ENV: "127.0.0.1:6379",
        A.RAY_AUTH_TOKEN_FILE_ENV: f"{names.SECRETS_DIR}/{names.SECRET_KEY_RAY_TOKEN}"}
    mounts = {m["mountPath"]: m for m in sidecar["volumeMounts"]}
    assert mounts[A.CONFIG_DIR]["readOnly"] and mounts[names.SECRETS_DIR]["readOnly"]
    assert mounts["/var/run/secrets/kubernetes.io/serviceaccount"]["readOnly"]
    assert spec["serviceAccountName"] == A.autoscaler_name("autoscaling")
    # The API token is the sidecar's alone: ray-node (user code) mounts none, the pod automounts none.
    assert spec["automountServiceAccountToken"] is False
    assert not [m for m in container(head, names.CONTAINER)["volumeMounts"] if "serviceaccount" in m["mountPath"]]
    [config_volume] = [v for v in spec["volumes"] if v["name"] == A.VOLUME]
    assert config_volume["configMap"]["name"] == A.autoscaler_name("autoscaling")
    assert env(container(head, names.CONTAINER))[S.EXTERNAL_AUTOSCALER.env] == "true"


def test_the_sidecar_passes_restricted() -> None:
    head = head_pod(items(example()))
    assert check_pod(head, RESTRICTED) == []
    broken = copy.deepcopy(head)
    container(broken, A.CONTAINER)["securityContext"]["allowPrivilegeEscalation"] = True
    assert [v.path for v in check_pod(broken, RESTRICTED)] == ["spec.containers[1].securityContext.allowPrivilegeEscalation"]


def test_the_sidecar_image_and_resources_are_the_specs() -> None:
    body = example()
    body["spec"]["autoscaling"].update(image="reg/auto:2", resources={"limits": {"cpu": "1", "memory": "1Gi"}})
    sidecar = container(head_pod(items(body)), A.CONTAINER)
    assert sidecar["image"] == "reg/auto:2"
    assert sidecar["resources"] == {"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "1", "memory": "1Gi"}}


def test_workers_are_untouched_by_autoscaling() -> None:
    body = example()
    body["spec"]["workerGroups"][0]["replicas"] = 1
    [worker] = [p for p in by_kind(items(body), "Pod") if p["metadata"]["labels"][names.LABEL_NODE_TYPE] == "worker"]
    assert [c["name"] for c in worker["spec"]["containers"]] == [names.CONTAINER]
    assert "serviceAccountName" not in worker["spec"]
    assert S.EXTERNAL_AUTOSCALER.env not in env(worker["spec"]["containers"][0])


def test_nothing_of_it_without_autoscaling() -> None:
    for body in (load_cluster(REPO_ROOT / "examples" / "raycluster-minimal.yaml"), example()):
        body["spec"]["autoscaling"] = {"enabled": False}
        listing = items(body)
        assert not [i for i in listing if i["kind"] in AUTOSCALER_KINDS]
        for pod in by_kind(listing, "Pod"):
            assert [c["name"] for c in pod["spec"]["containers"]] == [names.CONTAINER]
            assert "serviceAccountName" not in pod["spec"]
            assert S.EXTERNAL_AUTOSCALER.env not in env(pod["spec"]["containers"][0])


def test_a_suspended_cluster_has_no_pods() -> None:
    body = example()
    body["spec"]["suspend"] = True
    body["spec"]["workerGroups"][0]["replicas"] = 2
    assert [i["kind"] for i in items(body)] == ["Secret", "Service", *AUTOSCALER_KINDS]


# --- what rolls the head: only the pod's own settings, never scaling --------------------------

def _hashes(body: dict[str, Any]) -> dict[str, str]:
    cluster = parse_cluster(body, SETTINGS)
    return {g.name: pod_template(cluster, g)["metadata"]["annotations"][names.ANNOTATION_TEMPLATE_HASH]
            for g in cluster.groups}


def _scaled(body: dict[str, Any]) -> None:
    group = body["spec"]["workerGroups"][0]
    group.update(replicas=2, workersToDelete=["autoscaling-worker-cpu-bcdfg"])


def _config_only(body: dict[str, Any]) -> None:
    body["spec"]["autoscaling"].update(idleTimeoutSeconds=600, upscalingMode="Conservative")


@pytest.mark.parametrize("change", [_scaled, _config_only], ids=["replicas-and-workersToDelete", "config-only"])
def test_no_pod_is_outdated_by(change: Any) -> None:
    body = example()
    before = _hashes(body)
    change(body)
    assert _hashes(body) == before


@pytest.mark.parametrize("change", [
    lambda a: a.update(image="reg/auto:2"),
    lambda a: a.update(resources={"limits": {"memory": "1Gi"}}),
    lambda a: a.update(enabled=False),
], ids=["image", "resources", "turned-off"])
def test_the_sidecars_settings_roll_the_head_only(change: Any) -> None:
    body = example()
    before_cluster = parse_cluster(body, SETTINGS)
    before = pod_template(before_cluster, before_cluster.head)
    change(body["spec"]["autoscaling"])
    after = _hashes(body)
    old = _hashes(example())
    assert after["head"] != old["head"] and after["cpu"] == old["cpu"]
    cluster = parse_cluster(body, SETTINGS)
    recorded = read_parts(before["metadata"]["annotations"][names.ANNOTATION_TEMPLATE_PARTS])
    desired = read_parts(pod_template(cluster, cluster.head)["metadata"]["annotations"][names.ANNOTATION_TEMPLATE_PARTS])
    assert changed_parts(recorded, desired) == (AUTOSCALING,)

"""The chart's RBAC for autoscaling (issue 10): the operator makes each autoscaled cluster's
ServiceAccount, Role, RoleBinding and ConfigMap, so it needs rights on them, and no more.

A real API server lets a user create or update a Role only with every right the Role grants
(RBAC's escalation check), in that namespace or cluster-wide, and bind a Role likewise (or with
`bind`, which the chart does not grant). So in each chart mode, the rules the chart renders
must already allow every request the autoscaler's Role allows, in a watched namespace.
"""

from __future__ import annotations

import pytest

from rayguard_operator.manifests.autoscaler import build_role
from rayguard_operator.spec.model import parse_cluster
from rayguard_operator.settings import OperatorSettings
from testkit.kube import helm_template, request_attributes
from testkit.kube.chart import RELEASE_NAMESPACE
from testkit.kube.rbac import Policy, service_account_user
from tests.unit.deploy.test_chart import api_rights

RBAC = "rbac.authorization.k8s.io"
CHILDREN = {("", "configmaps"), ("", "serviceaccounts"), (RBAC, "roles"), (RBAC, "rolebindings")}
MODES = {  # chart arguments, and the namespace an autoscaled cluster lives in
    "cluster": ((), "team-a"),
    "cluster-two": (("--set", "watchNamespaces={a,b}"), "b"),
    "namespaced-default": (("--set", "namespaced=true"), RELEASE_NAMESPACE),
    "namespaced-two": (("--set", "namespaced=true", "--set", "watchNamespaces={a,b}"), "a"),
}


def autoscaled_role(namespace: str) -> dict:
    body = {"apiVersion": "rayguard.dev/v1", "kind": "RayCluster",
            "metadata": {"name": "demo", "namespace": namespace, "uid": "u1", "generation": 1},
            "spec": {"autoscaling": {"enabled": True},
                     "head": {"resources": {"limits": {"cpu": "1", "memory": "2Gi"}}},
                     "workerGroups": [{"name": "cpu", "replicas": 0, "minReplicas": 0, "maxReplicas": 2,
                                       "resources": {"limits": {"cpu": "1", "memory": "2Gi"}}}]}}
    return build_role(parse_cluster(body, OperatorSettings()))


@pytest.mark.parametrize("mode", MODES)
def test_the_operator_holds_every_right_the_autoscaler_role_grants(mode: str) -> None:
    args, namespace = MODES[mode]
    policy = Policy.from_documents(helm_template(*args))
    user = service_account_user(RELEASE_NAMESPACE, "rg-rayguard")
    role = autoscaled_role(namespace)
    checked = 0
    for rule in role["rules"]:
        group = rule["apiGroups"][0]
        prefix = f"/apis/{group}/v1" if group else "/api/v1"
        for resource in rule["resources"]:
            for verb in rule["verbs"]:
                for name in rule.get("resourceNames") or ["any-pod" if verb == "get" else ""]:
                    method = {"get": "GET", "list": "GET", "patch": "PATCH"}[verb]
                    path = f"{prefix}/namespaces/{namespace}/{resource}" + (f"/{name}" if name else "")
                    attrs = request_attributes(method, path)
                    assert attrs.verb == verb
                    assert policy.allows(user, attrs), (mode, verb, path)
                    checked += 1
    assert checked == 4  # rayclusters get, patch; pods get, list
    # And the operator may create, read and delete the Role and its binding there.
    for resource in ("roles", "rolebindings"):
        base = f"/apis/{RBAC}/v1/namespaces/{namespace}/{resource}"
        assert policy.allows(user, request_attributes("POST", base))
        assert policy.allows(user, request_attributes("DELETE", f"{base}/demo-autoscaler"))
        assert not policy.allows(user, request_attributes("PATCH", f"{base}/demo-autoscaler"))
        assert not policy.allows(user, request_attributes("GET", base))  # never listed


def test_outside_the_watched_namespaces_namespaced_mode_can_make_no_role() -> None:
    policy = Policy.from_documents(helm_template("--set", "namespaced=true", "--set", "watchNamespaces={a}"))
    user = service_account_user(RELEASE_NAMESPACE, "rg-rayguard")
    assert policy.allows(user, request_attributes("POST", f"/apis/{RBAC}/v1/namespaces/a/roles"))
    assert not policy.allows(user, request_attributes("POST", f"/apis/{RBAC}/v1/namespaces/b/roles"))


def test_the_autoscaler_children_are_never_listed_and_rbac_objects_never_patched() -> None:
    """Least privilege: the children are read by name; a Role or RoleBinding is deleted and
    created again rather than patched (a patch right on Roles could widen any Role the operator
    holds the rights of); the operator needs neither `bind` nor `escalate`."""
    rights = api_rights()
    assert {(g, r) for g, r, _ in rights} >= CHILDREN
    assert not any((g, r) in CHILDREN and v in ("list", "watch", "update") for g, r, v in rights)
    assert not any(r in ("roles", "rolebindings", "serviceaccounts") and v == "patch" for _, r, v in rights)
    assert not any(v in ("bind", "escalate", "impersonate") for _, _, v in rights)

"""The Helm chart: least-privilege RBAC with no wildcards, and the operator's contract.

Rendering needs `helm`; without it those tests skip, and the text checks below still hold the
no-wildcard rule and the exact set of permissions.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.crd_schema import REPO_ROOT

CHART = REPO_ROOT / "charts" / "rayguard"
TEMPLATES = CHART / "templates"
HELM = shutil.which("helm")

OPERATOR_ENV = ("RAYGUARD_OPERATOR_NODE_IMAGE", "RAYGUARD_OPERATOR_NAMESPACES",
                "RAYGUARD_OPERATOR_RESYNC_SECONDS", "RAYGUARD_OPERATOR_LOG_FORMAT")

# (apiGroup, resource) -> verbs. Anything more is a privilege the operator does not use.
NAMESPACED_PERMISSIONS = {
    ("rayguard.dev", "rayclusters"): {"get", "list", "watch", "patch", "update"},
    ("rayguard.dev", "rayclusters/status"): {"get", "patch", "update"},
    ("rayguard.dev", "rayclusters/finalizers"): {"update"},
    ("", "pods"): {"get", "list", "watch", "create", "delete", "patch"},
    ("", "services"): {"get", "list", "watch", "create", "patch", "delete"},
    ("", "secrets"): {"get", "list", "watch", "create", "patch", "delete"},
    ("", "events"): {"create", "patch"},
    ("events.k8s.io", "events"): {"create", "patch"},
}
CLUSTER_PERMISSIONS = {
    ("apiextensions.k8s.io", "customresourcedefinitions"): {"get", "list", "watch"},
    ("", "namespaces"): {"get", "list", "watch"},
}

_WILDCARD = re.compile(r"""(?:verbs|resources|apiGroups|resourceNames|nonResourceURLs)\s*:.*\*"""
                       r"""|^\s*-\s*["']?\*["']?\s*$""")


def _permissions(rules: list[dict[str, Any]]) -> dict[tuple[str, str], set[str]]:
    granted: dict[tuple[str, str], set[str]] = {}
    for rule in rules:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                granted.setdefault((group, resource), set()).update(rule["verbs"])
    return granted


def _define(name: str) -> str:
    text = (TEMPLATES / "_helpers.tpl").read_text(encoding="utf-8")
    match = re.search(r'\{\{-? define "' + re.escape(name) + r'" -?\}\}(.*?)\{\{-? end \}\}', text, re.S)
    assert match, f"_helpers.tpl defines no {name}"
    return match.group(1)


# --- without helm --------------------------------------------------------------------------

def test_no_wildcards_in_any_template() -> None:
    offending = [
        f"{path.name}:{n}: {line.strip()}"
        for path in sorted(TEMPLATES.iterdir())
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if _WILDCARD.search(line)
    ]
    assert offending == []


def test_wildcard_check_can_fail() -> None:
    assert _WILDCARD.search('  verbs: ["*"]')
    assert _WILDCARD.search("  resources: ['pods', '*']")
    assert _WILDCARD.search('  - "*"')
    assert not _WILDCARD.search('  verbs: ["get", "list"]')


def test_rules_grant_exactly_what_the_operator_uses() -> None:
    assert _permissions(yaml.safe_load(_define("rayguard.namespacedRules"))) == NAMESPACED_PERMISSIONS
    assert _permissions(yaml.safe_load(_define("rayguard.clusterRules"))) == CLUSTER_PERMISSIONS


def test_no_kopf_peering_rights_because_it_runs_standalone() -> None:
    rbac = (TEMPLATES / "rbac.yaml").read_text(encoding="utf-8") + _define("rayguard.namespacedRules")
    assert "kopf.dev" not in rbac
    deployment = (TEMPLATES / "deployment.yaml").read_text(encoding="utf-8")
    assert "- --standalone" in deployment
    assert re.search(r"^\s*replicas: 1$", deployment, re.M)


def test_deployment_template_carries_the_operator_contract() -> None:
    deployment = (TEMPLATES / "deployment.yaml").read_text(encoding="utf-8")
    for name in OPERATOR_ENV:
        assert f"- name: {name}" in deployment
    assert 'command: ["rayguard", "operator"]' in deployment
    assert "--liveness=http://0.0.0.0:{{ .Values.healthPort }}/healthz" in deployment
    assert "livenessProbe:" in deployment


def test_chart_metadata_and_defaults() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text(encoding="utf-8"))
    assert (chart["apiVersion"], chart["name"], chart["appVersion"]) == ("v2", "rayguard", "0.1.0")
    values = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))
    assert values["nodeImage"] == "rayguard/node:0.1.0"
    assert values["namespaced"] is False and values["watchNamespaces"] == []
    assert values["securityContext"]["allowPrivilegeEscalation"] is False
    assert values["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert values["podSecurityContext"]["runAsNonRoot"] is True


def test_every_value_is_documented() -> None:
    """Each top-level key, or the group of adjacent keys it belongs to, has a comment above."""
    lines = (CHART / "values.yaml").read_text(encoding="utf-8").splitlines()
    undocumented = []
    for i, line in enumerate(lines):
        if not re.match(r"^[A-Za-z]\w*:", line):
            continue
        j = i - 1
        while j >= 0 and re.match(r"^[A-Za-z]\w*:", lines[j]):
            j -= 1
        if j < 0 or not lines[j].startswith("#"):
            undocumented.append(line)
    assert undocumented == []


# --- with helm -----------------------------------------------------------------------------

def _render(*args: str) -> list[dict[str, Any]]:
    assert HELM is not None
    out = subprocess.run([HELM, "template", "rg", str(CHART), "--namespace", "rayguard", *args],
                         check=True, capture_output=True, text=True, timeout=120).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


needs_helm = pytest.mark.skipif(HELM is None, reason="helm is not installed; the text checks above still run")


@needs_helm
@pytest.mark.parametrize("args, role_kind, namespaces", [
    ((), "ClusterRole", {None}),
    (("--set", "namespaced=true"), "Role", {"rayguard"}),
    (("--set", "namespaced=true", "--set", "watchNamespaces={a,b}"), "Role", {"a", "b"}),
], ids=["cluster", "namespaced-default", "namespaced-two"])
def test_rendered_chart(args: tuple[str, ...], role_kind: str, namespaces: set[Any]) -> None:
    docs = _render(*args)
    for doc in docs:
        kubernetes_validate.validate(doc, "1.30", strict=True)
    roles = [d for d in docs if d["kind"] in ("Role", "ClusterRole")]
    for role in roles:
        for rule in role["rules"]:
            for key in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule.get(key, []), f"{role['kind']} {role['metadata']['name']}: {rule}"
    app_roles = [r for r in roles if r["kind"] == role_kind and not r["metadata"]["name"].endswith("-observer")]
    assert {r["metadata"].get("namespace") for r in app_roles} == namespaces
    for role in app_roles:
        granted = _permissions(role["rules"])
        expected = NAMESPACED_PERMISSIONS | (CLUSTER_PERMISSIONS if role_kind == "ClusterRole" else {})
        assert granted == expected
    [deployment] = [d for d in docs if d["kind"] == "Deployment"]
    env = {e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert set(OPERATOR_ENV) <= set(env)
    watched = env["RAYGUARD_OPERATOR_NAMESPACES"]
    if role_kind == "Role":
        assert set(watched.split(",")) == namespaces
    else:
        assert watched == "", "cluster mode watches every namespace"


@needs_helm
def test_helm_lint() -> None:
    assert HELM is not None
    result = subprocess.run([HELM, "lint", str(CHART)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr

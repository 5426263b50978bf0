"""The Helm chart: least-privilege RBAC with no wildcards, and the operator's contract.

The chart is rendered and linted by a real `helm` (v4, installed into .venv/bin by `make deps`
from scripts/install-helm-kubectl.sh; the tests look there even when it is not on PATH), and
what it renders is validated against the Kubernetes 1.35 schemas.

Least privilege is measured, not listed: the rights the operator needs are derived from the
code. Every client call in operator/rayguard_operator/kube/api.py (read with `ast`, including
the methods it reaches through `getattr`) is mapped to its HTTP method and path by the
kubernetes client's own source, and those to a verb and resource as the API server reads them
(`testkit.kube.rbac.request_attributes`, which the emulator's RBAC uses too). kopf's own needs
come from the handlers the operator registers, and the rule for blockOwnerDeletion from the
owner references it sets. The rendered Roles and ClusterRoles must grant exactly that set.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
import sys
from typing import Any, Iterable

import kopf
import kubernetes.client
import kubernetes_validate
import pytest
import yaml

from rayguard_operator import names
from testkit.kube import helm_lint, helm_template, request_attributes
from testkit.kube.chart import RELEASE_NAMESPACE
from testkit.kube.rbac import Policy, service_account_user
from tests.crd_schema import REPO_ROOT

CHART = REPO_ROOT / "charts" / "rayguard"
TEMPLATES = CHART / "templates"
API_MODULE = "rayguard_operator.kube.api"
HANDLERS = "rayguard_operator.handlers"
OPERATOR_DIR = REPO_ROOT / "operator" / "rayguard_operator"
SCHEMA_VERSION = "1.35"

OPERATOR_ENV = ("RAYGUARD_OPERATOR_NODE_IMAGE", "RAYGUARD_OPERATOR_NAMESPACES",
                "RAYGUARD_OPERATOR_RESYNC_SECONDS", "RAYGUARD_OPERATOR_LOG_FORMAT")

Right = tuple[str, str, str]  # (apiGroup, resource or resource/subresource, verb)
CRDS = ("apiextensions.k8s.io", "customresourcedefinitions")
NAMESPACES = ("", "namespaces")
CLUSTER_SCOPED = {CRDS, NAMESPACES}

_WILDCARD = re.compile(r"""(?:verbs|resources|apiGroups|resourceNames|nonResourceURLs)\s*:.*\*"""
                       r"""|^\s*-\s*["']?\*["']?\s*$""")


# --- what the operator uses, derived from the code ------------------------------------------

def _http_call(client: type, method: str) -> tuple[str, str]:
    """(HTTP method, path template) of a kubernetes client method, from the client's source."""
    for impl in (f"_{method}_serialize", f"{method}_with_http_info"):
        if hasattr(client, impl):
            source = inspect.getsource(getattr(client, impl))
            found = (re.search(r"method='(\w+)',\s*resource_path='([^']+)'", source)
                     or re.search(r"call_api\(\s*'([^']+)',\s*'(\w+)'", source))
            if found:
                first, second = found.groups()
                return (first, second) if first.isupper() else (second, first)
    raise AssertionError(f"cannot tell the HTTP call of {client.__name__}.{method}")


def api_rights(source: str | None = None) -> set[Right]:
    """Every (group, resource, verb) the client module's calls need. `source` replaces the
    module's text (to show the derivation follows the code)."""
    module = importlib.import_module(API_MODULE)
    tree = ast.parse(source if source is not None else inspect.getsource(module))
    [cls] = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "KubeApi"]
    scope = vars(module)
    # self.<attr> = kubernetes.client.<Api>(...) in __init__: the clients and their classes
    clients: dict[str, type] = {}
    for node in ast.walk(cls):
        if (isinstance(node, ast.Assign) and isinstance(node.value, ast.Call)
                and isinstance(target := node.targets[0], ast.Attribute)
                and isinstance(target.value, ast.Name) and target.value.id == "self"):
            made = eval(compile(ast.Expression(node.value.func), "api.py", "eval"), scope)  # noqa: S307
            if isinstance(made, type) and made.__module__.startswith("kubernetes.client"):
                clients[target.attr] = made
    assert {c.__name__ for c in clients.values()} >= {"CoreV1Api", "CustomObjectsApi"}, clients
    tables = {t.id: {k.value: v.value for k, v in zip(node.value.keys, node.value.values)}
              for node in cls.body if isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict)
              for t in node.targets if isinstance(t, ast.Name)}

    def client_of(expr: ast.AST) -> str | None:
        if (isinstance(expr, ast.Attribute) and isinstance(expr.value, ast.Name)
                and expr.value.id == "self" and expr.attr in clients):
            return expr.attr
        return None

    def method_names(expr: ast.AST) -> list[str]:
        if isinstance(expr, ast.Constant) and isinstance(expr.value, str):
            return [expr.value]
        if (isinstance(expr, ast.Subscript) and isinstance(expr.value, ast.Attribute)
                and expr.value.attr in tables):
            return list(tables[expr.value.attr].values())
        raise AssertionError(f"cannot tell which client method {ast.unparse(expr)} names")

    def applies(call: ast.Call) -> bool:
        """A server-side apply (`_content_type=APPLY_PATCH`): a PATCH that creates a missing
        object, so the API server also asks for `create`."""
        return any(k.arg == "_content_type" and eval(compile(ast.Expression(k.value), "api.py", "eval"),  # noqa: S307
                                                     scope) == "application/apply-patch+yaml"
                   for k in call.keywords)

    uses: list[tuple[type, str, list[ast.expr], bool]] = []
    for call in (n for n in ast.walk(cls) if isinstance(n, ast.Call)):
        for index, expr in enumerate([call.func, *call.args]):
            following = call.args if index == 0 else call.args[index:]
            if isinstance(expr, ast.Attribute) and (client := client_of(expr.value)):
                uses.append((clients[client], expr.attr, following, applies(call)))  # self.core.read_...
            elif (isinstance(expr, ast.Call) and isinstance(expr.func, ast.Name)
                  and expr.func.id == "getattr" and (client := client_of(expr.args[0]))):
                uses += [(clients[client], m, following, applies(call)) for m in method_names(expr.args[1])]
    rights = set()
    for client, method, args, apply in uses:
        http_method, template = _http_call(client, method)
        bound = inspect.signature(getattr(client, method)).bind_partial(None, *args).arguments
        values: dict[str, str] = {}
        for param in ("group", "plural"):
            if param in bound:
                values[param] = eval(compile(ast.Expression(bound[param]), "api.py", "eval"), scope)  # noqa: S307
        path = re.sub(r"\{(\w+)\}", lambda m: values.get(m.group(1), m.group(1)), template)
        attrs = request_attributes(http_method, path)
        rights.add((attrs.group, attrs.full_resource, attrs.verb))
        if apply:
            rights.add((attrs.group, attrs.full_resource, "create"))
    return rights


def _registered_handlers() -> kopf.OperatorRegistry:
    """The handlers `kopf run -m rayguard_operator.handlers` registers, in a fresh registry."""
    previous, registry = kopf.get_default_registry(), kopf.OperatorRegistry()
    kopf.set_default_registry(registry)
    try:
        loaded = [m for m in list(sys.modules) if m == HANDLERS or m.startswith(f"{HANDLERS}.")]
        for module in loaded:
            importlib.reload(sys.modules[module])
        if not loaded:
            importlib.import_module(HANDLERS)
    finally:
        kopf.set_default_registry(previous)
    return registry


def _posts_kopf_events() -> bool:
    """kopf posts Events only for kopf.event/info/warn/exception, or with posting.loggers on."""
    for path in OPERATOR_DIR.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "kopf"
                    and node.attr in {"event", "info", "warn", "exception"}):
                return True
            if isinstance(node, ast.Attribute) and node.attr == "loggers":
                return True
    return False


def kopf_rights(clusterwide: bool) -> set[Right]:
    """What kopf 1.45 does for the registered handlers (its own source, under kopf/):
    a watcher lists, then watches, each resource with handlers (_cogs/clients/watching.py);
    change handlers, timers and daemons keep a finalizer and progress annotations, written by
    patch (_cogs/clients/patching.py); it lists and watches CRDs always, and namespaces when it
    serves named namespaces rather than the cluster (_core/reactor/observation.py). With
    --standalone there is no peering, so nothing on kopf.dev."""
    registry = _registered_handlers()
    rights: set[Right] = set()
    groups = {"watching": registry._watching, "changing": registry._changing,  # kopf has no public
              "spawning": registry._spawning, "indexing": registry._indexing}  # view of these
    for kind, handlers in groups.items():
        for handler in handlers.get_all_handlers():
            selector = handler.selector
            resource = (selector.group or "", selector.plural or selector.any_name)
            rights |= {(*resource, "list"), (*resource, "watch")}
            if kind in {"changing", "spawning"}:
                rights.add((*resource, "patch"))
    rights |= {(*CRDS, "list"), (*CRDS, "watch")}
    if not clusterwide:
        rights |= {(*NAMESPACES, "list"), (*NAMESPACES, "watch")}
    if _posts_kopf_events():
        rights.add(("", "events", "create"))
    return rights


def admission_rights() -> set[Right]:
    """Children owned with blockOwnerDeletion: OwnerReferencesPermissionEnforcement then wants
    update on the owner's finalizers."""
    if names.owner_reference("demo", "uid").get("blockOwnerDeletion"):
        return {(names.GROUP, f"{names.PLURAL}/finalizers", "update")}
    return set()


def operator_rights(clusterwide: bool) -> set[Right]:
    return api_rights() | kopf_rights(clusterwide) | admission_rights()


def namespaced(rights: Iterable[Right]) -> set[Right]:
    return {r for r in rights if r[:2] not in CLUSTER_SCOPED}


def cluster_scoped(rights: Iterable[Right]) -> set[Right]:
    return {r for r in rights if r[:2] in CLUSTER_SCOPED}


def granted(rules: list[dict[str, Any]]) -> set[Right]:
    return {(group, resource, verb) for rule in rules for group in rule["apiGroups"]
            for resource in rule["resources"] for verb in rule["verbs"]}


def test_the_derivation_reads_every_kind_of_call_in_api_py() -> None:
    rights = api_rights()
    assert ("", "secrets", "get") in rights  # self.core.read_namespaced_secret, via self._get
    assert ("", "pods", "create") in rights  # getattr(self.core, self._CREATE[kind])
    assert ("", "events", "patch") in rights  # getattr(self.core, self._PATCH[kind])
    assert ("", "services", "create") in rights  # self.core.patch_namespaced_service, _content_type=APPLY_PATCH
    assert (names.GROUP, f"{names.PLURAL}/status", "patch") in rights  # custom objects, by their group
    assert (names.GROUP, names.PLURAL, "get") in rights
    assert (names.GROUP, names.PLURAL, "patch") in rights  # self.custom.patch_namespaced_custom_object
    rbac = "rbac.authorization.k8s.io"  # getattr(self.rbac, self._RBAC_CREATE[kind]), a third client
    assert {(rbac, r, v) for r in ("roles", "rolebindings") for v in ("get", "create", "delete")} <= rights
    assert ("", "configmaps", "patch") in rights and ("", "serviceaccounts", "get") in rights
    assert all(verb != "get" for group, resource, verb in rights if resource == "events")


def test_the_derivation_follows_the_code() -> None:
    source = inspect.getsource(importlib.import_module(API_MODULE))
    more = source + (
        "\n    def list_secrets(self, namespace):\n"
        "        return self._call('list', 'Secrets', self.core.list_namespaced_secret, namespace)\n"
        "\n    def watch_clusters(self):\n"
        "        return self.custom.list_cluster_custom_object(names.GROUP, names.VERSION, names.PLURAL,"
        " watch=True)\n")
    assert api_rights(more) - api_rights() == {("", "secrets", "list"), (names.GROUP, names.PLURAL, "list")}
    applied = source + (
        "\n    def apply_claim(self, obj):\n"
        "        return self._call('apply', 'PVC', self.core.patch_namespaced_persistent_volume_claim, 'n', 'ns', obj,"
        " _content_type=APPLY_PATCH)\n"
        "\n    def patch_endpoints(self, obj):\n"
        "        return self._call('patch', 'Endpoints', self.core.patch_namespaced_endpoints, 'n', 'ns', obj,"
        " _content_type=MERGE_PATCH)\n")
    assert api_rights(applied) - api_rights() == {("", "persistentvolumeclaims", "patch"),
                                                  ("", "persistentvolumeclaims", "create"),
                                                  ("", "endpoints", "patch")}  # a merge patch: no create


def test_what_kopf_needs_follows_the_handlers_and_the_scope() -> None:
    cluster, named = kopf_rights(clusterwide=True), kopf_rights(clusterwide=False)
    assert {("", "pods", "list"), ("", "pods", "watch")} <= cluster  # the pod-event handler
    assert ("", "pods", "patch") not in cluster  # an event handler keeps no state on the pod
    assert {(names.GROUP, names.PLURAL, v) for v in ("list", "watch", "patch")} <= cluster
    assert named - cluster == {(*NAMESPACES, "list"), (*NAMESPACES, "watch")}
    assert not any(group == "kopf.dev" for group, _, _ in named)


# --- text checks of the templates ----------------------------------------------------------

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


def test_no_kopf_peering_rights_because_it_runs_standalone() -> None:
    assert "kopf.dev" not in (TEMPLATES / "rbac.yaml").read_text(encoding="utf-8")
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


# --- rendered by helm ------------------------------------------------------------------------

MODES = {
    "cluster": ((), None),
    "cluster-two": (("--set", "watchNamespaces={a,b}"), None),
    "namespaced-default": (("--set", "namespaced=true"), {RELEASE_NAMESPACE}),
    "namespaced-two": (("--set", "namespaced=true", "--set", "watchNamespaces={a,b}"), {"a", "b"}),
}


@pytest.mark.parametrize("args", [(), ("--set", "namespaced=true"),
                                  ("--set", "namespaced=true", "--set", "watchNamespaces={a,b}")],
                         ids=["cluster", "namespaced", "namespaced-two"])
def test_helm_lint(args: tuple[str, ...]) -> None:
    assert "0 chart(s) failed" in helm_lint("--strict", *args)


@pytest.mark.parametrize("mode", MODES)
def test_rendered_chart_is_valid_kubernetes(mode: str) -> None:
    docs = helm_template(*MODES[mode][0])
    assert {d["kind"] for d in docs} >= {"ServiceAccount", "Deployment"}
    for doc in docs:
        kubernetes_validate.validate(doc, SCHEMA_VERSION, strict=True)


@pytest.mark.parametrize("mode", MODES)
def test_rendered_rbac_is_exactly_what_the_operator_uses(mode: str) -> None:
    args, role_namespaces = MODES[mode]
    docs = helm_template(*args)
    [deployment] = [d for d in docs if d["kind"] == "Deployment"]
    env = {e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert set(OPERATOR_ENV) <= set(env)
    watched = {n for n in env["RAYGUARD_OPERATOR_NAMESPACES"].split(",") if n}
    needed = operator_rights(clusterwide=not watched)
    roles = {(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]): granted(d["rules"])
             for d in docs if d["kind"] in ("Role", "ClusterRole")}
    if role_namespaces is None:  # cluster mode: one ClusterRole with all of it
        assert watched == ({"a", "b"} if mode == "cluster-two" else set())
        assert roles == {("ClusterRole", None, "rg-rayguard"): needed}
    else:  # a Role per watched namespace, and the read-only observer ClusterRole
        assert watched == role_namespaces
        expected = {("Role", ns, "rg-rayguard"): namespaced(needed) for ns in role_namespaces}
        expected[("ClusterRole", None, "rg-rayguard-observer")] = cluster_scoped(needed)
        assert roles == expected


def test_the_review_findings_stay_fixed() -> None:
    """Events get no `get` (the aggregator creates, and patches on 409); Secrets only get and
    create, never list or watch (that would read every Secret in the cluster); Services are
    never listed or watched (deleted only for a headless switch)."""
    for args in ((), ("--set", "namespaced=true")):
        for doc in helm_template(*args):
            if doc["kind"] in ("Role", "ClusterRole"):
                rights = granted(doc["rules"])
                assert {v for g, r, v in rights if (g, r) == ("", "events")} in ({"create", "patch"}, set())
                assert {v for g, r, v in rights if (g, r) == ("", "secrets")} in ({"get", "create"}, set())
                assert not any((r == "secrets" and v == "delete") or (r in ("services", "secrets") and v in
                                                                      ("list", "watch")) for _, r, v in rights)


def test_namespaced_mode_grants_nothing_outside_the_watched_namespaces() -> None:
    policy = Policy.from_documents(helm_template("--set", "namespaced=true", "--set", "watchNamespaces={a}"))
    user = service_account_user(RELEASE_NAMESPACE, "rg-rayguard")
    inside = request_attributes("GET", "/api/v1/namespaces/a/secrets/demo-secret")
    outside = request_attributes("GET", "/api/v1/namespaces/b/secrets/demo-secret")
    everywhere = request_attributes("GET", "/api/v1/pods", {"watch": "true"})
    crds = request_attributes("GET", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", {"watch": "1"})
    assert policy.allows(user, inside) and policy.allows(user, crds)
    assert not policy.allows(user, outside) and not policy.allows(user, everywhere)
    assert not policy.allows("system:serviceaccount:other:rg-rayguard", inside)

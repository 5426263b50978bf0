"""RBAC for the API emulator, as the API server decides it: who may do what, from the Roles,
ClusterRoles and bindings that `helm template` renders from the chart.

Every request the emulator serves is authenticated by its bearer token and authorized from
its method and path, as the API server's RequestInfo reads them: the verb (get, list, watch,
create, update, patch, delete, deletecollection), the API group, the resource and
subresource (`rayclusters/status`), the namespace and the name. A request that is not allowed
is answered 403 with the API server's own Status body and message. Discovery (`/api`,
`/apis/...`, `/version`: paths that name no resource) is allowed to every authenticated user,
as the built-in `system:discovery` role does. An admin token passes everything: that is the
test's own client, playing the user and the kubelet.

The grants of RBAC objects created through the API, the tokens of ServiceAccounts created
through it, and the escalation check on writes to RBAC objects come from the emulator on each
request (`review`'s keywords; testkit/kube/escalation.py).

Optionally, as the `OwnerReferencesPermissionEnforcement` admission plugin does, a create
whose ownerReferences set `blockOwnerDeletion` needs `update` on the owner's `finalizers`
subresource.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from typing import Any

ADMIN_TOKEN = 'rayguard-test-admin'  # noqa: S105: a test token for a local emulator
ADMIN_USER = 'kubernetes-admin'
WATCH_VALUES = {'true', '1'}
NAMESPACE_SUBRESOURCES = {'status', 'finalize'}


@dataclasses.dataclass(frozen=True)
class Attributes:
    """What RBAC sees of a request (the API server's authorizer.Attributes)."""
    verb: str
    path: str
    group: str = ''
    resource: str = ''  # '' for a path that names no resource (discovery)
    subresource: str = ''
    namespace: str = ''
    name: str = ''

    @property
    def is_resource_request(self) -> bool:
        return bool(self.resource)

    @property
    def full_resource(self) -> str:
        return f'{self.resource}/{self.subresource}' if self.subresource else self.resource


def request_attributes(method: str, path: str, params: Mapping[str, str] | None = None) -> Attributes:
    """The API server's RequestInfo for `method` on `path` (with its query `params`)."""
    params = params or {}
    parts = [p for p in path.split('/') if p]
    lower = method.lower()
    non_resource = Attributes(verb={'get': 'get', 'head': 'get', 'post': 'post', 'put': 'put',
                                    'patch': 'patch', 'delete': 'delete'}.get(lower, lower), path=path)
    if len(parts) >= 2 and parts[0] == 'api':
        group, rest = '', parts[2:]
    elif len(parts) >= 3 and parts[0] == 'apis':
        group, rest = parts[1], parts[3:]
    else:
        return non_resource
    watch_path = rest[:1] == ['watch']  # the old /watch/ prefix
    rest = rest[1:] if watch_path else rest
    if not rest:
        return non_resource  # /api/v1, /apis/group/version: discovery
    namespace = ''
    if rest[0] == 'namespaces' and len(rest) > 1:
        namespace = rest[1]
        if len(rest) > 2 and rest[2] not in NAMESPACE_SUBRESOURCES:
            rest = rest[2:]  # a namespaced resource; else the namespace object itself
    resource, name = rest[0], (rest[1] if len(rest) > 1 else '')
    subresource = rest[2] if len(rest) > 2 else ''
    if lower in {'get', 'head'}:
        verb = 'watch' if watch_path or params.get('watch', '').lower() in WATCH_VALUES else \
            'get' if name else 'list'
    elif lower == 'delete':
        verb = 'delete' if name else 'deletecollection'
    else:
        verb = {'post': 'create', 'put': 'update', 'patch': 'patch'}.get(lower, lower)
    return Attributes(verb, path, group, resource, subresource, namespace, name)


@dataclasses.dataclass(frozen=True)
class Rule:
    """One PolicyRule of a Role or ClusterRole."""
    api_groups: frozenset[str]
    resources: frozenset[str]
    verbs: frozenset[str]
    resource_names: frozenset[str] = frozenset()

    @classmethod
    def from_dict(cls, rule: Mapping[str, Any]) -> Rule:
        return cls(*(frozenset(rule.get(key) or ()) for key in
                     ('apiGroups', 'resources', 'verbs', 'resourceNames')))

    def allows(self, attrs: Attributes) -> bool:
        """As the API server's RuleAllows: verb, group, resource (with its subresource, or
        `*`, or `*/subresource`) and, when the rule lists any, the name."""
        if not (self.verbs & {'*', attrs.verb} and self.api_groups & {'*', attrs.group}):
            return False
        sub = f'*/{attrs.subresource}' if attrs.subresource else None
        if not self.resources & {'*', attrs.full_resource, sub}:
            return False
        return not self.resource_names or attrs.name in self.resource_names

    def without(self, group: str, resource: str, verb: str) -> Rule:
        if group in self.api_groups and resource in self.resources:
            return dataclasses.replace(self, verbs=self.verbs - {verb})
        return self


@dataclasses.dataclass(frozen=True)
class Grant:
    """Rules bound to a user: cluster-wide (namespace None, a ClusterRoleBinding) or in one
    namespace (a RoleBinding)."""
    user: str
    namespace: str | None
    rules: tuple[Rule, ...]
    role: str  # 'ClusterRole/name' or 'Role/namespace/name', for messages


def service_account_user(namespace: str, name: str) -> str:
    return f'system:serviceaccount:{namespace}:{name}'


def _subjects(binding: Mapping[str, Any]) -> list[str]:
    users = []
    for subject in binding.get('subjects') or []:
        if subject.get('kind') == 'ServiceAccount':
            users.append(service_account_user(subject.get('namespace') or
                                              binding['metadata'].get('namespace', ''), subject['name']))
        elif subject.get('kind') == 'User':
            users.append(subject['name'])
    return users


@dataclasses.dataclass(frozen=True)
class Policy:
    """Every grant made by a set of rendered documents."""
    grants: tuple[Grant, ...]

    @classmethod
    def from_documents(cls, docs: Iterable[Mapping[str, Any]]) -> Policy:
        docs = [d for d in docs if isinstance(d, Mapping)]
        cluster_roles = {d['metadata']['name']: d for d in docs if d.get('kind') == 'ClusterRole'}
        roles = {(d['metadata'].get('namespace'), d['metadata']['name']): d
                 for d in docs if d.get('kind') == 'Role'}
        grants = []
        for binding in docs:
            kind, ref = binding.get('kind'), binding.get('roleRef') or {}
            if kind not in {'ClusterRoleBinding', 'RoleBinding'}:
                continue
            namespace = binding['metadata'].get('namespace') if kind == 'RoleBinding' else None
            if ref.get('kind') == 'ClusterRole':
                role, label = cluster_roles.get(ref.get('name')), f"ClusterRole/{ref.get('name')}"
            else:
                role, label = roles.get((namespace, ref.get('name'))), f"Role/{namespace}/{ref.get('name')}"
            if role is None:  # the API server accepts a binding to a missing role: it grants nothing
                continue
            rules = tuple(Rule.from_dict(r) for r in role.get('rules') or [])
            grants += [Grant(user, namespace, rules, label) for user in _subjects(binding)]
        return cls(tuple(grants))

    def allows(self, user: str, attrs: Attributes) -> bool:
        return any(grant.user == user and (grant.namespace is None or grant.namespace == attrs.namespace)
                   and any(rule.allows(attrs) for rule in grant.rules) for grant in self.grants)

    def without(self, group: str, resource: str, verb: str) -> Policy:
        """The same grants less one verb on one resource, wherever it is granted."""
        return Policy(tuple(dataclasses.replace(g, rules=tuple(r.without(group, resource, verb) for r in g.rules))
                            for g in self.grants))


def _group_resource(group: str, resource: str) -> str:
    return f'{resource}.{group}' if group else resource


def forbidden_status(user: str, attrs: Attributes, reason: str | None = None) -> dict[str, Any]:
    """The API server's 403 body (apierrors.NewForbidden with the RBAC authorizer's message,
    or with an admission plugin's `reason`)."""
    if reason is None:
        if not attrs.is_resource_request:
            reason = f'User "{user}" cannot {attrs.verb} path "{attrs.path}"'
        elif attrs.namespace:
            reason = (f'User "{user}" cannot {attrs.verb} resource "{attrs.full_resource}" in API group '
                      f'"{attrs.group}" in the namespace "{attrs.namespace}"')
        else:
            reason = (f'User "{user}" cannot {attrs.verb} resource "{attrs.full_resource}" in API group '
                      f'"{attrs.group}" at the cluster scope')
    if not attrs.is_resource_request:
        message = f'forbidden: {reason}'
    elif attrs.name:
        message = f'{_group_resource(attrs.group, attrs.resource)} "{attrs.name}" is forbidden: {reason}'
    else:
        message = f'{_group_resource(attrs.group, attrs.resource)} is forbidden: {reason}'
    details = {k: v for k, v in (('name', attrs.name), ('group', attrs.group), ('kind', attrs.resource)) if v}
    return {'kind': 'Status', 'apiVersion': 'v1', 'metadata': {}, 'status': 'Failure', 'message': message,
            'reason': 'Forbidden', 'details': details, 'code': 403}


UNAUTHORIZED_STATUS = {'kind': 'Status', 'apiVersion': 'v1', 'metadata': {}, 'status': 'Failure',
                       'message': 'Unauthorized', 'reason': 'Unauthorized', 'code': 401}


@dataclasses.dataclass(frozen=True)
class Decision:
    """A refused request: the user (None when not authenticated), what it asked, the answer."""
    user: str | None
    attrs: Attributes
    status: dict[str, Any]

    @property
    def code(self) -> int:
        return int(self.status['code'])


# (apiVersion, kind) of an owner -> its plural, or None when the server does not serve it.
OwnerResolver = Callable[[str, str], 'str | None']
# (user, request, the policies in force) -> a 403 Status for an RBAC write that escalates, or None.
Escalation = Callable[[str, Attributes, 'tuple[Policy, ...]'], 'dict[str, Any] | None']


@dataclasses.dataclass
class Authorizer:
    """Bearer tokens to users, and the policy that says what each user may do.

    `owner_references_enforcement` adds the admission plugin's check on create (see the
    module docstring)."""
    policy: Policy
    users: Mapping[str, str]  # bearer token -> user name (ServiceAccounts made through the API: `accounts`)
    admin_tokens: frozenset[str] = frozenset({ADMIN_TOKEN})
    owner_references_enforcement: bool = True
    refused: list[Decision] = dataclasses.field(default_factory=list)
    # user -> number of requests served to it (allowed ones), to show who made them
    served: dict[str, int] = dataclasses.field(default_factory=dict)

    def review(self, method: str, path: str, params: Mapping[str, str], authorization: str | None,
               body: Any = None, owner_plural: OwnerResolver | None = None, *,
               live_policy: Policy | None = None, accounts: Mapping[str, str] | None = None,
               escalation: Escalation | None = None) -> Decision | None:
        """None when the request may go on; else the refusal, also kept in `refused`.

        `live_policy` holds the grants of RBAC objects created through the API (they count with
        the chart's), `accounts` the tokens of ServiceAccounts that exist, and `escalation` the
        API server's check of a write to an RBAC object (testkit/kube/escalation.py)."""
        attrs = request_attributes(method, path, params)
        token = (authorization or '').removeprefix('Bearer ').strip()
        if token in self.admin_tokens:
            self.served[ADMIN_USER] = self.served.get(ADMIN_USER, 0) + 1
            return None
        user = self.users.get(token) or (accounts or {}).get(token)
        if user is None:
            return self._refuse(Decision(None, attrs, dict(UNAUTHORIZED_STATUS)))
        policies = (self.policy,) + ((live_policy,) if live_policy is not None else ())
        if attrs.is_resource_request and not any(p.allows(user, attrs) for p in policies):
            return self._refuse(Decision(user, attrs, forbidden_status(user, attrs)))
        if (self.owner_references_enforcement and attrs.verb == 'create' and owner_plural is not None
                and isinstance(body, Mapping)):
            refusal = self._owner_references(user, attrs, body, owner_plural, policies)
            if refusal is not None:
                return self._refuse(refusal)
        if escalation is not None and (status := escalation(user, attrs, policies)) is not None:
            return self._refuse(Decision(user, attrs, status))
        self.served[user] = self.served.get(user, 0) + 1
        return None

    def _owner_references(self, user: str, attrs: Attributes, body: Mapping[str, Any],
                          owner_plural: OwnerResolver, policies: tuple[Policy, ...]) -> Decision | None:
        meta = body.get('metadata') if isinstance(body.get('metadata'), Mapping) else {}
        for ref in meta.get('ownerReferences') or []:
            if not ref.get('blockOwnerDeletion'):
                continue
            api_version = str(ref.get('apiVersion', ''))
            group = api_version.rpartition('/')[0]
            plural = owner_plural(api_version, str(ref.get('kind', '')))
            finalizers = Attributes('update', attrs.path, group, plural or '', 'finalizers',
                                    attrs.namespace, str(ref.get('name', '')))
            if plural is None:
                reason = (f'cannot set blockOwnerDeletion in this case because cannot find RESTMapping for '
                          f'APIVersion {api_version} Kind {ref.get("kind")}: no matches for kind '
                          f'"{ref.get("kind")}" in version "{api_version}"')
            elif not any(p.allows(user, finalizers) for p in policies):
                # The plugin's words, with the RBAC authorizer's empty reason and nil error.
                reason = ("cannot set blockOwnerDeletion if an ownerReference refers to a resource you "
                          "can't set finalizers on: , <nil>")
            else:
                continue
            named = dataclasses.replace(attrs, name=str(meta.get('name') or ''))
            return Decision(user, named, forbidden_status(user, named, reason))
        return None

    def _refuse(self, decision: Decision) -> Decision:
        self.refused.append(decision)
        return decision

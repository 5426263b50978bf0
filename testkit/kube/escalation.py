"""RBAC that changes at run time, as the API server keeps it: Roles, ClusterRoles and their
bindings created through the API grant what they say, ServiceAccounts created through the API
can be given bearer tokens, and nobody grants what they do not hold.

The escalation check is the API server's (pkg/registry/rbac): creating or updating a Role or
ClusterRole needs the requester to hold every permission it grants, in the Role's namespace
(or cluster-wide for a ClusterRole), unless it may `escalate` that role; creating or updating
a binding needs `bind` on the role it refers to, or else every permission of that role. A
refusal is 403 with the API server's words: `user "..." (groups=[...]) is attempting to grant
RBAC permissions not currently held:` and the missing permissions, one per line, compacted.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

from .rbac import Attributes, Policy, Rule, forbidden_status

RBAC_GROUP = 'rbac.authorization.k8s.io'
ROLE_RESOURCES = {'roles': 'Role', 'clusterroles': 'ClusterRole'}
BINDING_RESOURCES = {'rolebindings': 'RoleBinding', 'clusterrolebindings': 'ClusterRoleBinding'}
RBAC_RESOURCES = tuple(f'{RBAC_GROUP}/v1/{plural}' for plural in (*ROLE_RESOURCES, *BINDING_RESOURCES))
WRITE_VERBS = frozenset({'create', 'update', 'patch'})
SA_PREFIX = 'system:serviceaccount:'


@dataclasses.dataclass(frozen=True)
class LiveRbac:
    """What the store holds now: the grants of RBAC objects created through the API, the
    tokens of ServiceAccounts that exist, and the roles by (kind, namespace or None, name)."""
    policy: Policy
    accounts: Mapping[str, str]  # bearer token -> system:serviceaccount:<ns>:<name>
    roles: Mapping[tuple[str, str | None, str], Mapping[str, Any]]

    @classmethod
    def empty(cls) -> LiveRbac:
        return cls(Policy(()), {}, {})


def live_rbac(objects: Iterable[Mapping[str, Any]], tokens: Mapping[str, tuple[str, str]],
              accounts: Iterable[tuple[str, str]]) -> LiveRbac:
    """From the store's live RBAC objects, the tokens issued, and the ServiceAccounts alive."""
    docs = [o for o in objects if isinstance(o, Mapping)]
    alive = set(accounts)
    roles = {(d['kind'], d['metadata'].get('namespace') if d['kind'] == 'Role' else None, d['metadata']['name']): d
             for d in docs if d.get('kind') in ROLE_RESOURCES.values()}
    users = {token: f'{SA_PREFIX}{ns}:{name}' for token, (ns, name) in tokens.items() if (ns, name) in alive}
    return LiveRbac(Policy.from_documents(docs), users, roles)


def user_groups(user: str) -> list[str]:
    """The groups the API server puts a user in: a ServiceAccount's two, and everyone's."""
    if user.startswith(SA_PREFIX):
        namespace = user[len(SA_PREFIX):].split(':', 1)[0]
        return ['system:serviceaccounts', f'system:serviceaccounts:{namespace}', 'system:authenticated']
    return ['system:authenticated']


def _quoted(values: Iterable[str]) -> str:
    """Go's %q of a []string: ["a" "b"]."""
    return '[' + ' '.join(f'"{v}"' for v in values) + ']'


def _covered(owner: Iterable[Rule], group: str, resource: str, verb: str, name: str) -> bool:
    sub = resource.split('/', 1)[1] if '/' in resource else None
    for rule in owner:
        if not (rule.verbs & {'*', verb} and rule.api_groups & {'*', group}):
            continue
        if not rule.resources & {'*', resource, *([f'*/{sub}'] if sub else [])}:
            continue
        if rule.resource_names and (not name or name not in rule.resource_names):
            continue  # a named rule covers only those names, never "all"
        return True
    return False


def missing_permissions(owner: Iterable[Rule], wanted: Iterable[Rule]) -> list[str]:
    """What of `wanted` `owner` does not hold, compacted as the API server prints it: one line
    per group, resource and name, with its verbs."""
    owner = tuple(owner)
    missing: dict[tuple[str, str, str], list[str]] = {}
    for rule in wanted:
        for group in sorted(rule.api_groups):
            for resource in sorted(rule.resources):
                for name in sorted(rule.resource_names) or ['']:
                    for verb in sorted(rule.verbs):
                        verbs = missing.setdefault((group, resource, name), [])
                        if not _covered(owner, group, resource, verb, name) and verb not in verbs:
                            verbs.append(verb)
    lines = []
    for (group, resource, name), verbs in missing.items():
        if not verbs:
            continue
        parts = [f'APIGroups:{_quoted([group])}', f'Resources:{_quoted([resource])}']
        parts += [f'ResourceNames:{_quoted([name])}'] if name else []
        lines.append('{' + ', '.join(parts + [f'Verbs:{_quoted(verbs)}']) + '}')
    return sorted(lines)


def rules_of(user: str, namespace: str, policies: Iterable[Policy]) -> list[Rule]:
    """Every rule `user` holds in `namespace` ('' for the cluster scope: ClusterRoleBindings)."""
    return [rule for policy in policies for grant in policy.grants
            if grant.user == user and (grant.namespace is None or (namespace and grant.namespace == namespace))
            for rule in grant.rules]


def escalation_refusal(user: str, attrs: Attributes, obj: Mapping[str, Any] | None,
                       policies: tuple[Policy, ...], live: LiveRbac) -> dict[str, Any] | None:
    """The 403 Status for a write to an RBAC object that grants more than `user` holds, else None."""
    if attrs.group != RBAC_GROUP or attrs.verb not in WRITE_VERBS or attrs.subresource or not isinstance(obj, Mapping):
        return None
    meta = obj.get('metadata') if isinstance(obj.get('metadata'), Mapping) else {}
    named = dataclasses.replace(attrs, name=str(meta.get('name') or attrs.name))
    namespace = attrs.namespace if attrs.resource in ('roles', 'rolebindings') else ''

    def may(verb: str, resource: str, name: str) -> bool:
        check = Attributes(verb, attrs.path, RBAC_GROUP, resource, '', namespace, name)
        return any(policy.allows(user, check) for policy in policies)

    if attrs.resource in ROLE_RESOURCES:
        if may('escalate', attrs.resource, named.name):
            return None
        wanted = [Rule.from_dict(r) for r in obj.get('rules') or [] if isinstance(r, Mapping)]
    elif attrs.resource in BINDING_RESOURCES:
        ref = obj.get('roleRef') if isinstance(obj.get('roleRef'), Mapping) else {}
        kind, role_name = str(ref.get('kind', '')), str(ref.get('name', ''))
        plural = {v: k for k, v in ROLE_RESOURCES.items()}.get(kind, '')
        if plural and may('bind', plural, role_name):
            return None
        role = live.roles.get((kind, (namespace or None) if kind == 'Role' else None, role_name))
        if role is None:
            return forbidden_status(user, named, f'{plural or kind.lower()}.{RBAC_GROUP} "{role_name}" not found')
        wanted = [Rule.from_dict(r) for r in role.get('rules') or [] if isinstance(r, Mapping)]
    else:
        return None
    missing = missing_permissions(rules_of(user, namespace, policies), wanted)
    if not missing:
        return None
    reason = (f'user "{user}" (groups={_quoted(user_groups(user))}) is attempting to grant RBAC permissions not '
              'currently held:\n' + '\n'.join(missing))
    return forbidden_status(user, named, reason)

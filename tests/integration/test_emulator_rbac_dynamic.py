"""RBAC in the API emulator as a running API server keeps it: ServiceAccounts, Roles and
bindings created through the API authorize requests, resourceNames narrow a rule to its
objects, and nobody grants (or binds) permissions they do not hold."""
from __future__ import annotations

from typing import Any

import pytest

from tests.integration.cluster_objects import GROUP, NS, PLURAL, VERSION, create_cluster
from tests.integration.test_emulator_rbac import forbidden, http
from testkit.kube import KubeApi
from testkit.kube.rbac import Authorizer, Policy

RBAC = '/apis/rbac.authorization.k8s.io/v1'
SA = f'system:serviceaccount:{NS}:scaler'
GROUPS = f'(groups=["system:serviceaccounts" "system:serviceaccounts:{NS}" "system:authenticated"])'


def rbac_on(api: KubeApi) -> Authorizer:
    """Nothing granted but what is created through the API (no chart)."""
    authorizer = Authorizer(Policy(()), {})
    api.server.call(lambda: setattr(api.emulator, 'authorizer', authorizer))
    return authorizer


def admin_post(api: KubeApi, path: str, body: dict[str, Any]) -> dict[str, Any]:
    status, reply = http(api, 'POST', path, token=api.client.configuration.api_key['authorization'].split()[1],
                         body=body)
    assert status == 201, reply
    return reply


def role(name: str, *rules: dict[str, Any]) -> dict[str, Any]:
    return {'metadata': {'name': name}, 'rules': list(rules)}


def binding(name: str, role_name: str, account: str = 'scaler', kind: str = 'Role') -> dict[str, Any]:
    return {'metadata': {'name': name}, 'roleRef': {'apiGroup': 'rbac.authorization.k8s.io', 'kind': kind,
                                                    'name': role_name},
            'subjects': [{'kind': 'ServiceAccount', 'name': account, 'namespace': NS}]}


def rule(group: str, resources: list[str], verbs: list[str], names: list[str] | None = None) -> dict[str, Any]:
    return {'apiGroups': [group], 'resources': resources, 'verbs': verbs, **({'resourceNames': names} if names else {})}


def account(api: KubeApi, name: str = 'scaler') -> str:
    admin_post(api, f'/api/v1/namespaces/{NS}/serviceaccounts', {'metadata': {'name': name}})
    return api.token_for(NS, name)


def test_a_role_made_through_the_api_authorizes_its_service_account(kube_api: KubeApi) -> None:
    rbac_on(kube_api)
    for name in ('demo', 'other'):
        create_cluster(kube_api, name)
    with pytest.raises(LookupError, match='create it first'):
        kube_api.token_for(NS, 'scaler')
    token = account(kube_api)
    clusters = f'/apis/{GROUP}/{VERSION}/namespaces/{NS}/{PLURAL}'
    assert http(kube_api, 'GET', f'{clusters}/demo', token=token)[0] == 403  # bound to nothing yet
    admin_post(kube_api, f'{RBAC}/namespaces/{NS}/roles', role(
        'scaler', rule(GROUP, [PLURAL], ['get', 'patch'], ['demo']), rule('', ['pods'], ['get', 'list'])))
    admin_post(kube_api, f'{RBAC}/namespaces/{NS}/rolebindings', binding('scaler', 'scaler'))
    assert http(kube_api, 'GET', f'{clusters}/demo', token=token)[0] == 200
    assert http(kube_api, 'PATCH', f'{clusters}/demo', token=token, body={'metadata': {'labels': {'a': 'b'}}})[0] == 200
    assert http(kube_api, 'GET', f'/api/v1/namespaces/{NS}/pods', token=token)[0] == 200
    # resourceNames: only that RayCluster, and no list (a list names no object).
    cannot = f'is forbidden: User "{SA}" cannot'
    assert http(kube_api, 'GET', f'{clusters}/other', token=token) == (403, forbidden(
        f'rayclusters.rayguard.dev "other" {cannot} get resource "rayclusters" in API group "{GROUP}" in the '
        f'namespace "{NS}"', name='other', group=GROUP, kind=PLURAL))
    assert http(kube_api, 'PATCH', f'{clusters}/other', token=token, body={})[0] == 403
    assert http(kube_api, 'GET', clusters, token=token)[0] == 403
    assert http(kube_api, 'DELETE', f'{clusters}/demo', token=token)[0] == 403
    assert http(kube_api, 'GET', '/api/v1/namespaces/other-ns/pods', token=token)[0] == 403  # a Role acts in its namespace
    # The binding gone, the grant is gone; the account gone, its token is.
    assert http(kube_api, 'DELETE', f'{RBAC}/namespaces/{NS}/rolebindings/scaler', token=None)[0] == 401
    assert _admin(kube_api, 'DELETE', f'{RBAC}/namespaces/{NS}/rolebindings/scaler') == 200
    assert http(kube_api, 'GET', f'{clusters}/demo', token=token)[0] == 403
    assert _admin(kube_api, 'DELETE', f'/api/v1/namespaces/{NS}/serviceaccounts/scaler') == 200
    assert http(kube_api, 'GET', f'{clusters}/demo', token=token)[0] == 401


def _admin(api: KubeApi, method: str, path: str, body: Any = None) -> int:
    return http(api, method, path, token=api.client.configuration.api_key['authorization'].split()[1], body=body)[0]


def test_nobody_grants_what_they_do_not_hold(kube_api: KubeApi) -> None:
    rbac_on(kube_api)
    token = account(kube_api)
    roles = f'{RBAC}/namespaces/{NS}/roles'
    admin_post(kube_api, roles, role('maker', rule('rbac.authorization.k8s.io', ['roles'], ['create', 'patch']),
                                     rule('', ['pods'], ['get', 'list']),
                                     rule(GROUP, [PLURAL], ['get'], ['demo'])))
    admin_post(kube_api, f'{RBAC}/namespaces/{NS}/rolebindings', binding('maker', 'maker'))
    # What it holds, it may grant: all of it, or a part (one name of what it holds for all).
    assert http(kube_api, 'POST', roles, token=token, body=role('ok', rule('', ['pods'], ['list']),
                                                                rule(GROUP, [PLURAL], ['get'], ['demo'])))[0] == 201
    assert http(kube_api, 'POST', roles, token=token, body=role('one-pod', rule('', ['pods'], ['get'], ['p1'])))[0] == 201
    # More than it holds: refused with the API server's words, the missing rights compacted.
    status, reply = http(kube_api, 'POST', roles, token=token, body=role(
        'wider', rule('', ['pods'], ['get', 'delete', 'create']), rule(GROUP, [PLURAL], ['get', 'patch'], ['demo', 'x'])))
    assert status == 403 and reply == forbidden(
        f'roles.rbac.authorization.k8s.io "wider" is forbidden: user "{SA}" {GROUPS} is attempting to grant RBAC '
        'permissions not currently held:\n'
        '{APIGroups:[""], Resources:["pods"], Verbs:["create" "delete"]}\n'
        f'{{APIGroups:["{GROUP}"], Resources:["{PLURAL}"], ResourceNames:["demo"], Verbs:["patch"]}}\n'
        f'{{APIGroups:["{GROUP}"], Resources:["{PLURAL}"], ResourceNames:["x"], Verbs:["get" "patch"]}}',
        name='wider', group='rbac.authorization.k8s.io', kind='roles')
    # A patch that widens a Role is an update of it: the same check on what it would become.
    assert http(kube_api, 'PATCH', f'{roles}/ok', token=token, body={'rules': [rule('', ['secrets'], ['get'])]})[0] == 403
    assert http(kube_api, 'PATCH', f'{roles}/ok', token=token, body={'rules': [rule('', ['pods'], ['get'])]})[0] == 200
    # A ClusterRole needs the rights cluster-wide: a Role's do not count.
    admin_post(kube_api, f'{RBAC}/clusterroles', role('cr-maker', rule('rbac.authorization.k8s.io', ['clusterroles'],
                                                                      ['create'])))
    admin_post(kube_api, f'{RBAC}/clusterrolebindings', binding('cr-maker', 'cr-maker', kind='ClusterRole'))
    assert http(kube_api, 'POST', f'{RBAC}/clusterroles', token=token,
                body=role('pods-everywhere', rule('', ['pods'], ['get'])))[0] == 403
    # `escalate` on roles lifts the check.
    admin_post(kube_api, roles, role('escalator', rule('rbac.authorization.k8s.io', ['roles'], ['escalate'])))
    admin_post(kube_api, f'{RBAC}/namespaces/{NS}/rolebindings', binding('escalator', 'escalator'))
    assert http(kube_api, 'POST', roles, token=token, body=role('wider', rule('', ['pods'], ['delete'])))[0] == 201


def test_nobody_binds_a_role_with_more_than_they_hold(kube_api: KubeApi) -> None:
    rbac_on(kube_api)
    token = account(kube_api)
    account(kube_api, 'autoscaler')
    bindings = f'{RBAC}/namespaces/{NS}/rolebindings'
    admin_post(kube_api, f'{RBAC}/namespaces/{NS}/roles', role('binder', rule(
        'rbac.authorization.k8s.io', ['rolebindings'], ['create']), rule('', ['pods'], ['get', 'list'])))
    admin_post(kube_api, bindings, binding('binder', 'binder'))
    admin_post(kube_api, f'{RBAC}/namespaces/{NS}/roles', role('pods', rule('', ['pods'], ['list'])))
    admin_post(kube_api, f'{RBAC}/namespaces/{NS}/roles', role('secrets', rule('', ['secrets'], ['get'])))
    assert http(kube_api, 'POST', bindings, token=token, body=binding('a', 'pods', 'autoscaler'))[0] == 201
    status, reply = http(kube_api, 'POST', bindings, token=token, body=binding('b', 'secrets', 'autoscaler'))
    assert status == 403 and reply['message'] == (
        f'rolebindings.rbac.authorization.k8s.io "b" is forbidden: user "{SA}" {GROUPS} is attempting to grant '
        'RBAC permissions not currently held:\n{APIGroups:[""], Resources:["secrets"], Verbs:["get"]}')
    status, reply = http(kube_api, 'POST', bindings, token=token, body=binding('c', 'missing', 'autoscaler'))
    assert status == 403 and reply['message'].endswith('roles.rbac.authorization.k8s.io "missing" not found')
    # `bind` on that one role lifts the check, for that role only.
    admin_post(kube_api, f'{RBAC}/namespaces/{NS}/roles', role('bind-secrets', rule(
        'rbac.authorization.k8s.io', ['roles'], ['bind'], ['secrets'])))
    admin_post(kube_api, bindings, binding('bind-secrets', 'bind-secrets'))
    assert http(kube_api, 'POST', bindings, token=token, body=binding('b', 'secrets', 'autoscaler'))[0] == 201
    assert [(d.code, d.attrs.verb) for d in kube_api.emulator.refused()] == [(403, 'create'), (403, 'create')]

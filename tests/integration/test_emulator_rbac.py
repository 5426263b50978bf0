"""RBAC in the API emulator: the chart's rules, rendered by a real helm, enforced on every
request with the API server's own 403 Status body."""
from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import yaml
from kubernetes.client import ApiException

from tests.integration.cluster_objects import GROUP, NS, PLURAL, VERSION, create_cluster, raycluster, secret, secret_names
from tests.integration.conftest import OperatorHarness, operator_under_chart_rbac
from testkit.kube import CHART_MODES, KubeApi, api_client, run_kopf
from testkit.kube.rbac import ADMIN_TOKEN, Authorizer

REPO = Path(__file__).resolve().parents[2]

# --- RBAC: the chart's rules, rendered by helm, enforced per request -------------------------

SA_TOKEN = 'sa-token'
SA_USER = 'system:serviceaccount:rayguard:rg-rayguard'  # the chart's ServiceAccount, release rg


def rbac_on(api: KubeApi, mode: str = 'namespaced', **kwargs: Any) -> Authorizer:
    assert CHART_MODES[mode].user() == SA_USER
    authorizer = Authorizer(kwargs.pop('policy', None) or CHART_MODES[mode].policy(), {SA_TOKEN: SA_USER},
                            **kwargs)
    api.server.call(lambda: setattr(api.emulator, 'authorizer', authorizer))
    return authorizer


def http(api: KubeApi, method: str, path: str, token: str | None = SA_TOKEN,
         body: Any = None) -> tuple[int, Any]:
    headers = {'Content-Type': 'application/merge-patch+json' if method == 'PATCH' else 'application/json'}
    if token:
        headers['Authorization'] = f'Bearer {token}'
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(api.url + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b'null')
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b'null')


def forbidden(message: str, **details: str) -> dict[str, Any]:
    return {'kind': 'Status', 'apiVersion': 'v1', 'metadata': {}, 'status': 'Failure', 'message': message,
            'reason': 'Forbidden', 'details': details, 'code': 403}


def test_rbac_answers_403_with_the_api_servers_status(kube_api: KubeApi) -> None:
    authorizer = rbac_on(kube_api)
    cannot = f'is forbidden: User "{SA_USER}" cannot'
    assert http(kube_api, 'GET', f'/api/v1/namespaces/{NS}/secrets') == (403, forbidden(
        f'secrets {cannot} list resource "secrets" in API group "" in the namespace "{NS}"', kind='secrets'))
    assert http(kube_api, 'GET', f'/api/v1/namespaces/{NS}/events/e1') == (403, forbidden(
        f'events "e1" {cannot} get resource "events" in API group "" in the namespace "{NS}"',
        name='e1', kind='events'))
    assert http(kube_api, 'PUT', f'/apis/{GROUP}/{VERSION}/namespaces/{NS}/{PLURAL}/demo/status', body={}) == (
        403, forbidden(f'rayclusters.rayguard.dev "demo" {cannot} update resource "rayclusters/status" in API '
                       f'group "rayguard.dev" in the namespace "{NS}"', name='demo', group=GROUP, kind=PLURAL))
    assert http(kube_api, 'GET', '/api/v1/pods?watch=1') == (403, forbidden(
        f'pods {cannot} watch resource "pods" in API group "" at the cluster scope', kind='pods'))
    assert http(kube_api, 'GET', '/api/v1/namespaces/other/secrets/s')[0] == 403  # a Role acts in its namespace
    # Allowed: the request goes on to the store.
    assert http(kube_api, 'GET', f'/api/v1/namespaces/{NS}/secrets/s')[0] == 404
    assert http(kube_api, 'PATCH', f'/apis/{GROUP}/{VERSION}/namespaces/{NS}/{PLURAL}/demo/status', body={})[0] == 404
    assert http(kube_api, 'GET', f'/apis/{GROUP}/{VERSION}/namespaces/{NS}/{PLURAL}?watch=true&timeoutSeconds=1')[0] == 200
    assert http(kube_api, 'GET', '/apis/apiextensions.k8s.io/v1/customresourcedefinitions')[0] == 200
    assert http(kube_api, 'GET', '/apis')[0] == 200 and http(kube_api, 'GET', '/api/v1')[0] == 200  # discovery
    # Who is not authenticated gets 401; the test's admin token passes everything.
    assert http(kube_api, 'GET', '/api/v1/pods', token=None)[0] == 401
    assert http(kube_api, 'GET', '/api/v1/pods', token='unknown')[0] == 401
    assert http(kube_api, 'GET', f'/api/v1/namespaces/{NS}/secrets', token=ADMIN_TOKEN)[0] == 200
    assert kube_api.core.list_namespaced_secret(NS).items == []  # the fixture's client is the admin
    assert [(d.code, d.attrs.verb) for d in kube_api.emulator.refused()] == [
        (403, 'list'), (403, 'get'), (403, 'update'), (403, 'watch'), (403, 'get'), (401, 'list'), (401, 'list')]
    assert authorizer.served[SA_USER] == 6


def test_rbac_in_cluster_mode_reaches_every_namespace_and_no_more(kube_api: KubeApi) -> None:
    rbac_on(kube_api, 'cluster')
    assert http(kube_api, 'GET', '/api/v1/pods?watch=1&timeoutSeconds=1')[0] == 200
    assert http(kube_api, 'GET', '/api/v1/namespaces/other/secrets/s')[0] == 404
    assert http(kube_api, 'GET', '/api/v1/secrets')[0] == 403  # never listed: that reads every Secret
    assert http(kube_api, 'GET', '/api/v1/namespaces')[0] == 403  # kopf lists them only for named namespaces


def test_the_kubernetes_client_sees_the_403(kube_api: KubeApi) -> None:
    rbac_on(kube_api)
    client = kubernetes.client.CoreV1Api(api_client(kube_api.url, token=SA_TOKEN))
    with pytest.raises(ApiException) as excinfo:
        client.list_namespaced_secret(NS)
    assert (excinfo.value.status, excinfo.value.reason) == (403, 'Forbidden')
    assert json.loads(excinfo.value.body)['reason'] == 'Forbidden'


def test_block_owner_deletion_needs_update_on_the_owners_finalizers(kube_api: KubeApi) -> None:
    """As the OwnerReferencesPermissionEnforcement admission plugin: the chart grants it."""
    cluster = create_cluster(kube_api, 'demo')
    owned = secret('demo-secret', cluster)
    owned['metadata']['ownerReferences'][0]['blockOwnerDeletion'] = True
    path = f'/api/v1/namespaces/{NS}/secrets'
    policy = CHART_MODES['namespaced'].policy()
    rbac_on(kube_api, policy=policy.without(GROUP, f'{PLURAL}/finalizers', 'update'))
    assert http(kube_api, 'POST', path, body=owned) == (403, forbidden(
        'secrets "demo-secret" is forbidden: cannot set blockOwnerDeletion if an ownerReference refers to a '
        "resource you can't set finalizers on: , <nil>", name='demo-secret', kind='secrets'))
    rbac_on(kube_api, policy=policy)
    assert http(kube_api, 'POST', path, body=owned)[0] == 201


@pytest.mark.timeout(120)
def test_the_operator_reports_a_refused_write_and_carries_on(kube_api: KubeApi, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The chart less `create` on pods: the emulator answers 403 with the Status body, and the
    operator says so in the cluster's status and a Warning Event, and keeps running."""
    monkeypatch.setenv('RAYGUARD_OPERATOR_RESYNC_SECONDS', '0.5')
    mode = CHART_MODES['namespaced']
    args = operator_under_chart_rbac(kube_api, mode, tmp_path, monkeypatch,
                                     policy=mode.policy().without('', 'pods', 'create'))
    op = OperatorHarness(kube_api)
    body = yaml.safe_load((REPO / 'examples' / 'raycluster-minimal.yaml').read_text())
    body['metadata']['name'] = 'demo'
    with run_kopf(args, timeout=30) as runner:
        op.create(body)
        op.wait(lambda: op.condition('demo', 'Ready').get('reason') == 'ReconcileFailed', 'ReconcileFailed')
        message = op.condition('demo', 'Ready')['message']
        assert message.startswith(f'create Pod {NS}/demo-') and '(403 Forbidden)' in message, message
        assert message.endswith(f'pods is forbidden: User "{mode.user()}" cannot create resource "pods" in API '
                                f'group "" in the namespace "{NS}"'), message
        assert op.status('demo')['phase'] == 'Failed'
        op.wait(lambda: op.events(reason='ReconcileFailed', cluster='demo'), 'the Warning Event')
        assert op.secret_names() == {'demo-secret'} and op.service('demo-head')  # it got that far
        op.wait_reconciles('demo', passes=2)  # and it keeps trying
        assert op.pods('demo') == []
    assert runner.exception is None and runner.exit_code == 0, runner.output
    refused = {(d.code, d.attrs.verb, d.attrs.full_resource) for d in kube_api.emulator.refused()}
    assert refused == {(403, 'create', 'pods')}
    [status] = {json.dumps(d.status, sort_keys=True) for d in kube_api.emulator.refused()}
    assert json.loads(status) == forbidden(
        f'pods is forbidden: User "{mode.user()}" cannot create resource "pods" in API group "" in the '
        f'namespace "{NS}"', kind='pods')

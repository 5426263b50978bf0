"""Server-side apply and managedFields in the emulator (testkit/kube/apply.py), over HTTP with
the official client, as the Kubernetes docs ("Server-Side Apply") describe them."""
from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from tests.integration.cluster_objects import NS, status_of
from testkit.kube import KubeApi

APPLY = 'application/apply-patch+yaml'
MERGE = 'application/merge-patch+json'
PORT = {'name': 'gcs', 'port': 6379, 'targetPort': 6379, 'protocol': 'TCP'}


def config(annotations: dict[str, str] | None = None, ports: list[dict[str, Any]] | None = None,
           **spec: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {'name': 'svc', 'namespace': NS, 'labels': {'app': 'ray'}}
    if annotations is not None:
        meta['annotations'] = annotations
    return {'apiVersion': 'v1', 'kind': 'Service', 'metadata': meta,
            'spec': {'selector': {'app': 'ray'}, 'ports': ports or [PORT], **spec}}


def apply(api: KubeApi, body: dict[str, Any], manager: str = 'rayguard', force: bool = True) -> dict[str, Any]:
    response = api.core.patch_namespaced_service('svc', NS, body, field_manager=manager, force=force,
                                                 _content_type=APPLY, _preload_content=False)
    return json.loads(response.data)


def read(api: KubeApi) -> dict[str, Any]:
    return json.loads(api.core.read_namespaced_service('svc', NS, _preload_content=False).data)


def merge(api: KubeApi, patch: dict[str, Any], manager: str = 'other-controller') -> dict[str, Any]:
    response = api.core.patch_namespaced_service('svc', NS, patch, field_manager=manager, _content_type=MERGE,
                                                 _preload_content=False)
    return json.loads(response.data)


def managers(obj: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(e['manager'], e['operation']): e['fieldsV1'] for e in obj['metadata'].get('managedFields', [])}


def test_an_apply_creates_and_records_what_the_manager_owns(kube_api: KubeApi) -> None:
    created = apply(kube_api, config({'a': '1'}))
    assert created['spec']['clusterIP'].startswith('127.1.')  # the server's, owned by nobody
    [entry] = created['metadata']['managedFields']
    assert entry['manager'] == 'rayguard' and entry['operation'] == 'Apply' and entry['fieldsType'] == 'FieldsV1'
    assert entry['fieldsV1'] == {
        'f:metadata': {'f:annotations': {'f:a': {}}, 'f:labels': {'f:app': {}}},
        'f:spec': {'f:ports': {'k:{"port":6379,"protocol":"TCP"}': {
            '.': {}, 'f:name': {}, 'f:port': {}, 'f:protocol': {}, 'f:targetPort': {}}},
            'f:selector': {}}}  # an atomic map: owned whole
    again = apply(kube_api, config({'a': '1'}))
    assert again['metadata']['resourceVersion'] == created['metadata']['resourceVersion']  # a no-op


def test_another_managers_annotation_survives_and_ours_go_when_no_longer_applied(kube_api: KubeApi) -> None:
    apply(kube_api, config({'ours': '1', 'also-ours': '2'}))
    merge(kube_api, {'metadata': {'annotations': {'theirs': 'x'}, 'labels': {'their-label': 'y'}}})
    assert managers(read(kube_api))[('other-controller', 'Update')] == {
        'f:metadata': {'f:annotations': {'f:theirs': {}}, 'f:labels': {'f:their-label': {}}}}
    after = apply(kube_api, config({'ours': '1'}))
    assert after['metadata']['annotations'] == {'ours': '1', 'theirs': 'x'}
    assert after['metadata']['labels'] == {'app': 'ray', 'their-label': 'y'}
    assert set(managers(after)) == {('rayguard', 'Apply'), ('other-controller', 'Update')}
    gone = apply(kube_api, config())
    assert gone['metadata']['annotations'] == {'theirs': 'x'}


def test_a_field_another_manager_also_owns_is_not_removed(kube_api: KubeApi) -> None:
    apply(kube_api, config({'shared': '1'}))
    apply(kube_api, config({'shared': '1'}), manager='someone-else')  # same value: shared, no conflict
    assert apply(kube_api, config())['metadata']['annotations'] == {'shared': '1'}


def test_a_conflict_is_409_unless_forced_and_force_takes_the_field(kube_api: KubeApi) -> None:
    apply(kube_api, config(type='ClusterIP'))
    merge(kube_api, {'spec': {'type': 'NodePort'}}, manager='kubectl-edit')  # an Update takes it over
    owners = managers(read(kube_api))
    assert 'f:type' in owners[('kubectl-edit', 'Update')]['f:spec']
    assert 'f:type' not in owners[('rayguard', 'Apply')]['f:spec']
    assert status_of(apply, kube_api, config(type='ClusterIP'), force=False) == 409
    forced = apply(kube_api, config(type='ClusterIP'))
    assert forced['spec']['type'] == 'ClusterIP'
    assert ('kubectl-edit', 'Update') not in managers(forced)  # it owned nothing else: dropped
    assert 'f:type' in managers(forced)[('rayguard', 'Apply')]['f:spec']


def test_ports_merge_by_port_and_protocol(kube_api: KubeApi) -> None:
    serve = {'name': 'serve', 'port': 8000, 'targetPort': 8000, 'protocol': 'TCP'}
    apply(kube_api, config(ports=[PORT, serve]))
    theirs = {'name': 'theirs', 'port': 9000, 'targetPort': 9000, 'protocol': 'TCP'}
    # the client sends a dict body as strategic merge: ports merge by port
    kube_api.core.patch_namespaced_service('svc', NS, {'spec': {'ports': [theirs]}}, field_manager='other')
    assert [p['name'] for p in read(kube_api)['spec']['ports']] == ['gcs', 'serve', 'theirs']
    after = apply(kube_api, config(ports=[PORT]))
    assert [p['name'] for p in after['spec']['ports']] == ['gcs', 'theirs']


def test_cluster_ip_is_immutable(kube_api: KubeApi) -> None:
    created = apply(kube_api, config())
    assert status_of(apply, kube_api, config(clusterIP='None')) == 422
    assert status_of(merge, kube_api, {'spec': {'clusterIP': '127.1.9.9'}}) == 422
    kept = merge(kube_api, {'spec': {'clusterIP': None}})  # left out: the server keeps it
    assert kept['spec']['clusterIP'] == created['spec']['clusterIP']
    kube_api.core.delete_namespaced_service('svc', NS)
    assert apply(kube_api, config(clusterIP='None'))['spec']['clusterIP'] == 'None'  # recreated headless


def test_create_by_post_is_an_update_by_the_user_agents_manager(kube_api: KubeApi) -> None:
    created = json.loads(kube_api.core.create_namespaced_service(NS, config({'a': '1'}),
                                                                 _preload_content=False).data)
    [(manager, operation)] = managers(created)
    assert operation == 'Update' and manager and '/' not in manager
    # its fields are not ours to remove: an apply that leaves 'a' out keeps it
    apply(kube_api, config({'b': '2'}))
    assert read(kube_api)['metadata']['annotations'] == {'a': '1', 'b': '2'}


def test_apply_needs_a_field_manager_takes_yaml_and_only_services(kube_api: KubeApi) -> None:
    url = f'{kube_api.url}/api/v1/namespaces/{NS}/services/svc'

    def patch(body: bytes, query: str = '') -> tuple[int, dict[str, Any]]:
        request = urllib.request.Request(url + query, data=body, method='PATCH',
                                         headers={'Content-Type': APPLY})
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return response.status, json.load(response)
        except urllib.error.HTTPError as error:
            return error.code, json.load(error)

    yaml_body = b'apiVersion: v1\nkind: Service\nmetadata:\n  name: svc\nspec:\n  ports:\n  - port: 80\n'
    assert patch(yaml_body)[0] == 422  # no fieldManager
    code, created = patch(yaml_body, '?fieldManager=me')
    assert code == 201 and created['spec']['ports'] == [{'port': 80}]
    assert 'k:{"port":80,"protocol":"TCP"}' in managers(created)[('me', 'Apply')]['f:spec']['f:ports']
    pod = {'apiVersion': 'v1', 'kind': 'Pod', 'metadata': {'name': 'p'}, 'spec': {'containers': []}}
    assert status_of(kube_api.core.patch_namespaced_pod, 'p', NS, pod, field_manager='me',
                     _content_type=APPLY) == 415

"""The Kubernetes API emulator layer (testkit/kube), exercised over HTTP with the real clients."""
from __future__ import annotations

import datetime
import json
import textwrap
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import kmock
import kubernetes
import pytest

from tests.integration.cluster_objects import (GROUP, NS, PLURAL, VERSION, create_cluster, get_cluster, owner_ref,
                                               patch_cluster, patch_cluster_status, secret, secret_names,
                                               status_of)
from testkit.kube import KubeApi, run_kopf, wait_for


def test_crud_over_http(kube_api: KubeApi) -> None:
    pod = {'metadata': {'name': 'p1', 'labels': {'app': 'x'}},
           'spec': {'containers': [{'name': 'a', 'image': 'one'}, {'name': 'b', 'image': 'two'}]}}
    created = kube_api.core.create_namespaced_pod(NS, pod)
    assert created.metadata.name == 'p1' and created.metadata.namespace == NS

    assert kube_api.core.read_namespaced_pod('p1', NS).spec.containers[1].image == 'two'
    assert [p.metadata.name for p in kube_api.core.list_namespaced_pod(NS).items] == ['p1']
    assert [p.metadata.name for p in kube_api.core.list_pod_for_all_namespaces().items] == ['p1']

    # The client sends dicts to built-ins as strategic merge: containers merge by name.
    patched = kube_api.core.patch_namespaced_pod(
        'p1', NS, {'spec': {'containers': [{'name': 'b', 'image': 'three'}]}})
    assert [(c.name, c.image) for c in patched.spec.containers] == [('a', 'one'), ('b', 'three')]

    assert status_of(kube_api.core.create_namespaced_pod, NS, pod) == 409
    kube_api.core.delete_namespaced_pod('p1', NS)
    assert status_of(kube_api.core.read_namespaced_pod, 'p1', NS) == 404
    assert status_of(kube_api.core.patch_namespaced_pod, 'p1', NS, {'metadata': {}}) == 404
    assert status_of(kube_api.core.delete_namespaced_pod, 'p1', NS) == 404
    assert kube_api.core.list_namespaced_pod(NS).items == []


def test_server_fills_its_fields(kube_api: KubeApi) -> None:
    first = kube_api.core.create_namespaced_secret(NS, secret('s1'))
    second = kube_api.core.create_namespaced_secret(NS, secret('s2'))
    meta = first.metadata
    assert uuid.UUID(meta.uid).version == 4 and meta.uid != second.metadata.uid
    assert abs(meta.creation_timestamp - datetime.datetime.now(datetime.UTC)).total_seconds() < 60
    assert meta.generation == 1
    assert int(second.metadata.resource_version) > int(meta.resource_version)

    labelled = kube_api.core.patch_namespaced_secret('s1', NS, {'metadata': {'labels': {'a': 'b'}}})
    assert int(labelled.metadata.resource_version) > int(second.metadata.resource_version)
    assert labelled.metadata.uid == meta.uid
    assert labelled.metadata.creation_timestamp == meta.creation_timestamp

    # A write that changes nothing keeps the resourceVersion, as the API server does.
    same = kube_api.core.patch_namespaced_secret('s1', NS, {'metadata': {'labels': {'a': 'b'}}})
    assert same.metadata.resource_version == labelled.metadata.resource_version

    # Clients cannot overwrite what the server owns.
    kube_api.core.patch_namespaced_secret('s1', NS, {'metadata': {'uid': 'mine', 'generation': 9}})
    assert kube_api.core.read_namespaced_secret('s1', NS).metadata.uid == meta.uid


def test_generate_name_and_kind(kube_api: KubeApi) -> None:
    names = {kube_api.core.create_namespaced_secret(NS, {'metadata': {'generateName': 'ev-'}}
                                                    ).metadata.name for _ in range(5)}
    assert len(names) == 5 and all(n.startswith('ev-') and len(n) == 8 for n in names)
    raw = kube_api.client.sanitize_for_serialization(kube_api.core.read_namespaced_secret(
        sorted(names)[0], NS))
    assert (raw['apiVersion'], raw['kind']) == ('v1', 'Secret')


def test_generation_counts_spec_changes_only(kube_api: KubeApi) -> None:
    assert create_cluster(kube_api, 'demo')['metadata']['generation'] == 1

    after_spec = patch_cluster(kube_api, 'demo', {'spec': {'image': 'rayguard/node:0.2.0'}})
    assert after_spec['metadata']['generation'] == 2

    after_meta = patch_cluster(kube_api, 'demo', {'metadata': {'labels': {'team': 'ml'}}})
    assert after_meta['metadata']['generation'] == 2
    versions = [int(o['metadata']['resourceVersion']) for o in (after_spec, after_meta)]
    assert versions[1] > versions[0]

    after_status = patch_cluster_status(kube_api, 'demo', {'status': {'phase': 'Pending'}})
    assert after_status['metadata']['generation'] == 2
    assert after_status['status'] == {'phase': 'Pending'}


def test_status_subresource(kube_api: KubeApi) -> None:
    created = create_cluster(kube_api, 'demo', status={'phase': 'Forged'})
    assert 'status' not in created  # status is ignored on create

    # The main resource ignores .status, but applies the rest of the same patch.
    patched = patch_cluster(kube_api, 'demo', {'spec': {'image': 'x'}, 'status': {'phase': 'No'}})
    assert patched['spec']['image'] == 'x' and 'status' not in patched

    # /status writes only .status, whatever else the patch carries.
    patched = patch_cluster_status(kube_api, 'demo', {'spec': {'image': 'y'},
                                                      'metadata': {'labels': {'a': 'b'}},
                                                      'status': {'phase': 'Ready', 'n': 1}})
    assert patched['spec']['image'] == 'x' and 'labels' not in patched['metadata']
    assert get_cluster(kube_api, 'demo')['status'] == {'phase': 'Ready', 'n': 1}

    # PUT on /status replaces the status; GET on /status reads the whole object.
    current = get_cluster(kube_api, 'demo')
    replaced = kube_api.custom.replace_namespaced_custom_object_status(
        GROUP, VERSION, NS, PLURAL, 'demo', dict(current, status={'phase': 'Done'}))
    assert replaced['status'] == {'phase': 'Done'}
    fetched = kube_api.custom.get_namespaced_custom_object_status(GROUP, VERSION, NS, PLURAL,
                                                                  'demo')
    assert fetched['status'] == {'phase': 'Done'} and fetched['spec']['image'] == 'x'

    # Built-ins with a status subresource behave the same: pods start Pending.
    pod = kube_api.core.create_namespaced_pod(
        NS, {'metadata': {'name': 'p'}, 'spec': {'containers': [{'name': 'c', 'image': 'i'}]},
             'status': {'phase': 'Running'}})
    assert pod.status.phase == 'Pending'
    kube_api.core.patch_namespaced_pod('p', NS, {'status': {'phase': 'Running'}})
    assert kube_api.core.read_namespaced_pod('p', NS).status.phase == 'Pending'
    kube_api.core.patch_namespaced_pod_status('p', NS, {'status': {'phase': 'Running'}})
    assert kube_api.core.read_namespaced_pod('p', NS).status.phase == 'Running'


def test_patch_content_types(kube_api: KubeApi) -> None:
    create_cluster(kube_api, 'demo', metadata={'name': 'demo', 'labels': {'a': '1', 'b': '2'}})

    # merge-patch: null deletes a key.
    merged = patch_cluster(kube_api, 'demo', {'metadata': {'labels': {'a': None}}})
    assert merged['metadata']['labels'] == {'b': '2'}

    # JSON patch with a resourceVersion test, as kopf sends for finalizers.
    version = merged['metadata']['resourceVersion']
    ops = [{'op': 'test', 'path': '/metadata/resourceVersion', 'value': version},
           {'op': 'add', 'path': '/metadata/finalizers', 'value': ['rayguard.dev/redis']}]
    patched = patch_cluster(kube_api, 'demo', ops, _content_type='application/json-patch+json')
    assert patched['metadata']['finalizers'] == ['rayguard.dev/redis']
    # ...and a stale one is refused with 422, which kopf takes as "retry later".
    assert status_of(patch_cluster, kube_api, 'demo', ops,
                     _content_type='application/json-patch+json') == 422

    # Custom resources refuse strategic merge, as the API server does.
    assert status_of(patch_cluster, kube_api, 'demo', {'spec': {}},
                     _content_type='application/strategic-merge-patch+json') == 415

    # A resourceVersion in the body is a precondition.
    stale = {'metadata': {'resourceVersion': version, 'labels': {'c': '3'}}}
    assert status_of(patch_cluster, kube_api, 'demo', stale) == 409


def test_garbage_collection_follows_owner_references(kube_api: KubeApi) -> None:
    cluster = create_cluster(kube_api, 'demo')
    other = create_cluster(kube_api, 'other')
    pod = kube_api.core.create_namespaced_pod(NS, {
        'metadata': {'name': 'demo-head', 'ownerReferences': [owner_ref(cluster)]},
        'spec': {'containers': [{'name': 'c', 'image': 'i'}]}})
    kube_api.core.create_namespaced_secret(NS, secret('owned', cluster))
    kube_api.core.create_namespaced_secret(
        NS, secret('grandchild', kube_api.client.sanitize_for_serialization(pod)))
    kube_api.core.create_namespaced_secret(NS, secret('shared', cluster, other))
    kube_api.core.create_namespaced_secret(NS, secret('unrelated', other))

    kube_api.custom.delete_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, 'demo')

    assert kube_api.core.list_namespaced_pod(NS).items == []
    assert secret_names(kube_api) == ['shared', 'unrelated']  # 'shared' still has an owner


def test_finalizers_hold_deletion_and_collection(kube_api: KubeApi) -> None:
    cluster = create_cluster(kube_api, 'demo',
                             metadata={'name': 'demo', 'finalizers': ['rayguard.dev/redis']})
    kube_api.core.create_namespaced_secret(NS, secret('owned', cluster))

    kube_api.custom.delete_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, 'demo')
    marked = get_cluster(kube_api, 'demo')
    assert marked['metadata']['deletionTimestamp']
    assert marked['metadata']['generation'] == 2
    assert secret_names(kube_api) == ['owned']

    patch_cluster(kube_api, 'demo', {'metadata': {'finalizers': None}})
    assert status_of(get_cluster, kube_api, 'demo') == 404
    assert secret_names(kube_api) == []


def test_label_and_field_selectors(kube_api: KubeApi) -> None:
    for name, labels in [('s1', {'app': 'ray', 'tier': 'head'}),
                         ('s2', {'app': 'ray', 'tier': 'worker'}),
                         ('s3', {'app': 'web'}), ('s4', {})]:
        kube_api.core.create_namespaced_secret(NS, secret(name, labels=labels))

    assert secret_names(kube_api, label_selector='app=ray') == ['s1', 's2']
    assert secret_names(kube_api, label_selector='app=ray,tier=head') == ['s1']
    assert secret_names(kube_api, label_selector='app!=ray') == ['s3', 's4']
    assert secret_names(kube_api, label_selector='tier in (head,worker)') == ['s1', 's2']
    assert secret_names(kube_api, label_selector='tier notin (head)') == ['s2', 's3', 's4']
    assert secret_names(kube_api, label_selector='app') == ['s1', 's2', 's3']
    assert secret_names(kube_api, label_selector='!app') == ['s4']
    assert secret_names(kube_api, field_selector='metadata.name=s3') == ['s3']
    assert secret_names(kube_api, field_selector='metadata.name!=s3',
                        label_selector='app') == ['s1', 's2']
    assert status_of(kube_api.core.list_namespaced_secret, NS, label_selector='a in b') == 400


def test_write_counting(kube_api: KubeApi) -> None:
    emulator = kube_api.emulator
    create_cluster(kube_api, 'setup')
    since = emulator.mark()

    create_cluster(kube_api, 'demo')
    patch_cluster(kube_api, 'demo', {'spec': {'image': 'x'}})
    patch_cluster_status(kube_api, 'demo', {'status': {'phase': 'Ready'}})
    kube_api.core.create_namespaced_secret(NS, secret('s'))
    status_of(kube_api.core.create_namespaced_secret, NS, secret('s'))  # refused, still a request
    get_cluster(kube_api, 'demo')
    kube_api.core.list_namespaced_secret(NS)
    until = emulator.mark()
    kube_api.core.delete_namespaced_secret('s', NS)

    assert emulator.count_writes(since=since, until=until) == 5
    assert emulator.count_writes(since=since, until=until, resource='rayclusters') == 3
    assert emulator.count_writes(since=since, until=until, resource='rayclusters/status') == 1
    assert emulator.count_writes(since=since, until=until, method='post') == 3
    assert emulator.writes_by_resource(since=since) == {
        'rayclusters': 2, 'rayclusters/status': 1, 'secrets': 3}
    assert emulator.count_writes(since=until) == 1
    method, path, _ = emulator.writes[-1]
    assert (method, path) == ('DELETE', f'/api/v1/namespaces/{NS}/secrets/s')


def test_events_are_stored_and_listed(kube_api: KubeApi) -> None:
    cluster = create_cluster(kube_api, 'demo')
    involved = {**owner_ref(cluster), 'namespace': NS}
    kube_api.core.create_namespaced_event(NS, {
        'metadata': {'generateName': 'demo-'}, 'involvedObject': involved, 'reason': 'OOMKilled',
        'message': 'container ray-node was OOM-killed', 'type': 'Warning', 'count': 1})
    kube_api.core.create_namespaced_event(NS, {
        'metadata': {'name': 'unrelated'}, 'involvedObject': {'kind': 'Pod', 'name': 'x'},
        'reason': 'Scheduled', 'type': 'Normal'})
    kube_api.events.create_namespaced_event(NS, {
        'metadata': {'name': 'demo.new'}, 'regarding': involved, 'reason': 'KernelOOMKill',
        'action': 'Kill', 'type': 'Warning', 'eventTime': '2026-01-01T00:00:00.000000Z',
        'reportingController': 'rayguard.dev/operator', 'reportingInstance': 'op-1'})

    core = kube_api.core.list_namespaced_event(
        NS, field_selector=f'involvedObject.uid={cluster["metadata"]["uid"]},reason=OOMKilled')
    assert [(e.reason, e.count) for e in core.items] == [('OOMKilled', 1)]
    assert core.items[0].metadata.name.startswith('demo-')
    new = kube_api.events.list_namespaced_event(NS).items
    assert [(e.reason, e.regarding.name) for e in new] == [('KernelOOMKill', 'demo')]


def test_discovery_serves_crd_namespaces_and_status(kube_api: KubeApi) -> None:
    def get(path: str) -> dict[str, Any]:
        with urllib.request.urlopen(kube_api.url + path, timeout=5) as response:
            return json.load(response)

    crd = get('/apis/apiextensions.k8s.io/v1/customresourcedefinitions/rayclusters.rayguard.dev')
    assert crd['spec']['names']['kind'] == 'RayCluster' and crd['metadata']['uid']
    names = {r['name'] for r in get('/apis/rayguard.dev/v1')['resources']}
    assert names == {'rayclusters', 'rayclusters/status'}
    core = {r['name']: r for r in get('/api/v1')['resources']}
    assert {'pods', 'pods/status', 'services', 'secrets', 'events', 'namespaces'} <= set(core)
    assert core['namespaces']['namespaced'] is False
    assert [n.metadata.name for n in kube_api.core.list_namespace().items] == ['default']
    assert kube_api.core.read_namespace('default').metadata.uid
    with pytest.raises(urllib.error.HTTPError) as excinfo:
        get('/apis/example.com/v1/namespaces/default/widgets/x')
    excinfo.value.close()
    assert excinfo.value.code == 404


def test_watch_filters_and_times_out(kube_api: KubeApi) -> None:
    kube_api.core.create_namespaced_secret(NS, secret('old', labels={'app': 'ray'}))
    version = kube_api.core.list_namespaced_secret(NS).metadata.resource_version
    kube_api.core.create_namespaced_secret(NS, secret('new', labels={'app': 'ray'}))
    kube_api.core.create_namespaced_secret(NS, secret('web', labels={'app': 'web'}))

    started = time.monotonic()
    events = list(kubernetes.watch.Watch().stream(
        kube_api.core.list_namespaced_secret, NS, label_selector='app=ray',
        resource_version=version, timeout_seconds=1))
    assert [(e['type'], e['object'].metadata.name) for e in events] == [('ADDED', 'new')]
    assert time.monotonic() - started < 5



def test_watch_sees_a_write_made_while_it_sends_what_exists(kube_api: KubeApi) -> None:
    """A watch sends the objects there are, then every change after them, with nothing lost
    in between: a Secret created once the client has the first object, while the server is
    still sending the other 2 MB of them, arrives too. (kmock's own stream lost it: it found
    its place in the event bus only after sending the snapshot.)"""
    padding = 'x' * 8192
    for i in range(250):
        kube_api.core.create_namespaced_secret(NS, {'metadata': {'name': f'bulk-{i:03d}'},
                                                    'stringData': {'k': padding}})
    url = f'{kube_api.url}/api/v1/namespaces/{NS}/secrets?watch=true&timeoutSeconds=3'
    seen: list[tuple[str, str]] = []
    with urllib.request.urlopen(url, timeout=30) as stream:
        first = json.loads(stream.readline())
        seen.append((first['type'], first['object']['metadata']['name']))
        kube_api.core.create_namespaced_secret(NS, secret('late'))
        for line in stream:
            event = json.loads(line)
            seen.append((event['type'], event['object']['metadata']['name']))
    assert seen.count(('ADDED', 'late')) == 1, seen[-3:]
    assert len(seen) == 251, len(seen)

def test_kmock_reactions_still_apply(kube_api: KubeApi) -> None:
    emulator = kube_api.emulator
    kube_api.server.call(
        lambda: emulator[kmock.action.LIST, kmock.resource('v1/secrets')] << 503)
    assert status_of(kube_api.core.list_namespaced_secret, NS) == 503


OPERATOR = '''
    import os

    import kopf
    import kubernetes


    @kopf.on.create('rayguard.dev', 'v1', 'rayclusters')
    def created(body, name, namespace, patch, **_):
        secret = {'metadata': {'name': f'{name}-auth'}, 'stringData': {'token': 't'}}
        kopf.adopt(secret, owner=body)
        # $KUBECONFIG explicitly: the client reads the variable only once, at import.
        with kubernetes.config.new_client_from_config(os.environ['KUBECONFIG']) as client:
            kubernetes.client.CoreV1Api(client).create_namespaced_secret(namespace, secret)
        kopf.info(body, reason='SecretCreated', message=f'created {name}-auth')
        patch.status['phase'] = 'Ready'
'''


@pytest.mark.timeout(90)
def test_kopf_runs_a_handler_against_the_emulator(kube_api: KubeApi, tmp_path: Path) -> None:
    operator = tmp_path / 'tiny_operator.py'
    operator.write_text(textwrap.dedent(OPERATOR))
    args = ['run', '--standalone', f'--namespace={NS}', '--verbose', str(operator)]
    with run_kopf(args, timeout=30) as runner:
        uid = create_cluster(kube_api, 'demo')['metadata']['uid']
        wait_for(lambda: get_cluster(kube_api, 'demo').get('status', {}).get('phase') == 'Ready',
                 timeout=30, what='kopf to patch status.phase')
        wait_for(lambda: kube_api.core.list_namespaced_event(NS).items, timeout=10,
                 what='kopf to post the event')

        owned = kube_api.core.read_namespaced_secret('demo-auth', NS)
        assert [ref.uid for ref in owned.metadata.owner_references] == [uid]
        [event] = kube_api.core.list_namespaced_event(NS).items
        assert (event.reason, event.involved_object.uid) == ('SecretCreated', uid)
        status_writes = [w for w in kube_api.emulator.writes if w.resource == 'rayclusters/status']
        assert [w.method for w in status_writes] == ['PATCH']  # through the subresource

        kube_api.custom.delete_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, 'demo')
        wait_for(lambda: not secret_names(kube_api), timeout=10, what='the secret to be collected')

    assert runner.exception is None and runner.exit_code == 0
    assert "Handler 'created' succeeded" in runner.output


@pytest.mark.timeout(90)
def test_run_kopf_reloads_operator_modules(kube_api: KubeApi, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """kopf imports `-m` modules once per process; each run must still get their handlers."""
    module = f'tiny_operator_{uuid.uuid4().hex}'
    (tmp_path / f'{module}.py').write_text(textwrap.dedent(OPERATOR))
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ('first', 'second'):
        with run_kopf(['run', '--standalone', f'--namespace={NS}', '-m', module], timeout=30):
            create_cluster(kube_api, name)
            wait_for(lambda: get_cluster(kube_api, name).get('status', {}).get('phase') == 'Ready',
                     timeout=30, what=f'kopf to handle {name}')

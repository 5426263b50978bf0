"""GCS fault tolerance, operator side, against the emulator under the chart's RBAC and a real
redis-server as the external Redis: the pods get the password by secretKeyRef only, and deleting
the RayCluster removes exactly its namespace's keys before the finalizer goes; an unreachable
Redis holds the deletion with a Warning until the skip annotation lets it go."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from rayguard_node.contract.gcs import key_prefix

from .redis_fixtures import free_port, make_redis_server  # noqa: F401
from .test_operator_lifecycle import minimal

SKIP = 'rayguard.dev/skip-external-redis-cleanup'


def ft_cluster(name: str, address: str) -> dict[str, Any]:
    body = minimal(workers=1)
    body['metadata']['name'] = name
    body['spec']['gcsFaultTolerance'] = {'redisAddress': address, 'externalStorageNamespace': f'ns-{name}',
                                         'passwordSecret': {'name': f'{name}-redis', 'key': 'password'}}
    return body


def password_secret(operator: Any, name: str, password: str) -> None:
    operator._write(operator.api.core.create_namespaced_secret, operator.ns,
                    {'metadata': {'name': f'{name}-redis'},
                     'data': {'password': base64.b64encode(password.encode()).decode()}})


def gone(operator: Any, name: str) -> bool:
    return name not in {c['metadata']['name'] for c in operator._raw(
        operator.api.custom.list_namespaced_custom_object, 'rayguard.dev', 'v1', operator.ns,
        'rayclusters')['items']}


def test_pods_get_the_password_by_reference_and_deletion_removes_only_this_namespace(
        operator: Any, make_redis_server: Any) -> None:  # noqa: F811
    server = make_redis_server()
    password_secret(operator, 'ft', server.password)
    operator.create(ft_cluster('ft', f'127.0.0.1:{server.port}'))
    operator.wait(lambda: len(operator.pods('ft')) == 2, 'the pods')
    for pod in operator.pods('ft'):
        env = pod['spec']['containers'][0]['env']
        assert server.password not in repr(pod)
        refs = [(e['valueFrom']['secretKeyRef']['name'], e['valueFrom']['secretKeyRef']['key'])
                for e in env if 'secretKeyRef' in (e.get('valueFrom') or {})]
        assert ('ft-redis', 'password') in refs, env
    client = server.client()
    mine, other = key_prefix('ns-ft'), key_prefix('ns-other')
    client.set(f'{mine}table', 'x')
    client.xadd(f'{mine}rayguard:reports', {'report': '{}'})
    client.set(f'{other}table', 'y')
    client.set('unrelated', 'z')
    operator.delete_cluster('ft')
    operator.wait(lambda: gone(operator, 'ft'), 'the RayCluster to go')
    assert sorted(k.decode() for k in client.keys('*')) == sorted([f'{other}table', 'unrelated'])


@pytest.mark.parametrize('chart_mode', ['cluster'], indirect=True)  # the retry waits 30 s: one mode is enough
def test_an_unreachable_redis_holds_the_deletion_with_a_warning_until_the_skip_annotation(
        operator: Any) -> None:
    password_secret(operator, 'lost', 'whatever')
    operator.create(ft_cluster('lost', f'127.0.0.1:{free_port()}'))
    operator.wait(lambda: len(operator.pods('lost')) == 2, 'the pods')
    operator.delete_cluster('lost')
    operator.wait(lambda: operator.events('ExternalRedisCleanupFailed', cluster='lost'), 'the Warning')
    [event] = operator.events('ExternalRedisCleanupFailed', cluster='lost')
    assert event['type'] == 'Warning' and SKIP in event['message'] and 'whatever' not in event['message']
    assert not gone(operator, 'lost')
    operator._write(operator.api.custom.patch_namespaced_custom_object, 'rayguard.dev', 'v1', operator.ns,
                    'rayclusters', 'lost', {'metadata': {'annotations': {SKIP: 'true'}}},
                    _content_type='application/merge-patch+json')
    operator.wait(lambda: gone(operator, 'lost'), 'the RayCluster to go once cleanup is skipped', timeout=90)

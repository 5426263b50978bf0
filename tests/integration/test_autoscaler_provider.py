"""rayguard's node provider against the API emulator, with RBAC as a real API server keeps it:
its requests carry the autoscaler ServiceAccount's token and are authorized by the per-cluster
Role alone (get+patch on that one RayCluster, get+list on pods). It patches replicas and
workersToDelete with the reasons, keeps every other field, and retries a 409."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from ray.autoscaler.tags import TAG_RAY_USER_NODE_TYPE

from rayguard_node.autoscaler.kube_target import KubeTarget, api_client
from rayguard_node.autoscaler.provider import RayguardNodeProvider
from rayguard_node.autoscaler.target import TargetUnavailable
from rayguard_node.contract import autoscaler as contract
from tests.integration.autoscaler_setup import MERGE, autoscaled_cluster, grant_autoscaler, make_pod, provider_config
from tests.integration.cluster_objects import GROUP, NS, PLURAL, VERSION, get_cluster, patch_cluster
from tests.unit.node.autoscaler.fake_target import update
from testkit.kube import KubeApi
from testkit.kube.rbac import Authorizer, Policy

SA = f'system:serviceaccount:{NS}:{contract.autoscaler_name("demo")}'


@pytest.fixture
def scaler(kube_api: KubeApi, tmp_path: Path) -> tuple[KubeApi, RayguardNodeProvider]:
    authorizer = Authorizer(Policy(()), {})  # nothing granted but what is made through the API
    kube_api.server.call(lambda: setattr(kube_api.emulator, 'authorizer', authorizer))
    autoscaled_cluster(kube_api, 'demo', {'cpu': (0, 0, 3), 'gpu': (1, 1, 2)})
    autoscaled_cluster(kube_api, 'other', {'cpu': (0, 0, 3)})
    make_pod(kube_api, 'demo', 'demo-head', None, ip='10.0.0.2')
    make_pod(kube_api, 'demo', 'demo-gpu-a', 'gpu', ip='10.0.0.3')
    make_pod(kube_api, 'other', 'other-head', None)
    token = grant_autoscaler(kube_api, 'demo')
    return kube_api, RayguardNodeProvider(provider_config(kube_api, token, tmp_path), 'demo')


def groups(api: KubeApi, name: str = 'demo') -> dict[str, dict[str, Any]]:
    return {g['name']: g for g in get_cluster(api, name)['spec']['workerGroups']}


def reasons(api: KubeApi) -> dict[str, str]:
    return json.loads(get_cluster(api, 'demo')['metadata']['annotations'][contract.ANNOTATION_SCALE_REASON])


def test_it_reads_pods_as_nodes_and_patches_replicas_up(scaler: tuple[KubeApi, RayguardNodeProvider]) -> None:
    api, p = scaler
    assert sorted(p.non_terminated_nodes({})) == ['demo-gpu-a', 'demo-head']  # not the other cluster's
    assert p.internal_ip('demo-gpu-a') == '10.0.0.3' and p.cur_num_workers() == {'gpu': 1}
    before = groups(api)
    assert update(p, launch={'cpu': 2})
    after = groups(api)
    assert after['cpu'] == {**before['cpu'], 'replicas': 2} and after['gpu'] == before['gpu']
    assert reasons(api) == {'cpu': contract.REASON_PENDING}
    assert update(p)  # nothing new to ask: no patch
    assert api.emulator.count_writes(resource=PLURAL, method='PATCH') == 1
    assert api.emulator.refused() == [] and api.emulator.authorizer.served[SA] >= 6


def test_it_names_idle_workers_and_waits_for_the_operator(scaler: tuple[KubeApi, RayguardNodeProvider]) -> None:
    api, p = scaler
    make_pod(api, 'demo', 'demo-gpu-b', 'gpu')
    patch_cluster(api, 'demo', {'spec': {'workerGroups': [dict(groups(api)['cpu']), {**groups(api)['gpu'],
                                                                                      'replicas': 2}]}},
                  _content_type=MERGE)
    assert update(p, terminate=('demo-gpu-b',))
    assert groups(api)['gpu']['replicas'] == 1 and groups(api)['gpu']['workersToDelete'] == ['demo-gpu-b']
    assert reasons(api) == {'gpu': contract.REASON_IDLE}
    assert not update(p, launch={'cpu': 1})  # the operator has not consumed the list
    # The operator deletes the pod and clears the list; then the autoscaler goes on.
    api.core.delete_namespaced_pod('demo-gpu-b', NS)
    assert not update(p)  # the list is still there
    patch_cluster(api, 'demo', {'spec': {'workerGroups': [groups(api)['cpu'], {
        k: v for k, v in groups(api)['gpu'].items() if k != 'workersToDelete'}]}}, _content_type=MERGE)
    assert update(p, launch={'cpu': 1}) and groups(api)['cpu']['replicas'] == 1


def test_a_write_between_its_read_and_its_patch_is_a_409_and_retried(
        scaler: tuple[KubeApi, RayguardNodeProvider]) -> None:
    api, p = scaler
    p.non_terminated_nodes({})
    assert p.safe_to_scale()
    # Someone else writes the RayCluster in between: a user edits a group's other fields.
    edited = groups(api)
    edited['gpu']['rayStartParams'] = {'num-cpus': '2'}
    patch_cluster(api, 'demo', {'spec': {'workerGroups': list(edited.values())}}, _content_type=MERGE)
    p.create_node({}, {TAG_RAY_USER_NODE_TYPE: 'cpu'}, 1)
    p.post_process()
    assert isinstance(p.target, KubeTarget) and p.target.conflicts == 1
    final = groups(api)
    assert final['cpu']['replicas'] == 1 and final['gpu']['rayStartParams'] == {'num-cpus': '2'}  # both kept
    assert api.emulator.count_writes(resource=PLURAL, method='PATCH') == 3  # the edit, the 409, the retry


def test_the_role_reaches_one_raycluster_only(scaler: tuple[KubeApi, RayguardNodeProvider], tmp_path: Path) -> None:
    api, p = scaler
    config = provider_config(api, api.token_for(NS, contract.autoscaler_name('demo')), tmp_path)
    other = KubeTarget(api_client(config), NS, 'other')
    with pytest.raises(TargetUnavailable, match='get RayCluster default/other: 403 Forbidden: rayclusters.rayguard.dev'
                                                ' "other" is forbidden'):
        other.nodes()
    assert [(d.code, d.attrs.verb, d.attrs.name) for d in api.emulator.refused()] == [(403, 'get', 'other')]
    # ...and it cannot write it either, though it can list the pods of the namespace (the Role's `list`).
    assert update(p)


def test_losing_the_api_server_scales_nothing(scaler: tuple[KubeApi, RayguardNodeProvider], tmp_path: Path) -> None:
    api, _ = scaler
    config = provider_config(api, 'not-a-token', tmp_path, kube_host='http://127.0.0.1:9')  # nothing listens
    p = RayguardNodeProvider(config, 'demo')
    with pytest.raises(TargetUnavailable, match='get RayCluster default/demo'):
        p.non_terminated_nodes({})
    p2 = RayguardNodeProvider(provider_config(api, 'not-a-token', tmp_path), 'demo')
    with pytest.raises(TargetUnavailable, match='401 Unauthorized'):
        p2.non_terminated_nodes({})
    assert api.emulator.count_writes(resource=PLURAL, method='PATCH') == 0

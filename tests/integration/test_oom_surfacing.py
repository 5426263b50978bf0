"""OOM surfacing from pod status: containers that Kubernetes OOMKilled become one `OOMKilled`
Event on the RayCluster and one on the Pod, and `status.oom` counts each kill once, across
resyncs and an operator restart, and before a Failed pod is replaced.

The operator runs under kopf against the API emulator; the test plays the kubelet.
"""

from __future__ import annotations

import json
import re

import pytest

from rayguard_operator.oom.events import WRITES_PER_MINUTE_PER_CLUSTER

from .oom_harness import OomOperator, cluster_body, oom_operator  # noqa: F401

pytestmark = pytest.mark.timeout(150)

CLUSTER = 'oomc'
FINISHED_1 = '2025-03-01T10:00:00Z'
FINISHED_2 = '2025-03-01T10:05:00Z'


def oom_killed(finished: str) -> dict:
    return {'terminated': {'reason': 'OOMKilled', 'exitCode': 137, 'startedAt': '2025-03-01T09:00:00Z',
                           'finishedAt': finished}}


def start_cluster(op: OomOperator) -> tuple[str, str]:
    """The cluster with its head and one worker; returns (head, worker)."""
    op.create(cluster_body(CLUSTER))
    op.wait(lambda: len(op.pods(CLUSTER)) == 2, 'the head and a worker')
    [head] = op.pod_names(CLUSTER, 'head')
    [worker] = op.pod_names(CLUSTER, 'cpu')
    op.set_ready(head)
    return head, worker


def event_pair(op: OomOperator, reason: str, pod: str) -> tuple[dict, dict]:
    """The one Event about the cluster and the one about the pod, for `reason`."""
    found = op.oom_events(reason)
    on_cluster = [e for e in found if e['involvedObject']['kind'] == 'RayCluster']
    on_pod = [e for e in found if e['involvedObject']['kind'] == 'Pod']
    assert len(on_cluster) == 1 and len(on_pod) == 1 and len(found) == 2, json.dumps(found, indent=1)
    assert on_cluster[0]['involvedObject']['name'] == CLUSTER
    assert on_pod[0]['involvedObject']['name'] == pod
    return on_cluster[0], on_pod[0]


def assert_counted_once(op: OomOperator, worker: str, count: int = 1) -> None:
    oom = op.oom(CLUSTER)
    assert oom['total'] == count and oom['byKind'] == {'container_oom_killed': count}, oom
    on_cluster, on_pod = event_pair(op, 'OOMKilled', worker)
    assert on_cluster['count'] == count and on_pod['count'] == count
    assert len(op.oom_events()) == 2  # no other OOM Event at all


def test_container_oom_in_last_state_counts_once_across_resyncs_and_a_restart(oom_operator: OomOperator) -> None:
    op = oom_operator
    _head, worker = start_cluster(op)
    cluster_uid = op.cluster(CLUSTER)['metadata']['uid']
    pod_uid = op.pod(worker)['metadata']['uid']

    # The kubelet restarted the container after the kernel OOMKilled it.
    op.set_container(worker, 'Running', restarts=1, last_state=oom_killed(FINISHED_1))
    op.wait(lambda: op.oom_total(CLUSTER) >= 1, 'status.oom to count the kill')
    op.wait(lambda: len(op.oom_events('OOMKilled')) >= 2, 'the OOMKilled Events')
    assert_counted_once(op, worker)
    on_cluster, on_pod = event_pair(op, 'OOMKilled', worker)
    for event, uid in ((on_cluster, cluster_uid), (on_pod, pod_uid)):
        assert event['type'] == 'Warning' and event['involvedObject']['uid'] == uid
        assert event['source']['component'] == 'rayguard-operator'
        assert re.fullmatch(rf'{re.escape(event["involvedObject"]["name"])}\.oom-[0-9a-f]{{12}}',
                            event['metadata']['name']), event['metadata']['name']
        message = event['message']
        assert 'OOMKilled container ray-node' in message and f'pod {worker} (group cpu)' in message
        assert '2.00 GiB limit' in message and 'exit code 137' in message, message
    oom = op.oom(CLUSTER)
    assert oom['lastTime'] == FINISHED_1 and oom['lastMessage'] == on_cluster['message']
    assert 'lastReportId' not in oom  # no report came from a stream
    counted = json.loads(op.pod(worker)['metadata']['annotations']['rayguard.dev/oom-counted'])
    assert counted == [f'ray-node@{FINISHED_1}']

    # Resyncs, and the kubelet writing the same lastState again (readiness flips twice).
    op.wait_reconciles(CLUSTER, passes=4)
    op.set_container(worker, 'Running', restarts=1, ready=False, last_state=oom_killed(FINISHED_1))
    op.wait_reconciles(CLUSTER, passes=2)
    op.set_container(worker, 'Running', restarts=1, last_state=oom_killed(FINISHED_1))
    op.wait_reconciles(CLUSTER, passes=3)
    assert_counted_once(op, worker)

    # An operator restart: the annotation on the pod, not memory, says what was counted.
    op.stop()
    since = op.api.emulator.mark()
    op.start()
    op.wait_reconciles(CLUSTER, passes=4, timeout=30)
    assert_counted_once(op, worker)
    assert op.api.emulator.count_writes(since=since, resource='events') == 0

    # A second OOM kill of the same container: the same two Events count it, status counts 2.
    op.set_container(worker, 'Running', restarts=2, last_state=oom_killed(FINISHED_2))
    op.wait(lambda: op.oom_total(CLUSTER) >= 2, 'the second kill to be counted')
    op.wait(lambda: all(e['count'] >= 2 for e in op.oom_events('OOMKilled')), 'the Events to count 2')
    op.wait_reconciles(CLUSTER, passes=3)
    assert_counted_once(op, worker, count=2)
    assert op.oom(CLUSTER)['lastTime'] == FINISHED_2


def test_failed_pod_is_counted_before_it_is_replaced(oom_operator: OomOperator) -> None:
    op = oom_operator
    _head, worker = start_cluster(op)
    op.wait_reconciles(CLUSTER, passes=2)

    # The container itself was OOMKilled and will not restart: the pod is Failed.
    op.set_container(worker, 'Failed', restarts=0, ready=False,
                     state=oom_killed(FINISHED_1), last_state={})
    op.wait(lambda: worker not in op.pod_names(CLUSTER, 'cpu') and len(op.pod_names(CLUSTER, 'cpu')) == 1,
            'the Failed pod to be replaced')
    op.wait(lambda: op.oom_total(CLUSTER) >= 1, 'status.oom to count the kill')
    op.wait(lambda: len(op.oom_events('OOMKilled')) >= 2, 'the OOMKilled Events')
    op.wait_reconciles(CLUSTER, passes=4)
    assert_counted_once(op, worker)

    # Counted (status, then the pod's annotation) before the pod was deleted.
    writes = op.api.emulator.writes_between()
    pod_path = f'/api/v1/namespaces/default/pods/{worker}'
    annotated = [w.time for w in writes if w.method == 'PATCH' and w.path == pod_path]
    deleted = [w.time for w in writes if w.method == 'DELETE' and w.path == pod_path]
    assert annotated and deleted and max(annotated) < min(deleted), (annotated, deleted)
    _on_cluster, on_pod = event_pair(op, 'OOMKilled', worker)
    assert f'pod {worker} (group cpu)' in on_pod['message']

    # The replacement is a fresh pod with nothing counted; a restart changes nothing.
    [replacement] = op.pod_names(CLUSTER, 'cpu')
    assert 'rayguard.dev/oom-counted' not in (op.pod(replacement)['metadata'].get('annotations') or {})
    op.stop()
    op.start()
    op.wait_reconciles(CLUSTER, passes=4, timeout=30)
    assert_counted_once(op, worker)


@pytest.mark.parametrize('then', ['wait', 'stop'])
def test_events_held_back_by_the_rate_limit_go_out_without_a_head_redis(oom_operator: OomOperator,
                                                                        then: str) -> None:
    """A container that keeps being OOMKilled spends the cluster's Event budget; the rest
    waits, merged, and goes out when the budget refills, or when the operator stops, though
    no report stream is read (this cluster has no head Redis: its daemon is backing off)."""
    op = oom_operator
    _head, worker = start_cluster(op)
    kills = WRITES_PER_MINUTE_PER_CLUSTER // 2 + 5  # two writes each: more than the budget
    for n in range(1, kills + 1):
        op.set_container(worker, 'Running', restarts=n, last_state=oom_killed(f'2025-03-01T10:{n:02d}:00Z'))
        op.wait(lambda: op.oom_total(CLUSTER) >= n, f'kill {n} to be counted')
    assert op.oom(CLUSTER)['byKind'] == {'container_oom_killed': kills}
    written = sum(e['count'] for e in op.oom_events('OOMKilled'))
    assert written < 2 * kills, 'the budget was not spent: nothing was held back'
    if then == 'stop':
        op.stop()
        assert sum(e['count'] for e in op.oom_events('OOMKilled')) == 2 * kills
        op.start()
    op.wait(lambda: sum(e['count'] for e in op.oom_events('OOMKilled')) == 2 * kills,
            'the held-back increments to be written', timeout=30)
    op.wait_reconciles(CLUSTER, passes=3)
    assert_counted_once(op, worker, count=kills)

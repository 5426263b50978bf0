"""OOM surfacing from the runtimes' reports: each cluster's `rayguard:reports` stream on a real
head Redis, followed by the operator's kopf daemon, becomes Events and `status.oom`.

Reports are written with `ReportSink`, as `rayguard-node` writes them. The operator runs under
kopf against the API emulator; see `oom_harness.py` for how a cluster gets its head Redis.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter

import pytest

from rayguard_node.contract.reports import KERNEL_OOM_KILL, KINDS, GUARD_KILL, QUOTA_EXCEEDED, RAY_MONITOR_KILL
from rayguard_operator.oom.events import WRITES_PER_MINUTE_PER_CLUSTER

from rayguard_operator.oom.workers import THREAD_NAME_PREFIX

from .oom_harness import OomOperator, OomWriteGate, cluster_body, oom_operator, report  # noqa: F401

pytestmark = pytest.mark.timeout(150)

REASON = {GUARD_KILL: 'MemoryMonitorKill', KERNEL_OOM_KILL: 'KernelOOMKill',
          RAY_MONITOR_KILL: 'RayMemoryMonitorKill', QUOTA_EXCEEDED: 'MemoryQuotaExceeded'}
WHO = {GUARD_KILL: "rayguard's memory guard killed", KERNEL_OOM_KILL: 'The kernel OOM killer killed',
       RAY_MONITOR_KILL: "Ray's memory monitor killed", QUOTA_EXCEEDED: 'rayguard killed'}


def start_cluster(op: OomOperator, name: str, workers: int = 1) -> list[str]:
    """The cluster and its pods; returns the worker pods' names."""
    op.create(cluster_body(name, workers))
    op.wait(lambda: len(op.pods(name)) == workers + 1, f'the pods of {name}')
    return sorted(op.pod_names(name, 'cpu'))


def events_about(op: OomOperator, name: str, reason: str | None = None) -> list[dict]:
    return [e for e in op.oom_events(reason) if e['involvedObject']['name'] == name]


def test_each_report_kind_becomes_its_event_and_is_counted(oom_operator: OomOperator) -> None:
    op = oom_operator
    [worker] = start_cluster(op, 'kinds')
    [head_pod] = op.pod_names('kinds', 'head')
    head = op.head_redis('kinds')
    reports = [report(kind, 'kinds', worker, victim=f'ray::task_{kind}', pid=100 + i)
               for i, kind in enumerate(KINDS)]
    reports.append(report(KERNEL_OOM_KILL, 'kinds', head_pod, group='head', role='head',
                          victim='python3 /app/driver.py', pid=7))
    ids = head.write(*reports)

    op.wait(lambda: op.oom_total('kinds') >= len(reports), 'status.oom to count the reports')
    op.wait(lambda: len(op.oom_events()) >= 2 * len(reports), 'an Event on the cluster and the pod per kill')
    oom = op.oom('kinds')
    assert oom['total'] == len(reports)
    assert oom['byKind'] == {GUARD_KILL: 1, KERNEL_OOM_KILL: 2, RAY_MONITOR_KILL: 1, QUOTA_EXCEEDED: 1}
    assert oom['lastReportId'] == ids[-1] == head.last_id()
    assert oom['lastTime'] == reports[-1].time and 'python3 /app/driver.py' in oom['lastMessage']

    cluster_uid = op.cluster('kinds')['metadata']['uid']
    pods = {p['metadata']['name']: p['metadata']['uid'] for p in op.pods('kinds')}
    for item in reports:
        reason, pod, victim = REASON[item.kind], item.identity.pod, item.victim.name
        found = [e for e in op.oom_events(reason) if victim in e['message']]
        on_cluster = [e for e in found if e['involvedObject']['kind'] == 'RayCluster']
        on_pod = [e for e in found if e['involvedObject']['kind'] == 'Pod']
        assert len(on_cluster) == 1 and len(on_pod) == 1 and len(found) == 2, json.dumps(found, indent=1)
        assert on_cluster[0]['involvedObject'] == {
            'apiVersion': 'rayguard.dev/v1', 'kind': 'RayCluster', 'name': 'kinds', 'namespace': 'default',
            'uid': cluster_uid}
        assert on_pod[0]['involvedObject'] == {
            'apiVersion': 'v1', 'kind': 'Pod', 'name': pod, 'namespace': 'default', 'uid': pods[pod]}
        for event in found:
            assert event['type'] == 'Warning' and event['count'] == 1
            message = event['message']
            assert message.startswith(f'{WHO[item.kind]} {victim} (pid {item.victim.pid}, 1.00 GiB used)'
                                      f' in pod {pod} (group {item.identity.group}).'), message
            assert 'Node memory 1.92 GiB of 2.00 GiB (95.8%), threshold 95.0%.' in message, message
    assert len(op.oom_events()) == 2 * len(reports)

    # Nothing more comes of it: the daemon reads on, resyncs pass, the counts stand.
    op.wait_reconciles('kinds', passes=4)
    time.sleep(2.5)  # longer than one blocking read
    assert op.oom('kinds') == oom
    assert len(op.oom_events()) == 2 * len(reports)


def test_operator_restart_mid_stream_neither_loses_nor_repeats(oom_operator: OomOperator) -> None:
    op = oom_operator
    workers = start_cluster(op, 'resume', workers=2)
    head = op.head_redis('resume')
    written: list = []

    # One report at a time until the cluster's Event budget is spent (two writes each), so
    # that from here on increments wait in the operator's memory for the budget to refill.
    for n in range(1, WRITES_PER_MINUTE_PER_CLUSTER // 2 + 2):
        item = report(GUARD_KILL, 'resume', workers[0])
        head.write(item)
        written.append(item)
        op.wait(lambda: op.oom_total('resume') >= n, f'report {n} to be counted')
    op.wait(lambda: op.api.emulator.count_writes(resource='events', method='PATCH')
            >= WRITES_PER_MINUTE_PER_CLUSTER - 2, 'the Event budget to be spent')

    # A runtime keeps writing, one report every 10 ms, while the operator stops and starts.
    stop_writing = threading.Event()
    failures: list[BaseException] = []

    def runtime() -> None:
        i = 0
        try:
            while not stop_writing.is_set():
                kind = KINDS[i % len(KINDS)]  # four Events on the cluster, two on each pod
                item = report(kind, 'resume', workers[i % 2])
                head.write(item)
                written.append(item)
                i += 1
                time.sleep(0.01)
        except BaseException as error:  # noqa: BLE001 (reported by the test)
            failures.append(error)

    writer = threading.Thread(target=runtime, name='runtime', daemon=True)
    writer.start()
    try:
        time.sleep(1.0)
        op.stop()  # mid-stream: the daemon was reading and counting
        counted_at_stop = op.oom_total('resume')
        events_at_stop = [sum(e['count'] for e in op.oom_events() if e['involvedObject']['kind'] == kind)
                          for kind in ('RayCluster', 'Pod')]
        time.sleep(1.5)
        while_down = len(written)
        op.start()
        time.sleep(1.5)
    finally:
        stop_writing.set()
        writer.join(timeout=10)
    assert not failures, failures
    assert while_down > counted_at_stop, 'no report was written while the operator was down'
    # A graceful stop writes the Events it had held back: they count what status counts.
    assert events_at_stop == [counted_at_stop, counted_at_stop], (events_at_stop, counted_at_stop)

    last = written[-1]
    last_id = head.last_id()
    op.wait(lambda: op.oom('resume').get('lastReportId') == last_id, 'the daemon to catch up', timeout=30)
    op.wait_reconciles('resume', passes=3)
    time.sleep(2.5)  # longer than one blocking read: anything repeated would be counted by now
    oom = op.oom('resume')
    assert oom['total'] == len(written) == head.client.xlen('rayguard:reports'), (oom, len(written))
    assert oom['byKind'] == dict(Counter(r.kind for r in written))
    assert oom['lastReportId'] == last_id and oom['lastTime'] == last.time

    # The Events (stable names) went on counting across the restart, nothing lost or doubled.
    keys = Counter((r.identity.pod, REASON[r.kind], r.victim.name) for r in written)
    found = op.oom_events()
    on_cluster = [e for e in found if e['involvedObject']['kind'] == 'RayCluster']
    on_pod = [e for e in found if e['involvedObject']['kind'] == 'Pod']
    assert len(on_cluster) == len(on_pod) == len(keys) == 4, json.dumps(found, indent=1)
    for events in (on_cluster, on_pod):  # the budget refills at one write per two seconds
        op.wait(lambda: sum(e['count'] for e in events_now(op, events)) == len(written),
                'the Events to count every report', timeout=60)
    for events in (on_cluster, on_pod):
        by_key = {e['metadata']['name']: e['count'] for e in events_now(op, events)}
        assert sorted(by_key.values()) == sorted(keys.values()), (by_key, keys)


def events_now(op: OomOperator, events: list[dict]) -> list[dict]:
    names = {e['metadata']['name'] for e in events}
    return [e for e in op.oom_events() if e['metadata']['name'] in names]


@pytest.mark.timeout(240)
def test_a_burst_of_1000_reports_is_counted_exactly_in_a_few_events(oom_operator: OomOperator) -> None:
    op = oom_operator
    [worker] = start_cluster(op, 'burst')
    head = op.head_redis('burst')
    op.wait(lambda: head.followers() >= 1, 'the daemon to follow the stream', timeout=30)

    since, started = op.api.emulator.mark(), time.monotonic()
    burst = [report(GUARD_KILL, 'burst', worker, pid=5000 + i) for i in range(1000)]
    ids = head.write(*burst)
    op.wait(lambda: op.oom_total('burst') >= 1000, 'status.oom to count the burst', timeout=60)
    op.wait(lambda: sum(e['count'] for e in op.oom_events()) >= 2000, 'the Events to count the burst',
            timeout=90)
    elapsed = time.monotonic() - started
    time.sleep(2.5)

    oom = op.oom('burst')
    assert oom['total'] == 1000 and oom['byKind'] == {GUARD_KILL: 1000}
    assert oom['lastReportId'] == ids[-1]
    found = op.oom_events()
    assert len(found) <= 4, [e['metadata']['name'] for e in found]
    on_cluster = [e for e in found if e['involvedObject']['kind'] == 'RayCluster']
    on_pod = [e for e in found if e['involvedObject']['kind'] == 'Pod']
    assert len(on_cluster) == 1 and len(on_pod) == 1
    assert on_cluster[0]['count'] == on_pod[0]['count'] == 1000
    assert on_cluster[0]['reason'] == on_pod[0]['reason'] == 'MemoryMonitorKill'
    assert on_cluster[0].get('series', {'count': 1000})['count'] == 1000  # none if read in one batch
    # Event writes stayed within the per-cluster budget: a full bucket plus its refill.
    budget = WRITES_PER_MINUTE_PER_CLUSTER + WRITES_PER_MINUTE_PER_CLUSTER * (elapsed + 3) / 60 + 2
    event_writes = op.api.emulator.count_writes(since=since, resource='events')
    assert event_writes <= budget, (event_writes, budget)


@pytest.mark.parametrize('how', ['refused', 'hangs', 'stopped'])
def test_a_dead_head_redis_does_not_delay_another_cluster(oom_operator: OomOperator, how: str) -> None:
    op = oom_operator
    [worker] = start_cluster(op, 'healthy')
    head = op.head_redis('healthy')
    [dead_worker] = start_cluster(op, 'dead')
    op.wait(lambda: head.followers() >= 1, 'the daemon to follow the healthy cluster', timeout=30)
    if how == 'stopped':  # it was up and followed, then it went away
        gone = op.head_redis('dead')
        op.wait(lambda: gone.followers() >= 1, 'the daemon to follow the dead cluster', timeout=30)
        gone.write(report(GUARD_KILL, 'dead', dead_worker))
        op.wait(lambda: op.oom_total('dead') == 1, 'the dead cluster counted before it died')
        gone.server.stop()
    else:
        hole = op.dead_head('dead', how)
        if hole is not None:
            op.wait(lambda: hole.accepted >= 1, 'the daemon to hang on the dead head', timeout=30)

    for i in range(3):  # spread over several of the dead cluster's connect timeouts and retries
        item = report((GUARD_KILL, KERNEL_OOM_KILL, RAY_MONITOR_KILL)[i], 'healthy', worker)
        started = time.monotonic()
        head.write(item)
        op.wait(lambda: len(events_about(op, 'healthy', REASON[item.kind])) == 1
                and len(events_about(op, worker, REASON[item.kind])) == 1, 'the healthy cluster\'s Events',
                timeout=10)
        assert time.monotonic() - started < 3.0, f'report {i} took {time.monotonic() - started:.1f}s'
        assert op.oom_total('healthy') == i + 1
        time.sleep(2.0)
    assert op.oom_total('dead') == (1 if how == 'stopped' else 0)
    # The dead cluster is still reconciled as usual.
    op.wait_reconciles('dead', passes=2)
    assert op.status('dead').get('phase') == 'Pending'


@pytest.mark.timeout(300)  # 8 clusters, each with its head Redis
def test_reports_to_many_clusters_are_handled_at_once_by_as_many_oom_threads(
        oom_operator: OomOperator, monkeypatch: pytest.MonkeyPatch) -> None:
    """RAYGUARD_OPERATOR_OOM_THREADS=8, and a report to each of 8 clusters at once: all 8 are
    being counted at the same time (the emulator holds each one's status write until all 8 are
    there), on the OOM path's own 8 threads. 8 is more than asyncio's default
    pool, which the OOM path shared before, has on 2 CPUs (6)."""
    op, n = oom_operator, 8
    op.stop()
    monkeypatch.setenv('RAYGUARD_OPERATOR_OOM_THREADS', str(n))
    op.start()
    names = [f'wide-{i}' for i in range(n)]
    for name in names:
        op.create(cluster_body(name))
    op.wait(lambda: all(len(op.pods(name)) == 2 for name in names), 'the pods of every cluster')
    workers = {name: min(op.pod_names(name, 'cpu')) for name in names}
    heads = {name: op.head_redis(name) for name in names}
    op.wait(lambda: all(head.followers() >= 1 for head in heads.values()), 'a daemon on every head', timeout=60)
    gate = OomWriteGate(op.api, op.ns, names, parties=n)

    for name in names:
        heads[name].write(report(GUARD_KILL, name, workers[name]))
    op.wait(lambda: gate.most_at_once >= n, f'{n} reports handled at once', timeout=60)
    op.wait(lambda: all(op.oom_total(name) == 1 for name in names), 'every report counted')
    op.wait(lambda: all(len(events_about(op, name, 'MemoryMonitorKill')) == 1
                        and len(events_about(op, workers[name], 'MemoryMonitorKill')) == 1 for name in names),
            'an Event on every cluster and pod')
    # The operator runs in this process: its OOM pool made exactly as many threads as it may.
    oom_threads = [t.name for t in threading.enumerate() if t.name.startswith(f'{THREAD_NAME_PREFIX}_')]
    assert len(oom_threads) == n, oom_threads

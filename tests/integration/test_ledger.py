"""The memory ledger and the seeds' flush policy, on a real redis-server."""

from __future__ import annotations

import io
import logging

import pytest

from rayguard_node.cgroup.processes import (GCS_SERVER, IDLE_WORKER, OTHER, RAYLET, WORKER,
                                      ProcessMemory)
from rayguard_node.reporting.ledger import (PEAKS_PREFIX, SAMPLES_INDEX_KEY, FlushPolicy, Ledger,
                                  effective_threshold, peaks_key, sample_key)
from rayguard_node.reporting.redis_server import RedisServer, redis_client
from rayguard_node.reporting.sink import ReportSink
from rayguard_node.contract.reports import STREAM_KEY

from .redis_fixtures import free_port, make_redis_server, redis_server  # noqa: F401
from .test_report_sink import make_report

MiB = 1024**2
GiB = 1024**3
POD = "demo-worker-cpu-x7k2p"
T0 = 1_700_000_000_000


def proc(pid: int, name: str, klass: str, rss: int, shared: int = 0,
         uss: int | None = None) -> ProcessMemory:
    return ProcessMemory(pid, name, klass, rss, shared, start_ticks=pid, uss_bytes=uss)


def ledger_for(server: RedisServer, **kwargs: object) -> Ledger:
    return Ledger(server.client, POD, **kwargs)  # type: ignore[arg-type]


def test_samples_are_written_with_a_ttl_and_indexed(redis_server: RedisServer) -> None:
    ledger = ledger_for(redis_server, sample_ttl_s=600)
    snapshot = [
        proc(10, "/usr/bin/raylet --x", RAYLET, 80 * MiB, 20 * MiB),
        proc(11, "ray::allocate", WORKER, 900 * MiB, 100 * MiB, uss=700 * MiB),
        proc(12, "ray::IDLE", IDLE_WORKER, 60 * MiB, 30 * MiB),
        proc(13, "bash", OTHER, 5 * MiB),
    ]
    assert ledger.record(snapshot, T0) == 3
    client = redis_server.client()
    key = sample_key(POD, T0, 11)
    assert key == f"rayguard:sample:{POD}:{T0}:11"
    assert client.hgetall(key) == {
        b"name": b"ray::allocate", b"class": b"worker", b"rss": str(900 * MiB).encode(),
        b"shared": str(100 * MiB).encode(), b"rss_minus_shr": str(800 * MiB).encode(),
        b"time": str(T0).encode(), b"uss": str(700 * MiB).encode()}
    assert b"uss" not in client.hgetall(sample_key(POD, T0, 10))
    for pid in (10, 11, 12):
        assert 0 < client.ttl(sample_key(POD, T0, pid)) <= 600
    assert not client.exists(sample_key(POD, T0, 13))  # class `other` is not kept
    assert client.zrange(SAMPLES_INDEX_KEY, 0, -1, withscores=True) == [
        (sample_key(POD, T0, pid).encode(), float(T0)) for pid in (10, 11, 12)]
    assert client.ttl(SAMPLES_INDEX_KEY) == -1
    assert ledger.samples_total == 3 and ledger.errors_total == 0


def test_index_entries_older_than_the_ttl_are_dropped(redis_server: RedisServer) -> None:
    ledger = ledger_for(redis_server, sample_ttl_s=60)
    ledger.record([proc(1, "ray::f", WORKER, MiB)], T0)
    ledger.record([proc(1, "ray::f", WORKER, MiB)], T0 + 61_000)
    members = redis_server.client().zrange(SAMPLES_INDEX_KEY, 0, -1)
    assert members == [sample_key(POD, T0 + 61_000, 1).encode()]


def test_peaks_only_rise(redis_server: RedisServer) -> None:
    ledger = ledger_for(redis_server, peak_ttl_s=1000)
    client = redis_server.client()

    def peaks() -> dict[bytes, bytes]:
        return client.hgetall(peaks_key(POD))

    ledger.record([proc(1, "ray::f", WORKER, 300 * MiB, 100 * MiB),
                   proc(2, "ray::f", WORKER, 150 * MiB, 0),  # same task: the larger counts
                   proc(3, "ray::IDLE", IDLE_WORKER, 999 * MiB),
                   proc(4, "gcs_server", GCS_SERVER, 999 * MiB)], T0)
    assert peaks() == {b"ray::f": str(200 * MiB).encode()}
    ledger.record([proc(1, "ray::f", WORKER, 120 * MiB), proc(5, "ray::g", WORKER, 7 * MiB)],
                  T0 + 1)
    assert peaks() == {b"ray::f": str(200 * MiB).encode(), b"ray::g": str(7 * MiB).encode()}
    client.expire(peaks_key(POD), 5)
    ledger.record([proc(1, "ray::f", WORKER, 500 * MiB)], T0 + 2)
    assert peaks()[b"ray::f"] == str(500 * MiB).encode()
    assert 5 < client.ttl(peaks_key(POD)) <= 1000  # refreshed on write
    assert peaks_key(POD) == PEAKS_PREFIX + POD


def test_record_never_raises_when_redis_fails(
        redis_server: RedisServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="rayguard_node.reporting.ledger")
    ledger = ledger_for(redis_server)
    redis_server.stop()
    for i in range(3):
        assert ledger.record([proc(1, "ray::f", WORKER, MiB)], T0 + i) == 0
    assert ledger.errors_total == 3
    assert len([r for r in caplog.records if "cannot write" in r.getMessage()]) == 1
    redis_server.start()
    assert ledger.record([proc(1, "ray::f", WORKER, MiB)], T0 + 9) == 1
    assert len([r for r in caplog.records if "again" in r.getMessage()]) == 1

    dead = Ledger(lambda: redis_client("127.0.0.1", free_port(), "pw"), POD)
    assert dead.record([proc(1, "ray::f", WORKER, MiB)], T0) == 0
    assert dead.errors_total == 1


def test_threshold_is_never_above_80_percent_of_maxmemory(make_redis_server) -> None:
    assert effective_threshold(2 * GiB, 8 * MiB) == int(0.8 * 8 * MiB)
    assert effective_threshold(1 * MiB, 8 * MiB) == 1 * MiB
    assert effective_threshold(2 * GiB, 0) == 2 * GiB  # no maxmemory: as configured
    server = make_redis_server(maxmemory_bytes=8 * MiB)
    client = server.client()
    for configured in (1 << 31, 100 * GiB, 8 * MiB, 7 * MiB, 1 * MiB, 0):
        threshold = FlushPolicy(flush_when_at_least_bytes=configured).threshold(client)
        assert threshold <= 0.8 * 8 * MiB
        assert threshold == min(configured, int(0.8 * 8 * MiB))
    assert FlushPolicy().flush_when_at_least_bytes == 2 * GiB


def test_nothing_is_flushed_below_the_threshold(redis_server: RedisServer) -> None:
    ledger = ledger_for(redis_server)
    ledger.record([proc(pid, "ray::f", WORKER, MiB) for pid in range(100)], T0)
    policy = FlushPolicy(flush_num_entries_each_time=10)
    assert policy.flush_once(redis_server.client()) == 0
    assert redis_server.client().zcard(SAMPLES_INDEX_KEY) == 100


def test_flush_period_is_respected(redis_server: RedisServer) -> None:
    ledger = ledger_for(redis_server)
    ledger.record([proc(pid, "ray::f", WORKER, MiB) for pid in range(100)], T0)
    client = redis_server.client()
    policy = FlushPolicy(flush_when_at_least_bytes=0, flush_period_secs=10,
                         flush_num_entries_each_time=10)
    assert policy.maybe_flush(client, now=100.0) == 10
    assert policy.maybe_flush(client, now=105.0) == 0
    assert policy.maybe_flush(client, now=110.0) == 10
    assert client.zcard(SAMPLES_INDEX_KEY) == 80


def test_maybe_flush_never_raises(redis_server: RedisServer) -> None:
    policy = FlushPolicy(flush_period_secs=0)
    dead = redis_client("127.0.0.1", free_port(), "pw")
    assert policy.maybe_flush(dead, now=1.0) == 0
    assert policy.errors_total == 1


def test_flush_keeps_redis_under_its_cap_oldest_first(make_redis_server) -> None:
    maxmemory = 8 * MiB
    server = make_redis_server(maxmemory_bytes=maxmemory)
    client = server.client()
    sink = ReportSink(server.client, stdout=io.StringIO())
    for n in range(20):
        sink.emit(make_report(n))
    assert sink.flush_pending() == 20

    ledger = Ledger(server.client, POD)
    policy = FlushPolicy(flush_period_secs=1, flush_num_entries_each_time=500)  # 2 GiB configured
    threshold = policy.threshold(client)
    assert threshold == int(0.8 * maxmemory)

    written: list[str] = []
    peak_used = 0
    for batch in range(300):
        now_ms = T0 + batch
        snapshot = [proc(1000 + i, f"ray::task_{i % 7}", WORKER, (i + 1) * MiB, 0)
                    for i in range(100)]
        assert ledger.record(snapshot, now_ms) == 100  # no write error, none raised
        written += [sample_key(POD, now_ms, 1000 + i) for i in range(100)]
        peak_used = max(peak_used, client.info("memory")["used_memory"])
        policy.maybe_flush(client, now=float(batch))
        assert client.info("memory")["used_memory"] < maxmemory

    assert ledger.errors_total == 0
    assert policy.flushed_total > 0 and policy.errors_total == 0
    assert peak_used >= threshold  # the writes really did pass the threshold
    assert client.info("stats")["evicted_keys"] == 0  # the policy, not LRU, made room

    pipe = client.pipeline(transaction=False)
    for key in written:
        pipe.exists(key)
    present = pipe.execute()
    first_kept = present.index(1)
    assert first_kept > 0, "nothing was flushed"
    assert all(present[first_kept:]), "a newer sample went before an older one"
    assert not any(present[:first_kept])
    assert client.zcard(SAMPLES_INDEX_KEY) == len(written) - first_kept

    assert client.type(STREAM_KEY) == b"stream"
    assert client.xlen(STREAM_KEY) == 20  # the reports survive flushing
    assert client.ttl(STREAM_KEY) == -1
    assert client.hlen(peaks_key(POD)) == 7


def test_flush_never_deletes_what_is_not_a_sample(redis_server: RedisServer) -> None:
    client = redis_server.client()
    sink = ReportSink(redis_server.client, stdout=io.StringIO())
    sink.emit(make_report())
    sink.flush_pending()
    client.zadd(SAMPLES_INDEX_KEY, {STREAM_KEY: 0})  # a corrupt index naming the stream
    policy = FlushPolicy(flush_when_at_least_bytes=0)
    assert policy.flush_once(client) == 1
    assert client.xlen(STREAM_KEY) == 1
    assert client.zcard(SAMPLES_INDEX_KEY) == 0


def test_volatile_lru_evicts_samples_not_reports(make_redis_server) -> None:
    """Without the flush policy, Redis at its cap evicts samples (TTL) and never the stream."""
    server = make_redis_server(maxmemory_bytes=8 * MiB)
    client = server.client()
    sink = ReportSink(server.client, stdout=io.StringIO())
    for n in range(20):
        sink.emit(make_report(n))
    sink.flush_pending()
    ledger = Ledger(server.client, POD)
    for batch in range(300):
        ledger.record([proc(1000 + i, f"ray::task_{i}", WORKER, MiB) for i in range(100)],
                      T0 + batch)  # some may fail with OOM: counted, never raised
    assert client.info("stats")["evicted_keys"] > 0
    assert client.xlen(STREAM_KEY) == 20
    assert client.info("memory")["used_memory"] <= 8 * MiB + 64 * 1024

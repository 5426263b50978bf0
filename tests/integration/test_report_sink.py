"""Reports: one stdout line each at once, and exactly once in the Redis stream, in order."""

from __future__ import annotations

import io
import json
import logging
import re
import socket
import threading
from typing import Callable

import pytest
import redis

from rayguard_node.reporting.redis_server import RedisServer, redis_client
from rayguard_node.reporting.sink import ReportSink, sent_marker_key
from rayguard_node.contract.reports import (GUARD_KILL, STREAM_KEY, Identity, NodeUsage, Report,
                                   TopEntry, Victim, new_report)

from .redis_fixtures import free_port, redis_server  # noqa: F401

MiB = 1024**2


def make_report(n: int = 0) -> Report:
    identity = Identity("demo", "default", "demo-worker-cpu-x7k2p", "cpu", "worker")
    victim = Victim(4000 + n, f"ray::allocate_{n}", 900 * MiB, 100 * MiB)
    node = NodeUsage(2900 * MiB, 3072 * MiB, 2900 / 3072, 0.95)
    return new_report(GUARD_KILL, identity, victim, node,
                      [TopEntry(4000 + n, f"ray::allocate_{n}", 800 * MiB)])


def factory_for(server: RedisServer) -> Callable[[], redis.Redis]:
    return lambda: redis_client("127.0.0.1", server.port, server.password)


def stream(server: RedisServer) -> list[tuple[bytes, dict[bytes, bytes]]]:
    return server.client().xrange(STREAM_KEY)


def test_report_appears_once_with_its_fields(redis_server: RedisServer) -> None:
    out = io.StringIO()
    sink = ReportSink(factory_for(redis_server), stdout=out)
    report = make_report()
    sink.emit(report)
    assert out.getvalue() == report.to_json() + "\n"  # printed before any Redis call
    assert sink.pending_count == 1
    assert sink.flush_pending() == 1
    assert sink.flush_pending() == 0
    entries = stream(redis_server)
    assert len(entries) == 1
    fields = entries[0][1]
    assert set(fields) == {b"report", b"kind", b"id"}
    assert fields[b"kind"] == GUARD_KILL.encode()
    assert fields[b"id"] == report.id.encode()
    assert json.loads(fields[b"report"]) == report.to_dict()
    assert Report.from_dict(json.loads(fields[b"report"])).id == report.id
    assert (sink.pending_count, sink.sent_total, sink.dropped_total) == (0, 1, 0)
    marker_ttl = redis_server.client().ttl(sent_marker_key(report.id))
    assert 0 < marker_ttl <= 86_400


def test_stdout_gets_exactly_one_json_line_per_report(redis_server: RedisServer) -> None:
    out = io.StringIO()
    sink = ReportSink(factory_for(redis_server), stdout=out)
    reports = [make_report(n) for n in range(5)]
    for report in reports:
        sink.emit(report)
    sink.flush_pending()
    sink.flush_pending()
    lines = out.getvalue().splitlines()
    assert [json.loads(line)["id"] for line in lines] == [r.id for r in reports]
    assert all("\n" not in line for line in lines)


def test_redis_down_queues_then_restart_delivers_once_in_order(
        redis_server: RedisServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="rayguard_node.reporting.sink")
    out = io.StringIO()
    sink = ReportSink(factory_for(redis_server), stdout=out)
    first = make_report(0)
    sink.emit(first)
    assert sink.flush_pending() == 1

    redis_server.stop()
    waiting = [make_report(n) for n in range(1, 6)]
    for count, report in enumerate(waiting, start=1):
        sink.emit(report)
        assert sink.flush_pending() == 0  # no exception, nothing sent
        assert sink.pending_count == count
    assert not sink.redis_ok
    down_lines = [r for r in caplog.records if "cannot send reports" in r.getMessage()]
    assert len(down_lines) == 1, "one line when Redis goes down, not one per attempt"
    assert len(out.getvalue().splitlines()) == 6  # stdout never waits for Redis

    redis_server.start()  # same port, same password (no persistence: the stream is new)
    assert sink.flush_pending() == 5
    assert sink.pending_count == 0 and sink.sent_total == 6 and sink.redis_ok
    ids = [fields[b"id"].decode() for _entry, fields in stream(redis_server)]
    assert ids == [r.id for r in waiting]
    back_lines = [r for r in caplog.records if "reachable again" in r.getMessage()]
    assert len(back_lines) == 1
    assert sink.flush_pending() == 0
    assert len(stream(redis_server)) == 5


def test_lost_reply_retry_does_not_duplicate(redis_server: RedisServer) -> None:
    sink = ReportSink(factory_for(redis_server), stdout=io.StringIO())
    report = make_report()
    sink.emit(report)
    # The script ran but its reply was lost: the report is still queued and is sent again.
    assert sink.send_once(report) is True
    assert sink.send_once(report) is False
    assert sink.flush_pending() == 1
    assert sink.pending_count == 0
    assert [f[b"id"].decode() for _e, f in stream(redis_server)] == [report.id]


def test_buffer_overflow_drops_the_oldest_and_counts(
        redis_server: RedisServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="rayguard_node.reporting.sink")
    out = io.StringIO()
    sink = ReportSink(factory_for(redis_server), stdout=out, buffer_max=3)
    redis_server.stop()
    reports = [make_report(n) for n in range(5)]
    for report in reports:
        sink.emit(report)
        sink.flush_pending()
    assert sink.pending_count == 3
    assert sink.dropped_total == 2
    assert len(out.getvalue().splitlines()) == 5  # dropped reports were still printed
    drops = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert drops and "2 dropped" in drops[-1] and reports[1].id in drops[-1]

    redis_server.start()
    assert sink.flush_pending() == 3
    ids = [f[b"id"].decode() for _e, f in stream(redis_server)]
    assert ids == [r.id for r in reports[2:]]


def test_never_raises_when_redis_is_unreachable_or_the_factory_fails() -> None:
    dead = ReportSink(lambda: redis_client("127.0.0.1", free_port(), "pw"), stdout=io.StringIO())
    dead.emit(make_report())
    assert dead.flush_pending() == 0 and dead.pending_count == 1

    def broken_factory() -> redis.Redis:
        raise redis.exceptions.ConnectionError("no address yet")

    broken = ReportSink(broken_factory, stdout=io.StringIO())
    broken.emit(make_report())
    assert broken.flush_pending() == 0 and broken.pending_count == 1


def test_wrong_password_keeps_reports_queued(redis_server: RedisServer) -> None:
    sink = ReportSink(lambda: redis_client("127.0.0.1", redis_server.port, "wrong"),
                      stdout=io.StringIO())
    sink.emit(make_report())
    assert sink.flush_pending() == 0 and sink.pending_count == 1
    assert stream(redis_server) == []


def test_stream_is_capped_approximately(redis_server: RedisServer) -> None:
    sink = ReportSink(factory_for(redis_server), stdout=io.StringIO(), stream_maxlen=100,
                      buffer_max=1000)
    for n in range(500):
        sink.emit(make_report(n))
    assert sink.flush_pending() == 500
    length = redis_server.client().xlen(STREAM_KEY)
    assert 100 <= length < 500  # MAXLEN ~: trimmed in whole nodes


class ReplyDroppingProxy:
    """A TCP proxy to Redis that swallows the first stream-id reply and cuts the connection.

    That is a lost reply: Redis ran the XADD, the client never heard back.
    """

    STREAM_ID_REPLY = re.compile(rb"^\$\d+\r\n\d+-\d+\r\n")

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.dropped = threading.Event()
        self.threads: list[threading.Thread] = []
        self._spawn(self._accept)

    def _spawn(self, target: Callable[..., None], *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        thread.start()
        self.threads.append(thread)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            self._spawn(self._pipe, client, upstream, False)
            self._spawn(self._pipe, upstream, client, True)

    def _pipe(self, source: socket.socket, sink: socket.socket, replies: bool) -> None:
        try:
            while data := source.recv(65536):
                if replies and not self.dropped.is_set() and self.STREAM_ID_REPLY.match(data):
                    self.dropped.set()
                    break
                sink.sendall(data)
        except OSError:
            pass
        for sock in (source, sink):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def close(self) -> None:
        self.listener.close()


def test_real_lost_reply_is_retried_without_a_duplicate(redis_server: RedisServer) -> None:
    proxy = ReplyDroppingProxy(redis_server.port)
    try:
        sink = ReportSink(lambda: redis_client("127.0.0.1", proxy.port, redis_server.password),
                          stdout=io.StringIO())
        report = make_report()
        sink.emit(report)
        for _attempt in range(3):  # redis-py retries once itself; the sink retries next call
            sink.flush_pending()
            if not sink.pending_count:
                break
        assert proxy.dropped.is_set(), "the proxy never saw the XADD reply"
        assert sink.pending_count == 0 and sink.sent_total == 1
        assert [f[b"id"].decode() for _e, f in stream(redis_server)] == [report.id]
    finally:
        proxy.close()

"""oom.stream.follow: where the head Redis is (its Service and password) is read once and kept
while the head does not answer, read again when Redis refuses the password, and at most every
`target_ttl_s` while it stays unreachable. Against real sockets and a real redis-server."""

from __future__ import annotations

import asyncio
import io
from typing import Any, Callable

from rayguard_node.contract.reports import GUARD_KILL, Identity, NodeUsage, Report, TopEntry, Victim, new_report
from rayguard_node.reporting.sink import ReportSink
from rayguard_operator.oom.stream import RedisTarget, follow

from .redis_fixtures import make_redis_server  # noqa: F401

GiB = 1024**3


class Closer:
    """A TCP port that accepts each connection and closes it at once: a head whose Redis is
    not answering. Counts the connections."""

    def __init__(self) -> None:
        self.accepted = 0
        self.server: asyncio.AbstractServer | None = None

    async def start(self) -> int:
        def accept(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.accepted += 1
            writer.close()

        self.server = await asyncio.start_server(accept, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])


class Targets:
    """`target()` for follow: hands out the given targets in turn (the last one after that),
    and counts how often it was asked."""

    def __init__(self, *targets: RedisTarget) -> None:
        self.targets = list(targets)
        self.reads = 0

    async def __call__(self) -> RedisTarget:
        self.reads += 1
        return self.targets[min(self.reads, len(self.targets)) - 1]


def run_follow(targets: Targets, seconds: float, done: Callable[[list[Any]], bool]) -> list[Any]:
    handled: list[Any] = []

    async def handle(entries: list[Any], _newest: str) -> bool:
        handled.extend(entries)
        return True

    async def main() -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        await follow(targets, "0-0", handle, lambda: done(handled) or loop.time() > deadline, "test",
                     first_backoff_s=0.02)

    asyncio.run(main())
    return handled


def against_a_head_that_closes(ttl_s: float, seconds: float = 1.5) -> tuple[int, int]:
    """follow() for `seconds` against a port that closes every connection at once, retrying
    from 0.02 s on: (connections made, target reads)."""
    closer = Closer()
    targets: Targets | None = None

    async def main() -> None:
        nonlocal targets
        targets = Targets(RedisTarget("127.0.0.1", await closer.start(), "secret"))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds

        async def handle(entries: list[Any], _newest: str) -> bool:
            raise AssertionError("nothing to read")

        try:
            await follow(targets, "0-0", handle, lambda: loop.time() > deadline, "test", first_backoff_s=0.02,
                         target_ttl_s=ttl_s)
        finally:
            assert closer.server is not None
            closer.server.close()

    asyncio.run(main())
    assert targets is not None
    return closer.accepted, targets.reads


def test_the_target_is_read_once_while_the_head_does_not_answer() -> None:
    accepted, reads = against_a_head_that_closes(ttl_s=60.0)
    assert accepted >= 4, accepted  # it did retry, 0.02 s, then twice as long each time
    assert reads == 1


def test_the_target_is_read_again_after_its_ttl_while_the_head_does_not_answer() -> None:
    accepted, reads = against_a_head_that_closes(ttl_s=0.2)
    assert accepted >= 4, accepted
    assert 2 <= reads < accepted, (reads, accepted)


def a_report() -> Report:
    return new_report(GUARD_KILL, Identity("demo", "default", "demo-worker-a", "cpu", "worker"),
                      Victim(42, "ray::hog", rss_bytes=GiB, shared_bytes=0),
                      NodeUsage(used_bytes=2 * GiB, limit_bytes=2 * GiB, fraction=0.97, threshold=0.95),
                      [TopEntry(42, "ray::hog", GiB)])


def test_a_refused_password_reads_the_target_again(make_redis_server: Any) -> None:  # noqa: F811
    """The cluster's Secret was made again with a new password: the kept target is stale."""
    server = make_redis_server(password="the-new-password")
    sink = ReportSink(server.client, stdout=io.StringIO())
    item = a_report()
    sink.emit(item)
    assert sink.flush_pending() == 1
    targets = Targets(RedisTarget("127.0.0.1", server.port, "the-old-password"),
                      RedisTarget("127.0.0.1", server.port, "the-new-password"))
    handled = run_follow(targets, seconds=20, done=lambda handled: len(handled) >= 1)
    assert [report.id for _entry, report in handled] == [item.id]
    assert targets.reads == 2

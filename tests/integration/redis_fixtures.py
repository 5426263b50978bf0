"""Real `redis-server` processes for integration tests, always stopped afterwards.

Test modules import the fixtures they use, e.g.
`from .redis_fixtures import redis_server  # noqa: F401`.
"""

from __future__ import annotations

import secrets
import shutil
from pathlib import Path
from typing import Callable, Iterator

import pytest

from rayguard_node.reporting.redis_server import RedisServer
from rayguard_operator.local.ports import free_port

MiB = 1024**2
DEFAULT_MAXMEMORY = 64 * MiB


class RedisServers:
    """Makes servers, each on loopback in its own directory; `stop_all` stops each by PID."""

    def __init__(self, directory: Path) -> None:
        if shutil.which("redis-server") is None:
            pytest.skip("needs Debian's redis-server on PATH (apt-get install redis-server)")
        self.directory = directory
        self.made: list[RedisServer] = []

    def make(self, maxmemory_bytes: int = DEFAULT_MAXMEMORY, port: int | None = None,
             password: str | None = None, start: bool = True) -> RedisServer:
        server = RedisServer(port or free_port(), password or secrets.token_hex(16),
                             maxmemory_bytes, workdir=self.directory / f"redis-{len(self.made)}",
                             bind="127.0.0.1")
        self.made.append(server)
        if start:
            server.start()
        return server

    def stop_all(self) -> None:
        for server in self.made:
            server.stop(timeout_s=5)
        assert not any(server.alive() for server in self.made), "a redis-server outlived its test"


@pytest.fixture
def make_redis_server(tmp_path: Path) -> Iterator[Callable[..., RedisServer]]:
    """Factory: `make_redis_server(maxmemory_bytes=..., port=..., password=..., start=True)`."""
    servers = RedisServers(tmp_path / "redis-servers")
    try:
        yield servers.make
    finally:
        servers.stop_all()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """One started redis-server (64 MiB, a random password) on a free loopback port."""
    servers = RedisServers(tmp_path / "redis-server")
    try:
        yield servers.make()
    finally:
        servers.stop_all()

"""The head's own redis-server: password, cap, eviction policy, no persistence."""

from __future__ import annotations

import stat
import time
from pathlib import Path

import pytest
import redis

from rayguard_node.reporting.redis_server import RedisServer, RedisStartError, redis_client

from .redis_fixtures import MiB, free_port, make_redis_server, redis_server  # noqa: F401


def test_password_is_required(redis_server: RedisServer) -> None:
    anonymous = redis_client("127.0.0.1", redis_server.port)
    with pytest.raises(redis.exceptions.AuthenticationError):
        anonymous.ping()
    wrong = redis_client("127.0.0.1", redis_server.port, "not-the-password")
    with pytest.raises(redis.exceptions.AuthenticationError):
        wrong.ping()
    assert redis_client("127.0.0.1", redis_server.port, redis_server.password).ping()


def test_url_form_and_explicit_password(redis_server: RedisServer) -> None:
    url = f"redis://127.0.0.1:{redis_server.port}/0"
    assert redis_client(url, password=redis_server.password).ping()
    wrong_in_url = f"redis://:wrong@127.0.0.1:{redis_server.port}/0"
    assert redis_client(wrong_in_url, password=redis_server.password).ping()


def test_client_has_short_timeouts_and_bytes(redis_server: RedisServer) -> None:
    client = redis_server.client()
    kwargs = client.connection_pool.connection_kwargs
    assert kwargs["socket_connect_timeout"] == 1.0
    assert kwargs["socket_timeout"] == 2.0
    client.set("k", "v")
    assert client.get("k") == b"v"


def _config(client: redis.Redis, name: str) -> str:
    value = client.config_get(name)
    found = value.get(name, value.get(name.encode()))  # redis-py may decode CONFIG replies
    return found.decode() if isinstance(found, bytes) else str(found)


def test_cap_policy_and_no_persistence_configured(redis_server: RedisServer) -> None:
    client = redis_server.client()
    assert _config(client, "maxmemory") == str(64 * MiB)
    assert _config(client, "maxmemory-policy") == "volatile-lru"
    assert _config(client, "save") == ""
    assert _config(client, "appendonly") == "no"
    assert _config(client, "protected-mode") == "no"
    assert _config(client, "dir") == str(redis_server.workdir)


def test_nothing_is_written_to_disk(redis_server: RedisServer) -> None:
    client = redis_server.client()
    for i in range(1000):
        client.set(f"key:{i}", "x" * 100)
    client.shutdown()  # a server with save points would write dump.rdb now
    deadline = time.monotonic() + 10
    while redis_server.alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not redis_server.alive()
    written = sorted(p.name for p in redis_server.workdir.iterdir())
    assert "dump.rdb" not in written and "appendonlydir" not in written
    assert not any(name.endswith((".rdb", ".aof")) for name in written), written


def test_password_is_not_on_the_command_line(redis_server: RedisServer) -> None:
    assert redis_server.pid is not None
    cmdline = Path(f"/proc/{redis_server.pid}/cmdline").read_bytes()
    assert redis_server.password.encode() not in cmdline
    assert b"redis-server" in cmdline
    mode = stat.S_IMODE(redis_server.config_path.stat().st_mode)
    assert mode == 0o600


def test_password_with_awkward_characters(make_redis_server) -> None:
    password = 'a "quoted" pass\\word with spaces, # and é'
    server = make_redis_server(password=password)
    assert redis_client("127.0.0.1", server.port, password).ping()
    with pytest.raises(redis.exceptions.AuthenticationError):
        redis_client("127.0.0.1", server.port, password[:-1]).ping()


def test_stop_terminates_and_reports_alive(redis_server: RedisServer) -> None:
    assert redis_server.alive()
    assert redis_server.stop(timeout_s=5) is not None
    assert not redis_server.alive()
    assert not Path(f"/proc/{redis_server.pid}").exists() or \
        Path(f"/proc/{redis_server.pid}/stat").read_text().split()[2] == "Z"


def test_restart_on_the_same_port(redis_server: RedisServer) -> None:
    first_pid = redis_server.pid
    redis_server.stop()
    redis_server.start()
    assert redis_server.pid != first_pid
    assert redis_server.client().ping()


def test_start_failure_names_the_cause_from_the_log(redis_server: RedisServer, make_redis_server) -> None:
    clash = make_redis_server(port=redis_server.port, start=False)
    with pytest.raises(RedisStartError) as raised:
        clash.start(timeout_s=10)
    message = str(raised.value)
    assert f"port {redis_server.port}" in message
    assert "in use" in message.lower() or "address" in message.lower(), message
    assert not clash.alive()
    assert redis_server.client().ping()  # the first server is untouched


def test_missing_binary_is_a_clear_error(tmp_path: Path) -> None:
    server = RedisServer(free_port(), "pw", 8 * MiB, tmp_path, executable="no-such-redis-server")
    with pytest.raises(RedisStartError, match="redis-server"):
        server.start()
    assert not server.alive()

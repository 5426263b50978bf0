"""The head's own `redis-server`: started as a child, with a password, a cap, no persistence.

docs/architecture.md ("The data path", step 4): unless an external Redis is configured, the head starts a real
`redis-server` with a password, `maxmemory = redis_max` and no persistence. The password
never appears on a command line: it goes into a config file readable only by us (0600),
and `redis-server` is started with nothing but that file's path.

`maxmemory-policy volatile-lru` makes Redis evict only keys with a TTL. Ledger samples
carry one; the reports stream does not, so Redis never evicts a report.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import IO

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from rayguard_node.errors import RayguardError

CONNECT_TIMEOUT_S = 1.0
OPERATION_TIMEOUT_S = 2.0
CONFIG_FILE = "redis.conf"
LOG_FILE = "redis-server.log"
LOG_TAIL_LINES = 20
EVICTION_POLICY = "volatile-lru"


class RedisStartError(RayguardError):
    """redis-server did not come up: the message carries the tail of its log."""


def redis_client(url_or_host: str, port: int | None = None,
                 password: str | None = None, username: str | None = None) -> redis.Redis:
    """A client with short timeouts and bytes replies.

    `url_or_host` is either a URL (`redis://[:password@]host:port/db`; `port` is then
    ignored, and an explicit `password` wins over the URL's) or a host name, with `port`
    (default 6379).
    One retry after a connection error lets a pooled connection that a restarted server
    dropped reconnect transparently; beyond that, failures surface at once.
    """
    options = dict(socket_connect_timeout=CONNECT_TIMEOUT_S, socket_timeout=OPERATION_TIMEOUT_S,
                   decode_responses=False, retry=Retry(NoBackoff(), 1))
    if "://" in url_or_host:
        client = redis.Redis.from_url(url_or_host, **options)  # type: ignore[arg-type]
        if password is not None:  # from_url lets the URL's userinfo win over keywords
            client.connection_pool.connection_kwargs["password"] = password or None
        return client
    return redis.Redis(host=url_or_host, port=port if port is not None else 6379,
                       password=password or None, username=username or None, **options)  # type: ignore[arg-type]


def config_quote(value: str) -> str:
    """A redis.conf string argument: double-quoted, with the escapes Redis understands."""
    out = []
    for char in value:
        code = ord(char)
        if char in '"\\':
            out.append("\\" + char)
        elif 32 <= code < 127:
            out.append(char)
        else:
            out.extend(f"\\x{byte:02x}" for byte in char.encode())
    return '"' + "".join(out) + '"'


def check_maxmemory(maxmemory_bytes: int) -> None:
    """Redis reads `maxmemory 0` as "no limit": never write it (the plan refuses it first)."""
    if maxmemory_bytes <= 0:
        raise RedisStartError(f"refusing Redis maxmemory {maxmemory_bytes}: Redis would run unlimited;"
                              " give the head's Redis a real budget (redisMaxBytes, redisFraction)")


def render_config(port: int, password: str, maxmemory_bytes: int, bind: str, workdir: Path) -> str:
    """The whole redis.conf; logs go to stdout, which the caller sends to a file."""
    check_maxmemory(maxmemory_bytes)
    lines = [
        f"port {port}",
        f"bind {bind}",
        f"maxmemory {maxmemory_bytes}",
        f"maxmemory-policy {EVICTION_POLICY}",
        'save ""',
        "appendonly no",
        "daemonize no",
        f"dir {config_quote(str(workdir))}",
        "loglevel warning",
        'logfile ""',
    ]
    if password:
        lines += [f"requirepass {config_quote(password)}", "protected-mode no"]
    return "\n".join(lines) + "\n"


def write_private_file(path: Path, text: str) -> None:
    """Write `text` to `path`, readable and writable by the owner only, from the first byte."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        os.fchmod(fd, 0o600)  # the file may have existed with wider permissions
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    tail = text.strip().splitlines()[-lines:]
    return "\n".join(tail) if tail else "(log is empty)"


class RedisServer:
    """One `redis-server` child process.

    `start()` blocks until it answers PING (as itself, checked by PID); `stop()` sends
    SIGTERM, then SIGKILL. Usable as a context manager.
    """

    def __init__(self, port: int, password: str, maxmemory_bytes: int, workdir: Path | str,
                 bind: str = "0.0.0.0", executable: str = "redis-server") -> None:
        if not 0 < port < 65536:
            raise ValueError(f"invalid Redis port {port}")
        check_maxmemory(maxmemory_bytes)
        self.port = port
        self.password = password
        self.maxmemory_bytes = maxmemory_bytes
        self.bind = bind
        self.workdir = Path(workdir)
        self.executable = executable
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def config_path(self) -> Path:
        return self.workdir / CONFIG_FILE

    @property
    def log_path(self) -> Path:
        return self.workdir / LOG_FILE

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def host(self) -> str:
        """Where a local client connects: the bound address, or loopback for a wildcard."""
        first = self.bind.split()[0]
        return "127.0.0.1" if first in ("0.0.0.0", "*", "::", "-::*") else first.lstrip("-")

    def client(self) -> redis.Redis:
        return redis_client(self.host, self.port, self.password)

    def alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout_s: float = 10.0) -> None:
        if self.alive():
            raise RuntimeError(f"redis-server is already running (pid {self.pid})")
        self.workdir.mkdir(parents=True, exist_ok=True)
        write_private_file(self.config_path, render_config(
            self.port, self.password, self.maxmemory_bytes, self.bind, self.workdir))
        self._log = open(self.log_path, "ab")
        try:
            self._process = subprocess.Popen(
                [self.executable, str(self.config_path)], stdin=subprocess.DEVNULL,
                stdout=self._log, stderr=subprocess.STDOUT, cwd=self.workdir, close_fds=True)
        except OSError as error:
            self._close_log()
            raise RedisStartError(f"cannot run {self.executable}: {error}"
                                  " (install Debian's redis-server)") from None
        try:
            self._wait_ready(timeout_s)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, timeout_s: float) -> None:
        assert self._process is not None
        client = self.client()
        deadline = time.monotonic() + timeout_s
        last_error: Exception | None = None
        try:
            while time.monotonic() < deadline:
                code = self._process.poll()
                if code is not None:
                    raise RedisStartError(
                        f"redis-server on port {self.port} exited with status {code} while"
                        f" starting; its log ends with:\n{log_tail(self.log_path)}")
                try:
                    # PID check: another server already on this port must not pass for ours.
                    if client.ping() and client.info("server").get("process_id") == self.pid:
                        return
                except (redis.exceptions.RedisError, OSError) as error:
                    last_error = error
                time.sleep(0.05)
        finally:
            client.close()
        raise RedisStartError(
            f"redis-server on port {self.port} did not answer PING within {timeout_s:g}s"
            f" (last error: {last_error}); its log ends with:\n{log_tail(self.log_path)}")

    def stop(self, timeout_s: float = 5.0) -> int | None:
        """SIGTERM, wait up to `timeout_s`, then SIGKILL. Returns the exit status."""
        process = self._process
        if process is None:
            return None
        try:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout_s)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            return process.returncode
        finally:
            self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> "RedisServer":
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

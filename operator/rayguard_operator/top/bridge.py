"""A local TCP port whose connections are bridged to sockets made on demand.

`rayguard top CLUSTER` reaches the head's Redis through a Kubernetes port-forward, which the
`kubernetes` client gives as a socket-like object per forward, not as a local port. redis-py
wants a host and port: this listens on 127.0.0.1 (a free port), and for each connection it
accepts calls `connect()` for the other end and copies bytes both ways until either side
closes. A failed `connect` closes that connection and is kept in `last_error`, so that the
caller can say why Redis was unreachable.
"""

from __future__ import annotations

import selectors
import socket
import threading
from typing import Callable, Protocol

CHUNK_BYTES = 1 << 16
POLL_S = 0.2


class SocketLike(Protocol):
    def fileno(self) -> int: ...
    def recv(self, size: int) -> bytes: ...
    def sendall(self, data: bytes) -> None: ...
    def close(self) -> None: ...


def pump(a: SocketLike, b: SocketLike, stop: threading.Event) -> int:
    """Copy bytes both ways until one side closes (or fails), or `stop` is set; returns the
    bytes copied. Closes neither."""
    copied = 0
    with selectors.DefaultSelector() as selector:
        selector.register(a, selectors.EVENT_READ, b)  # type: ignore[arg-type]
        selector.register(b, selectors.EVENT_READ, a)  # type: ignore[arg-type]
        while not stop.is_set():
            for key, _events in selector.select(POLL_S):
                source, target = key.fileobj, key.data
                try:
                    data = source.recv(CHUNK_BYTES)  # type: ignore[union-attr]
                    if not data:
                        return copied
                    target.sendall(data)
                except OSError:
                    return copied
                copied += len(data)
    return copied


class TcpBridge:
    """127.0.0.1:`port` → `connect()`, per connection, on daemon threads. Use as a context
    manager, or `start` and `close`."""

    def __init__(self, connect: Callable[[], SocketLike], host: str = "127.0.0.1") -> None:
        self.connect = connect
        self._listener = socket.create_server((host, 0))
        self.host = host
        self.port = int(self._listener.getsockname()[1])
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.connections = 0
        self.last_error: BaseException | None = None

    def __enter__(self) -> "TcpBridge":
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def start(self) -> None:
        self._listener.settimeout(POLL_S)
        self._thread = threading.Thread(target=self._accept, name="rayguard-top-bridge", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _address = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return  # the listener was closed
            conn.settimeout(None)
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), name="rayguard-top-bridge-conn",
                             daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        upstream: SocketLike | None = None
        try:
            try:
                upstream = self.connect()
            except Exception as error:  # noqa: BLE001 (whatever failed, this connection is over)
                self.last_error = error
                return
            pump(conn, upstream, self._stop)
        finally:
            for end in (conn, upstream):
                if end is not None:
                    try:
                        end.close()
                    except OSError:
                        pass

    def close(self) -> None:
        """Stop accepting; each open connection ends within `POLL_S` and closes both ends."""
        self._stop.set()
        self._listener.close()
        if self._thread is not None:
            self._thread.join(2 * POLL_S + 1)
